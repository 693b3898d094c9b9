//go:build !unix

package embeddednats

// lockDir does not lock on systems without flock: running two servers on
// one store directory is left to the user to avoid.
func lockDir(string) (func(), error) { return func() {}, nil }
