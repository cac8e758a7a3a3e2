//go:build !linux

package vaultlocal

import "syscall"

// childSysProcAttr has no parent-death signal outside Linux; Stop must be called.
func childSysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }
