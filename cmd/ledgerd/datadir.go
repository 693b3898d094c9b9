package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
)

// Modes of the embedded mode's data: the directories and files under the
// data directory are its owner's alone.
const (
	dataDirMode  fs.FileMode = 0o700
	dataFileMode fs.FileMode = 0o600
)

// checkDataDir refuses a data directory that group or others may write:
// whoever may write it can replace the database or the JWT secret. A
// directory that does not exist yet passes.
func checkDataDir(dir string) error {
	info, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	if !info.IsDir() {
		return fmt.Errorf("data directory %s is not a directory", dir)
	}
	return refuseWritableByOthers(dir, info.Mode().Perm())
}

func refuseWritableByOthers(dir string, perm fs.FileMode) error {
	if perm&0o022 != 0 {
		return fmt.Errorf("data directory %s is writable by group or others (mode %04o), who could replace the ledger's files; run chmod 700 %s", dir, perm, dir)
	}
	return nil
}

// secureDataDir makes the data directory private before the embedded store
// opens it: it refuses a directory, or one below it, that group or others
// may write; creates it (mode 0700) when missing; takes from every
// directory and file under it the permissions of group and others (0700
// and 0600 at most), logging each it changes; and sets the process's umask
// so that every file made from now on, by SQLite or by the JetStream
// store, is its owner's alone. Symbolic links are left as they are.
func secureDataDir(dir string, logger *slog.Logger) error {
	if err := checkDataDir(dir); err != nil {
		return err
	}
	restrictUmask()
	if err := os.MkdirAll(dir, dataDirMode); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("data directory: %w", err)
		}
		want := dataFileMode
		switch {
		case d.IsDir():
			want = dataDirMode
		case !d.Type().IsRegular():
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return fmt.Errorf("data directory: %w", err)
		}
		perm := info.Mode().Perm()
		if d.IsDir() {
			if err := refuseWritableByOthers(path, perm); err != nil {
				return err
			}
		}
		if perm&^want == 0 {
			return nil
		}
		if err := os.Chmod(path, perm&want); err != nil {
			return fmt.Errorf("data directory: %w", err)
		}
		logger.Warn("data directory: took group and others' access away", "path", path, "mode", fmt.Sprintf("%04o", perm), "now", fmt.Sprintf("%04o", perm&want))
		return nil
	})
}
