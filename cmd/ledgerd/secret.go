package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/resolutionflow/ledgerd/internal/privatefile"
)

// secretFile is the name, in the data directory, of the JWT secret the
// embedded mode makes on its first start.
const secretFile = "jwt-secret"

// secretBytes is how many random bytes a new secret holds.
const secretBytes = 32

// minSecretLength is the shortest secret accepted, in bytes: a short HS256
// key can be found by guessing, offline, from any token it signed.
const minSecretLength = 32

// checkSecretLength refuses a secret shorter than minSecretLength; source
// says where it came from.
func checkSecretLength(secret, source string) error {
	if len(secret) < minSecretLength {
		return fmt.Errorf("%s must be at least %d bytes: a short HS256 key can be guessed from any token it signed; make one with: openssl rand -hex 32",
			source, minSecretLength)
	}
	return nil
}

// loadOrCreateSecret returns the JWT secret kept in dataDir, creating it on
// first use: 32 random bytes, hex-encoded, in a file only the owner may
// read (mode 0600) in a directory only the owner may enter (0700 when it is
// created). The file is written in full under a temporary name and then
// linked into place, which fails if the file exists: when two processes
// start at once, the one that loses reads the winner's secret, so both use
// the same. A secret file that others may read is refused, and so is a
// data directory that others may write (checkDataDir). created reports
// that there was no secret before this call.
func loadOrCreateSecret(dataDir string) (secret string, created bool, err error) {
	secret, err = readKeptSecret(dataDir)
	if !errors.Is(err, fs.ErrNotExist) {
		return secret, false, err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", false, fmt.Errorf("create data directory: %w", err)
	}
	path := filepath.Join(dataDir, secretFile)
	if err := createSecret(path); err != nil {
		return "", false, err
	}
	secret, err = readSecret(path)
	return secret, err == nil, err
}

// readKeptSecret returns the JWT secret kept in dataDir; the error wraps
// fs.ErrNotExist when there is none.
func readKeptSecret(dataDir string) (string, error) {
	if err := checkDataDir(dataDir); err != nil {
		return "", err
	}
	return readSecret(filepath.Join(dataDir, secretFile))
}

// readSecret reads a secret file, refusing one that group or others may
// read or that holds too short a secret.
func readSecret(path string) (string, error) {
	secret, err := privatefile.Read(path)
	var exposed *privatefile.ExposedError
	switch {
	case errors.As(err, &exposed):
		return "", fmt.Errorf("JWT secret %v; run chmod 600 %s", exposed, path)
	case err != nil:
		return "", fmt.Errorf("read JWT secret: %w", err)
	}
	if err := checkSecretLength(secret, "JWT secret "+path); err != nil {
		return "", err
	}
	return secret, nil
}

// createSecret writes a new random secret to path unless a file is
// already there; it is no error when another process made it first.
func createSecret(path string) error {
	key := make([]byte, secretBytes)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("make JWT secret: %w", err)
	}
	if err := privatefile.Write(path, hex.EncodeToString(key), false); err != nil {
		return fmt.Errorf("write JWT secret: %w", err)
	}
	return nil
}
