package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
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
// data directory that others may write (checkDataDir).
func loadOrCreateSecret(dataDir string) (string, error) {
	if err := checkDataDir(dataDir); err != nil {
		return "", err
	}
	path := filepath.Join(dataDir, secretFile)
	secret, err := readSecret(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return secret, err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", fmt.Errorf("create data directory: %w", err)
	}
	if err := createSecret(path); err != nil {
		return "", err
	}
	return readSecret(path)
}

// readSecret reads a secret file, refusing one that group or others may
// read or that holds nothing.
func readSecret(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("read JWT secret: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("read JWT secret: %w", err)
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("JWT secret %s is accessible to others (mode %04o); run chmod 600 %s", path, perm, path)
	}
	raw, err := io.ReadAll(io.LimitReader(f, maxValueFileSize))
	if err != nil {
		return "", fmt.Errorf("read JWT secret %s: %w", path, err)
	}
	secret := strings.TrimSpace(string(raw))
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
	tmp, err := os.CreateTemp(filepath.Dir(path), secretFile+".*.tmp") // mode 0600
	if err != nil {
		return fmt.Errorf("write JWT secret: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(hex.EncodeToString(key) + "\n")
	if err == nil {
		err = tmp.Sync()
	}
	if closeErr := tmp.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		return fmt.Errorf("write JWT secret: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("write JWT secret: %w", err)
	}
	return syncDir(filepath.Dir(path))
}

// syncDir makes a new directory entry durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
