package testenv

import (
	"errors"
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// Main runs m's tests and exits with RunMain's code. Call it from TestMain.
func Main(m *testing.M) {
	os.Exit(RunMain(m))
}

// RunMain runs m's tests, stops the shared servers this package started, and then fails the
// run if goroutines leaked (a pool or client a test forgot to close). It returns the exit code.
func RunMain(m *testing.M) int {
	code := m.Run()
	if err := stopShared(); err != nil {
		fmt.Fprintf(os.Stderr, "testenv: stopping shared servers: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	// Only after the servers stopped: their waiter goroutines are ours, not leaks. A failed run
	// is reported as is; leak noise would only hide the real failure.
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "testenv: goroutine leak: %v\n", err)
			code = 1
		}
	}
	return code
}

// stopShared stops every process-wide server of this package.
func stopShared() error {
	return errors.Join(StopPostgres(), StopVault())
}
