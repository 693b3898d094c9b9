package privatefile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteAndRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secret")
	if _, err := Read(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Read of a missing file: err = %v, want fs.ErrNotExist", err)
	}
	if err := Write(path, "first", false); err != nil {
		t.Fatal(err)
	}
	if err := Write(path, "second", false); err != nil {
		t.Fatalf("Write without replace over an existing file: %v", err)
	}
	if got, err := Read(path); err != nil || got != "first" {
		t.Fatalf("after a Write without replace: %q, %v; want the first text kept", got, err)
	}
	if err := Write(path, "third", true); err != nil {
		t.Fatal(err)
	}
	if got, err := Read(path); err != nil || got != "third" {
		t.Fatalf("after a Write with replace: %q, %v; want the new text", got, err)
	}
	info, err := os.Stat(path)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v; want 0600", info.Mode().Perm(), err)
	}
	leftovers, _ := filepath.Glob(path + ".*.tmp")
	if len(leftovers) != 0 {
		t.Errorf("temporary files left: %q", leftovers)
	}
}

func TestRead_RefusesAFileOthersMayRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte("x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	var exposed *ExposedError
	if _, err := Read(path); !errors.As(err, &exposed) || exposed.Mode != 0o640 {
		t.Fatalf("Read of a 0640 file: err = %v, want *ExposedError with mode 0640", err)
	}
}
