// Package migrations holds the connection service's goose SQL migrations, embedded so the
// binary migrates itself (at start-up, or with `connection migrate`) and tests build their
// databases from the same files.
package migrations

import "embed"

// FS holds the numbered migrations at its root, as pgtenant.Migrate expects.
//
//go:embed *.sql
var FS embed.FS
