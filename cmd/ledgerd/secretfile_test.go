package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/resolutionflow/ledgerd/internal/pgtest"
)

// writeFile writes content to a new file of the test and returns its path.
func writeFile(tb testing.TB, content string) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "secret")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// checkSignedWith fails unless token is an HS256 token signed with secret.
func checkSignedWith(tb testing.TB, token, secret string) {
	tb.Helper()
	_, err := jwt.Parse(token, func(*jwt.Token) (any, error) { return []byte(secret), nil }, jwt.WithValidMethods([]string{"HS256"}))
	if err != nil {
		tb.Fatalf("token %q not signed with %q: %v", token, secret, err)
	}
}

func TestToken_ReadsTheSecretFromAFile(t *testing.T) {
	path := writeFile(t, testSecret+"\n")
	var out bytes.Buffer
	if err := run(context.Background(), []string{"token", "--jwt-secret-file", path}, &out, io.Discard); err != nil {
		t.Fatalf("token --jwt-secret-file: %v", err)
	}
	checkSignedWith(t, strings.TrimSpace(out.String()), testSecret)

	t.Setenv("LEDGER_JWT_SECRET_FILE", writeFile(t, testSecret+"\r\n"))
	out.Reset()
	if err := run(context.Background(), []string{"token"}, &out, io.Discard); err != nil {
		t.Fatalf("token with LEDGER_JWT_SECRET_FILE: %v", err)
	}
	checkSignedWith(t, strings.TrimSpace(out.String()), testSecret)
}

// TestSecretFiles_RefuseBadFilesAndBothForms checks that a secret file
// gets the same checks as the flag, and that a value and a file for the
// same setting are refused, in flags or environment variables, for every
// command that takes them.
func TestSecretFiles_RefuseBadFilesAndBothForms(t *testing.T) {
	good := writeFile(t, testSecret+"\n")
	dbURL := writeFile(t, "postgres://127.0.0.1:1/none\n")
	cases := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"ShortSecretFile", nil, []string{"token", "--jwt-secret-file", writeFile(t, testSecret[:31]+"\n")}, "at least 32 bytes"},
		{"EmptySecretFile", nil, []string{"token", "--jwt-secret-file", writeFile(t, "\n")}, "is empty"},
		{"MissingSecretFile", nil, []string{"token", "--jwt-secret-file", filepath.Join(t.TempDir(), "none")}, "no such file"},
		{"HugeSecretFile", nil, []string{"token", "--jwt-secret-file", writeFile(t, strings.Repeat("x", 5000))}, "larger than"},
		{"TokenBothFlags", nil, []string{"token", "--jwt-secret", testSecret, "--jwt-secret-file", good}, "not both"},
		{"TokenFlagAndEnv", map[string]string{"LEDGER_JWT_SECRET": testSecret}, []string{"token", "--jwt-secret-file", good}, "not both"},
		{"ServeEnvAndFlag", map[string]string{"LEDGER_JWT_SECRET_FILE": good}, []string{"serve", "--database-url", "postgres://127.0.0.1:1/none", "--jwt-secret", testSecret}, "not both"},
		{"ServeShortSecretFile", nil, []string{"serve", "--database-url", "postgres://127.0.0.1:1/none", "--jwt-secret-file", writeFile(t, "short\n")}, "at least 32 bytes"},
		{"MigrateBothURLs", nil, []string{"migrate", "--database-url", "postgres://127.0.0.1:1/none", "--database-url-file", dbURL}, "not both"},
		{"RebuildURLEnvAndFlag", map[string]string{"DATABASE_URL": "postgres://127.0.0.1:1/none"}, []string{"projections", "rebuild", "--database-url-file", dbURL}, "not both"},
		{"ServeEmptyURLFile", nil, []string{"serve", "--database-url-file", writeFile(t, ""), "--embedded-nats", "--jwt-secret", testSecret, "--audit-key-file", auditKeyFileFor(t), "--master-key-file", masterKeyFileFor(t)}, "is empty"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			var out bytes.Buffer
			// Each fails before serve would listen.
			err := run(context.Background(), c.args, &out, io.Discard)
			if err == nil || !strings.Contains(err.Error(), c.want) || out.Len() != 0 {
				t.Fatalf("%q = %v, printed %q; want an error containing %q", c.args, err, out.String(), c.want)
			}
		})
	}
}

func TestMigrate_ReadsTheDatabaseURLFromAFile(t *testing.T) {
	path := writeFile(t, pgtest.NewDatabase(t)+"\n")
	if err := run(context.Background(), []string{"migrate", "--database-url-file", path}, io.Discard, io.Discard); err != nil {
		t.Fatalf("migrate --database-url-file: %v", err)
	}
	t.Setenv("DATABASE_URL_FILE", path)
	if err := run(context.Background(), []string{"projections", "rebuild", "--master-key-file", masterKeyFileFor(t)}, io.Discard, io.Discard); err != nil {
		t.Fatalf("projections rebuild with DATABASE_URL_FILE: %v", err)
	}
}

// TestCommands_OfferTheFileForms checks that every command taking a
// secret's flag also takes its file form.
func TestCommands_OfferTheFileForms(t *testing.T) {
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"serve"}, []string{"DATABASE_URL_FILE", "LEDGER_JWT_SECRET_FILE"}},
		{[]string{"token"}, []string{"LEDGER_JWT_SECRET_FILE"}},
		{[]string{"migrate"}, []string{"DATABASE_URL_FILE"}},
		{[]string{"projections", "rebuild"}, []string{"DATABASE_URL_FILE"}},
	} {
		var help bytes.Buffer
		_ = run(context.Background(), append(c.args, "-h"), &help, &help)
		for _, env := range c.want {
			flag := "-" + strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(env, "LEDGER_"), "_", "-"))
			if !strings.Contains(help.String(), flag) || !strings.Contains(help.String(), "env "+env+",") {
				t.Errorf("%q does not take %s (env %s):\n%s", c.args, flag, env, help.String())
			}
		}
	}
}

func TestPrintStartup_SuggestsTheSecretFile(t *testing.T) {
	f := newFlags("serve")
	storage := addStorageFlags(f)
	jwtSecret := addSecretFlags(f)
	api := &net.TCPAddr{IP: net.IPv4zero, Port: 8080}
	for _, args := range [][]string{
		{"--database-url", "postgres://db/ledger", "--jwt-secret", testSecret},
		{"--database-url", "postgres://db/ledger", "--jwt-secret-file", "/run/secrets/jwt_secret"},
	} {
		if err := f.parse(args); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		printStartup(&out, api, natsTarget{url: "nats://nats:4222"}, storage, jwtSecret)
		banner := out.String()
		if !strings.Contains(banner, "ledgerd token --jwt-secret-file ") || strings.Contains(banner, "--jwt-secret ") || strings.Contains(banner, testSecret) {
			t.Errorf("banner with %q suggests:\n%s\nwant the --jwt-secret-file form", args, banner)
		}
		if args[2] == "--jwt-secret-file" && !strings.Contains(banner, "--jwt-secret-file /run/secrets/jwt_secret ") {
			t.Errorf("banner does not name the secret file it was given:\n%s", banner)
		}
	}
}
