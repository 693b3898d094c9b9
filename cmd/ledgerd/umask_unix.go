//go:build unix

package main

import "syscall"

// restrictUmask makes the files and directories the process creates from
// now on its owner's alone, whatever mode the code that creates them asks
// for (SQLite asks 0644).
func restrictUmask() { syscall.Umask(0o077) }
