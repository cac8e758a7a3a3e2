package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/pkg/pgtenant"
	"github.com/bulkhead/bulkhead/pkg/testenv"
	"github.com/bulkhead/bulkhead/services/sync/launch"
	"github.com/bulkhead/bulkhead/services/sync/migrations"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestExitCodes(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want int
	}{
		{"unknown subcommand", []string{"frobnicate"}, nil, 2},
		{"migrate without owner URL", []string{"migrate"}, nil, 2},
		{"serve without configuration", nil, nil, 2},
		{"malformed number", nil, map[string]string{launch.EnvMaxWorkers: "many"}, 2},
		{"malformed base URLs", nil, map[string]string{launch.EnvBaseURLs: "nourl"}, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			if got := run(context.Background(), tc.args, env(tc.env), &out); got != tc.want {
				t.Fatalf("exit = %d, want %d (%s)", got, tc.want, out.String())
			}
		})
	}
}

func TestMigrate(t *testing.T) {
	db := testenv.NewDatabase(t, testenv.DBSpec{Name: "sync", Migrations: migrations.FS})
	var out bytes.Buffer
	code := run(context.Background(), []string{"migrate"}, env(map[string]string{
		launch.EnvMigrateDatabaseURL: db.OwnerURL, launch.EnvAppRole: db.Roles.App,
	}), &out)
	if code != 0 {
		t.Fatalf("migrate = %d: %s", code, out.String())
	}
	if strings.Contains(out.String(), "bulkhead-test") {
		t.Fatal("the database password reached the logs")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := pgtenant.VerifyIsolation(ctx, db.SuperURL, db.Roles.App); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.SuperPool(t).QueryRow(ctx, "SELECT count(*) FROM river_migration").Scan(&n); err != nil || n == 0 {
		t.Fatalf("River migrations: %d, %v", n, err)
	}
}

func TestConfigNeverPrintsSecrets(t *testing.T) {
	cfg, err := launch.ConfigFromEnv(env(map[string]string{
		launch.EnvDatabaseURL: "postgres://sync_app:hunter2@db/bulkhead", launch.EnvClientSecret: "s3cret",
	}))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg.ClientSecret.String())} {
		if strings.Contains(s, "hunter2") || strings.Contains(s, "s3cret") {
			t.Fatalf("a secret printed: %s", s)
		}
	}
}
