package main

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func loadSecret(tb testing.TB, dir string) string {
	tb.Helper()
	secret, _, err := loadOrCreateSecret(dir)
	if err != nil {
		tb.Fatalf("loadOrCreateSecret: %v", err)
	}
	return secret
}

func wantMode(tb testing.TB, path string, want os.FileMode) {
	tb.Helper()
	info, err := os.Stat(path)
	if err != nil {
		tb.Fatalf("stat %s: %v", path, err)
	}
	if got := info.Mode().Perm(); got != want {
		tb.Errorf("%s has mode %04o, want %04o", path, got, want)
	}
}

func TestLoadOrCreateSecret_CreatesPrivateStableSecret(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ledger-data")
	secret := loadSecret(t, dir)
	if key, err := hex.DecodeString(secret); err != nil || len(key) != secretBytes {
		t.Errorf("secret %q is not %d hex-encoded bytes", secret, secretBytes)
	}
	wantMode(t, dir, 0o700)
	wantMode(t, filepath.Join(dir, secretFile), 0o600)
	for range 3 {
		if again := loadSecret(t, dir); again != secret {
			t.Fatalf("second load = %q, want the first secret %q", again, secret)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("read data directory: %v", err)
	}
	if len(entries) != 1 {
		t.Errorf("data directory holds %d entries, want only %s", len(entries), secretFile)
	}
	if other := loadSecret(t, filepath.Join(t.TempDir(), "other")); other == secret {
		t.Error("two data directories got the same secret")
	}
}

// TestLoadOrCreateSecret_RacingStartsAgree has many starts make the secret
// of a fresh data directory at once, round after round: all must get the
// secret that ends up in the file.
func TestLoadOrCreateSecret_RacingStartsAgree(t *testing.T) {
	const starts, rounds = 16, 50
	for round := range rounds {
		dir := filepath.Join(t.TempDir(), "ledger-data")
		secrets := make([]string, starts)
		errs := make([]error, starts)
		ready := make(chan struct{})
		var wg sync.WaitGroup
		for i := range starts {
			wg.Go(func() {
				<-ready
				secrets[i], _, errs[i] = loadOrCreateSecret(dir)
			})
		}
		close(ready)
		wg.Wait()
		stored := loadSecret(t, dir)
		for i := range starts {
			if errs[i] != nil {
				t.Fatalf("round %d start %d: %v", round, i, errs[i])
			}
			if secrets[i] != stored {
				t.Fatalf("round %d start %d got %q, the file holds %q", round, i, secrets[i], stored)
			}
		}
	}
}

func TestLoadOrCreateSecret_KeepsAnOperatorsSecret(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, secretFile), []byte("chosen by the operator, long enough\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := loadSecret(t, dir); got != "chosen by the operator, long enough" {
		t.Errorf("secret = %q, want the operator's", got)
	}
}

func TestLoadOrCreateSecret_RefusesUnsafeFiles(t *testing.T) {
	cases := map[string]struct {
		content string
		mode    os.FileMode
	}{
		"WorldReadable": {strings.Repeat("0123", 16), 0o644},
		"GroupReadable": {strings.Repeat("0123", 16), 0o640},
		"Empty":         {"\n", 0o600},
		"Short":         {"0123456789abcdef0123456789abcde\n", 0o600},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, secretFile)
			if err := os.WriteFile(path, []byte(c.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, c.mode); err != nil {
				t.Fatal(err)
			}
			if secret, _, err := loadOrCreateSecret(dir); err == nil {
				t.Errorf("loaded %q from a file of mode %04o holding %q", secret, c.mode, c.content)
			}
		})
	}
}
