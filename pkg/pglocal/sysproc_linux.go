package pglocal

import "syscall"

// sysProcAttr puts the postmaster in its own process group, so Stop can kill the backends with
// it, and asks the kernel to send it SIGQUIT (PostgreSQL's immediate shutdown, which also stops
// the backends) when the process that started it dies: a crashed or killed test binary does not
// leave a server running forever.
//
// Pdeathsig fires when the *thread* that forked exits; the Go runtime does not retire threads
// except those locked by LockOSThread, which os/exec does not use.
func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Setpgid:    true,
		Pdeathsig:  syscall.SIGQUIT,
		Credential: cred,
	}
}
