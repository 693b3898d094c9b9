//go:build !unix

package main

// restrictUmask does nothing on systems without a umask.
func restrictUmask() {}
