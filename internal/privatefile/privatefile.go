// Package privatefile reads and writes small files that only their owner may
// read, such as secrets and URLs with credentials: a read refuses a file that
// group or others may access, and a write makes the file 0600 under a
// temporary name, syncs it, and puts it in place whole.
package privatefile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// MaxSize bounds how much of a file Read reads.
const MaxSize = 4096

// ExposedError is the error of Read for a file that group or others may
// access: whoever could read it may know what it holds.
type ExposedError struct {
	Path string
	Mode fs.FileMode
}

func (e *ExposedError) Error() string {
	return fmt.Sprintf("%s is accessible to others (mode %04o)", e.Path, e.Mode)
}

// Read returns the text of the file at path with surrounding white space
// trimmed, reading at most MaxSize bytes. It fails with *ExposedError when
// group or others may access the file, and with an error wrapping
// fs.ErrNotExist when there is none.
func Read(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return "", err
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return "", &ExposedError{Path: path, Mode: perm}
	}
	raw, err := io.ReadAll(io.LimitReader(f, MaxSize))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(raw)), nil
}

// Write makes a file at path holding text and a newline, mode 0600. With
// replace, it takes the place of any file there; without, an existing file
// is kept and that is no error (another process made it first). The
// directory entry is synced, so the file survives a crash.
func Write(path, text string, replace bool) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".*.tmp") // mode 0600
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(text + "\n")
	if err == nil {
		err = tmp.Sync()
	}
	if closeErr := tmp.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		return err
	}
	if replace {
		err = os.Rename(tmp.Name(), path)
	} else if err = os.Link(tmp.Name(), path); errors.Is(err, fs.ErrExist) {
		err = nil
	}
	if err != nil {
		return err
	}
	return syncDir(dir)
}

// syncDir makes a new directory entry durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
