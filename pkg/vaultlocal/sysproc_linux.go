package vaultlocal

import "syscall"

// childSysProcAttr makes the kernel kill the dev server when the process that started it dies
// (a test binary killed by -timeout or ^C would otherwise leak a Vault per run). Pdeathsig is
// tied to the starting OS thread; the Go runtime does not retire threads of unlocked goroutines.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
