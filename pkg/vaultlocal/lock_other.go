//go:build !unix

package vaultlocal

import "context"

// lockFile is a no-op where flock is unavailable: concurrent first builds may race.
func lockFile(context.Context, string) (func(), error) { return func() {}, nil }
