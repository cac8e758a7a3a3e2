package pgtenant_test

import (
	"embed"
	"io/fs"
	"testing"

	"github.com/bulkhead/bulkhead/pkg/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

//go:embed testdata/migrations/*.sql
var migrationFiles embed.FS

// spec is the test schema: notes (tenant table), tenants (tenant table readable by platform
// operators), drafts (per-user rows), jobs (global).
var spec = testenv.DBSpec{Name: "pgtenant", Migrations: mustSub(migrationFiles, "testdata/migrations")}

func mustSub(fsys fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(fsys, dir)
	if err != nil {
		panic(err)
	}
	return sub
}
