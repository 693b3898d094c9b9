package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/resolutionflow/ledgerd/internal/ledgertest"
)

// help runs `ledgerd <args> -h` and returns what it printed on stdout.
func help(tb testing.TB, args ...string) string {
	tb.Helper()
	var out, errOut bytes.Buffer
	if err := run(tb.Context(), append(args, "-h"), &out, &errOut); err != nil {
		tb.Fatalf("%q -h = %v, want nil (exit 0)", args, err)
	}
	if errOut.Len() != 0 {
		tb.Fatalf("%q -h wrote to stderr: %q", args, errOut.String())
	}
	return out.String()
}

// TestHelp_ListsEachCommandsFlags checks that -h and --help print, on
// stdout and with exit status 0, every flag of the command spelled with two
// dashes, with its variable and built-in default (not the variable's
// value, which may be a secret), and only the flags the command uses.
func TestHelp_ListsEachCommandsFlags(t *testing.T) {
	t.Setenv("LEDGER_JWT_SECRET", "a secret the help must not show, 0123456789")
	serve := help(t, "serve")
	var out bytes.Buffer
	if err := run(t.Context(), []string{"serve", "--help"}, &out, io.Discard); err != nil || out.String() != serve {
		t.Fatalf("serve --help = %v, printed %q; want what -h prints", err, out.String())
	}
	for _, want := range []string{
		"usage: ledgerd serve [flags]",
		"  --http-addr string\n      address the REST API listens on\n      env LEDGER_HTTP_ADDR, default \":8080\"\n",
		"  --embedded-nats\n",
		"env LEDGER_EMBEDDED_NATS, default false",
		"env LEDGER_JWT_SECRET, default \"\"",
		"env LEDGER_SHUTDOWN_TIMEOUT, default 30s",
		"  --audit-key-file string\n",
	} {
		if !strings.Contains(serve, want) {
			t.Errorf("serve -h lacks %q; it printed:\n%s", want, serve)
		}
	}
	if strings.Contains(serve, "a secret the help must not show") {
		t.Error("serve -h shows the value of LEDGER_JWT_SECRET")
	}
	for line := range strings.Lines(serve) {
		if strings.HasPrefix(line, "  -") && !strings.HasPrefix(line, "  --") {
			t.Errorf("serve -h spells a flag with one dash: %q", line)
		}
	}

	token := help(t, "token")
	for _, unused := range []string{"--database-max-conns", "--database-url", "--nats"} {
		if strings.Contains(token, unused) {
			t.Errorf("token -h lists %s, which token does not use", unused)
		}
	}
	for _, want := range []string{"--data-dir", "--jwt-secret-file", "--role"} {
		if !strings.Contains(token, want) {
			t.Errorf("token -h lacks %s", want)
		}
	}
	if auditKey := help(t, "audit", "key"); strings.Contains(auditKey, "--database-max-conns") || !strings.Contains(auditKey, "--audit-key-file") {
		t.Errorf("audit key -h lists a pool size it never opens, or lacks --audit-key-file:\n%s", auditKey)
	}
}

// TestServe_RefusesBadValuesNamingTheFlag checks that a value that does not
// parse stops start-up, before anything is opened, with a one-line error
// naming the flag and exit status 2.
func TestServe_RefusesBadValuesNamingTheFlag(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--http-addr", "not-an-address"}, `--http-addr (LEDGER_HTTP_ADDR) "not-an-address" is not a host:port address`},
		{[]string{"--http-addr", "127.0.0.1:99999"}, `--http-addr (LEDGER_HTTP_ADDR) "127.0.0.1:99999"`},
		{[]string{"--nats-listen", "localhost"}, `--nats-listen (LEDGER_NATS_LISTEN) "localhost"`},
		{[]string{"--database-max-conns", "many"}, `invalid value "many" for flag --database-max-conns`},
		{[]string{"--htp-addr", ":8080"}, "flag provided but not defined: --htp-addr"},
	} {
		dir := filepath.Join(t.TempDir(), "data")
		err := run(t.Context(), append([]string{"serve", "--data-dir", dir}, c.args...), io.Discard, io.Discard)
		switch {
		case err == nil || !strings.Contains(err.Error(), c.want):
			t.Errorf("serve %q = %v, want an error containing %q", c.args, err, c.want)
		case strings.Contains(err.Error(), "\n"):
			t.Errorf("serve %q: the error is not one line: %q", c.args, err)
		case exitCode(err) != 2:
			t.Errorf("serve %q: exit status %d, want 2", c.args, exitCode(err))
		}
		if _, statErr := os.Stat(dir); !errors.Is(statErr, fs.ErrNotExist) {
			t.Errorf("serve %q made its data directory before refusing the flags", c.args)
		}
	}
}

func TestVersion_PrintsVersionCommitAndGo(t *testing.T) {
	var out bytes.Buffer
	if err := run(t.Context(), []string{"version"}, &out, io.Discard); err != nil {
		t.Fatalf("version: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ledgerd ") || !strings.HasPrefix(lines[1], "commit ") || lines[2] != runtime.Version() {
		t.Fatalf("version printed %q, want ledgerd <version>, commit <commit> and %s", out.String(), runtime.Version())
	}
}

// TestToken_RefusesWithoutAKeptSecret checks that token, without
// --jwt-secret, signs with the secret a server keeps in the data directory
// and, where there is none, says so rather than making a secret that no
// server knows.
func TestToken_RefusesWithoutAKeptSecret(t *testing.T) {
	t.Setenv("LEDGER_JWT_SECRET", "")
	dir := filepath.Join(t.TempDir(), "data")
	err := run(t.Context(), []string{"token", "--data-dir", dir}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "no JWT secret in --data-dir "+dir) {
		t.Fatalf("token where no data directory exists = %v, want it refused", err)
	}
	if _, statErr := os.Stat(dir); !errors.Is(statErr, fs.ErrNotExist) {
		t.Fatalf("token made the data directory %s", dir)
	}

	if _, _, err := loadOrCreateSecret(dir); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(t.Context(), []string{"token", "--data-dir", dir}, &out, io.Discard); err != nil || strings.Count(out.String(), ".") != 2 {
		t.Fatalf("token with the kept secret = %v, printed %q; want a token", err, out.String())
	}
}

func TestLogger_WritesDurationsAsText(t *testing.T) {
	var out bytes.Buffer
	newLogger(&out).Info("done", "took", 1200*time.Millisecond)
	var line map[string]any
	if err := json.Unmarshal(out.Bytes(), &line); err != nil || line["took"] != "1.2s" {
		t.Fatalf("log line %s: took = %v (%v), want \"1.2s\"", out.String(), line["took"], err)
	}
}

// TestServe_LogsDataDirectoryAndNewSecret checks that the start-up log
// line says where the data directory is and whether this start made the
// token secret.
func TestServe_LogsDataDirectoryAndNewSecret(t *testing.T) {
	t.Setenv("LEDGER_JWT_SECRET", "")
	dir := t.TempDir()
	for _, generated := range []bool{true, false} {
		var logs ledgertest.Buffer
		_, stop := startServeLogging(t, &logs, "--data-dir", dir)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		var started struct {
			DataDir   string `json:"data_dir"`
			Generated *bool  `json:"jwt_secret_generated"`
		}
		for line := range strings.Lines(logs.String()) {
			if strings.Contains(line, `"msg":"ledgerd serving"`) {
				if err := json.Unmarshal([]byte(line), &started); err != nil {
					t.Fatal(err)
				}
			}
		}
		if started.DataDir != dir || started.Generated == nil || *started.Generated != generated {
			t.Fatalf("start-up log data_dir %q, jwt_secret_generated %v; want %q, %v; the log:\n%s", started.DataDir, started.Generated, dir, generated, logs.String())
		}
	}
}
