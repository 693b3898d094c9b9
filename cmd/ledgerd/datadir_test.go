package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// mkdirMode makes dir with exactly mode, whatever the process's umask.
func mkdirMode(tb testing.TB, dir string, mode fs.FileMode) {
	tb.Helper()
	if err := os.MkdirAll(dir, mode); err != nil {
		tb.Fatal(err)
	}
	if err := os.Chmod(dir, mode); err != nil {
		tb.Fatal(err)
	}
}

// checkPrivate fails tb unless every directory under dir, dir included, has
// mode 0700 and every file group and others may not access; want names
// files that must be among them.
func checkPrivate(tb testing.TB, dir string, want ...string) {
	tb.Helper()
	seen := map[string]bool{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		seen[rel] = true
		switch perm := info.Mode().Perm(); {
		case d.IsDir() && perm != 0o700:
			tb.Errorf("directory %s has mode %04o, want 0700", rel, perm)
		case !d.IsDir() && perm&0o077 != 0:
			tb.Errorf("file %s has mode %04o, want no access for group and others", rel, perm)
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("walk %s: %v", dir, err)
	}
	for _, name := range want {
		if !seen[name] {
			tb.Errorf("%s is missing from the data directory", name)
		}
	}
}

// TestServe_EmbeddedDataIsPrivate starts the embedded mode on a new data
// directory, and on an existing one of mode 0755 that holds a database
// file and a JetStream directory open to everyone, as an older ledgerd or
// an image's /data left them. Every directory under it must end up 0700
// and every file private to its owner, those made by SQLite and JetStream
// included, while it runs and after it stopped.
func TestServe_EmbeddedDataIsPrivate(t *testing.T) {
	for name, prepare := range map[string]func(dir string){
		"New": func(string) {},
		"Existing0755": func(dir string) {
			mkdirMode(t, dir, 0o755)
			mkdirMode(t, filepath.Join(dir, "nats"), 0o755)
			db := filepath.Join(dir, sqliteFile)
			if err := os.WriteFile(db, nil, 0o644); err != nil { // an empty file is an empty database
				t.Fatal(err)
			}
			if err := os.Chmod(db, 0o644); err != nil {
				t.Fatal(err)
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			prepare(dir)
			base, stop := startServe(t, "--data-dir", dir)
			var out bytes.Buffer
			if err := run(context.Background(), []string{"token", "--data-dir", dir}, &out, io.Discard); err != nil {
				t.Fatalf("token: %v", err)
			}
			resp, err := post(t, fmt.Sprintf("%s/ai-sessions/%s/handoff", base, uuid.New()), strings.TrimSpace(out.String()), `{"intent":"escalate","engineer_notes":"private"}`)
			if err != nil {
				t.Fatalf("escalate: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusCreated {
				t.Fatalf("escalate = %d, want 201", resp.StatusCode)
			}
			checkPrivate(t, dir, secretFile, sqliteFile, sqliteFile+"-wal", sqliteFile+"-shm", filepath.Join("nats", "jetstream"))
			if err := stop(); err != nil {
				t.Fatalf("serve: %v", err)
			}
			checkPrivate(t, dir, secretFile, sqliteFile)
		})
	}
}

// TestEmbedded_RefusesADataDirectoryOthersMayWrite starts the commands that
// use the data directory on one that group or others may write: each must
// refuse, saying why and what to do, and leave the directory as it was.
func TestEmbedded_RefusesADataDirectoryOthersMayWrite(t *testing.T) {
	for _, mode := range []fs.FileMode{0o777, 0o775} {
		t.Run(fmt.Sprintf("%04o", mode), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			mkdirMode(t, dir, mode)
			for _, args := range [][]string{
				{"serve", "--data-dir", dir, "--http-addr", freeAddr(t), "--nats-listen", "127.0.0.1:0"},
				{"migrate", "--data-dir", dir},
				{"token", "--data-dir", dir},
			} {
				refused(t, args, dir)
			}
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != 0 {
				t.Errorf("the refused data directory holds %d entries, want none", len(entries))
			}
			wantMode(t, dir, mode)
		})
	}
}

// TestEmbedded_RefusesAStoreDirectoryOthersMayWrite starts the embedded
// store on a private data directory that holds a directory others may
// write: it must refuse it.
func TestEmbedded_RefusesAStoreDirectoryOthersMayWrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	mkdirMode(t, dir, 0o700)
	nats := filepath.Join(dir, "nats")
	mkdirMode(t, nats, 0o777)
	refused(t, []string{"migrate", "--data-dir", dir}, nats)
	wantMode(t, nats, 0o777)
}

// refused runs ledgerd with args and fails tb unless it refuses the
// directory loose as one others may write.
func refused(tb testing.TB, args []string, loose string) {
	tb.Helper()
	// A refusal is at once; a serve that starts is stopped after a while.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := run(ctx, args, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "writable by group or others") || !strings.Contains(err.Error(), "chmod 700 "+loose) {
		tb.Errorf("%s with %s writable by others = %v; want a refusal saying chmod 700 %s", args[0], loose, err, loose)
	}
}
