// Package testenv gives tests real servers: a PostgreSQL database per test (cloned from a
// service's migrated template) with the service's owner and app roles, and a real Vault server.
// Nothing here is a fake: tests of isolation run against the same enforcement production has.
//
// Servers are process-wide — one per test binary, started on first use — and stopped by Main
// (or RunMain) after the tests. A test binary that uses this package should have:
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
//
// Typical use:
//
//	db := testenv.NewDatabase(t, testenv.DBSpec{Name: "identity", Migrations: migrations.FS})
//	tdb := db.AppDB(t)                 // *pgtenant.DB as identity_app
//	a, b := testenv.TwoTenants()       // pgtenant.Scope values with fresh tenant ids
//
// Set BULKHEAD_TEST_DATABASE_URL to a superuser URL to use an existing server instead of
// starting one.
package testenv
