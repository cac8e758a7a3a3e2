//go:build unix && !linux

package pglocal

import "syscall"

// sysProcAttr puts the postmaster in its own process group so Stop can kill the backends with
// it. Outside Linux there is no parent-death signal: a crashed process leaves the server running.
func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Setpgid:    true,
		Credential: cred,
	}
}
