package main

import (
	"bytes"
	"context"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// compose is the part of docker-compose.yml the checks below read.
type compose struct {
	Services map[string]struct {
		Image       string            `yaml:"image"`
		Build       any               `yaml:"build"`
		Command     []string          `yaml:"command"`
		Environment map[string]string `yaml:"environment"`
		Secrets     []string          `yaml:"secrets"`
		Volumes     []string          `yaml:"volumes"`
		Healthcheck struct {
			Test []string `yaml:"test"`
		} `yaml:"healthcheck"`
		DependsOn map[string]struct {
			Condition string `yaml:"condition"`
		} `yaml:"depends_on"`
		StopGracePeriod string `yaml:"stop_grace_period"`
	} `yaml:"services"`
	Secrets map[string]struct {
		File string `yaml:"file"`
	} `yaml:"secrets"`
}

// readCompose parses docker-compose.yml.
func readCompose(tb testing.TB) compose {
	tb.Helper()
	raw, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		tb.Fatalf("read docker-compose.yml: %v", err)
	}
	var c compose
	if err := yaml.Unmarshal(raw, &c); err != nil {
		tb.Fatalf("parse docker-compose.yml: %v", err)
	}
	return c
}

// checkEnvironment checks that every variable compose gives a ledgerd
// service is one its command reads.
func checkEnvironment(tb testing.TB, service string, env map[string]string, command ...string) {
	tb.Helper()
	var help bytes.Buffer
	_ = run(context.Background(), append(command, "-h"), &help, &help)
	for name := range env {
		if !strings.Contains(help.String(), "(env "+name+")") {
			tb.Errorf("compose gives %s %s, which `ledgerd %s` does not read", service, name, strings.Join(command, " "))
		}
	}
}

// TestDockerCompose_RunsTheProductionStack checks docker-compose.yml by
// reading it, since no container engine runs where the tests do: the three
// services exist with health checks, ledgerd waits for healthy dependencies,
// NATS runs JetStream, and every variable given to ledgerd is one it reads.
func TestDockerCompose_RunsTheProductionStack(t *testing.T) {
	c := readCompose(t)
	for _, name := range []string{"postgres", "nats", "ledgerd"} {
		svc, ok := c.Services[name]
		if !ok {
			t.Fatalf("service %q missing", name)
		}
		if len(svc.Healthcheck.Test) == 0 {
			t.Errorf("service %q has no health check", name)
		}
	}
	if !slices.Contains(c.Services["nats"].Command, "--jetstream") {
		t.Errorf("nats command %q does not enable JetStream", c.Services["nats"].Command)
	}
	ledgerd := c.Services["ledgerd"]
	if ledgerd.Build == nil {
		t.Error("ledgerd is not built from the Dockerfile")
	}
	for _, dep := range []string{"postgres", "nats"} {
		if ledgerd.DependsOn[dep].Condition != "service_healthy" {
			t.Errorf("ledgerd does not wait for %s to be healthy", dep)
		}
	}
	if grace, err := time.ParseDuration(ledgerd.StopGracePeriod); err != nil || grace <= defaultShutdownTimeout {
		t.Errorf("ledgerd stop_grace_period %q is not longer than the default --shutdown-timeout %s: the engine would kill a drain that takes all of it",
			ledgerd.StopGracePeriod, defaultShutdownTimeout)
	}
	if !strings.Contains(strings.Join(ledgerd.Healthcheck.Test, " "), "/readyz") {
		t.Errorf("ledgerd health check %q does not probe /readyz", ledgerd.Healthcheck.Test)
	}

	checkEnvironment(t, "ledgerd", ledgerd.Environment, "serve")
	for _, required := range []string{"DATABASE_URL_FILE", "NATS_URL", "LEDGER_JWT_SECRET_FILE"} {
		if _, ok := ledgerd.Environment[required]; !ok {
			t.Errorf("compose does not give ledgerd %s", required)
		}
	}

	dockerfile, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatalf("read Dockerfile: %v", err)
	}
	if !bytes.Contains(dockerfile, []byte("./cmd/ledgerd")) {
		t.Error("Dockerfile does not build ./cmd/ledgerd")
	}
}

// TestDockerCompose_LeastPrivilege checks the roles and secrets of
// docker-compose.yml: PostgreSQL's init script (a file of the repository)
// creates a database owner that is not a superuser and the runtime role; a
// one-shot migrate service migrates as the owner and grants the runtime
// role; ledgerd serves as the runtime role once migrate has succeeded; and
// the JWT secret and database URLs reach ledgerd as Docker secret files,
// never as environment values, made by deploy/make-secrets.sh with the
// roles' names.
func TestDockerCompose_LeastPrivilege(t *testing.T) {
	c := readCompose(t)
	postgres, migrate, ledgerd := c.Services["postgres"], c.Services["migrate"], c.Services["ledgerd"]

	var initScript string
	for _, v := range postgres.Volumes {
		if src, dst, ok := strings.Cut(v, ":"); ok && strings.HasPrefix(dst, "/docker-entrypoint-initdb.d/") {
			initScript = src
		}
	}
	script, err := os.ReadFile(filepath.Join("../..", initScript))
	if initScript == "" || err != nil {
		t.Fatalf("postgres mounts no init script of the repository into /docker-entrypoint-initdb.d (%q: %v)", initScript, err)
	}
	runtime := migrate.Environment["LEDGER_RUNTIME_ROLE"]
	for _, want := range []string{
		"CREATE ROLE ledger_owner LOGIN NOSUPERUSER",
		"CREATE ROLE " + runtime + " LOGIN NOSUPERUSER",
		"CREATE DATABASE ledger OWNER ledger_owner",
	} {
		if runtime == "" || !bytes.Contains(script, []byte(want)) {
			t.Errorf("%s does not say %q", initScript, want)
		}
	}
	if postgres.Environment["POSTGRES_PASSWORD"] != "" || postgres.Environment["POSTGRES_PASSWORD_FILE"] == "" {
		t.Error("postgres's superuser password is not a secret file")
	}

	if !slices.Equal(migrate.Command, []string{"migrate"}) || migrate.Build == nil {
		t.Errorf("migrate service runs %q, want ledgerd's migrate", migrate.Command)
	}
	if migrate.DependsOn["postgres"].Condition != "service_healthy" {
		t.Error("migrate does not wait for postgres to be healthy")
	}
	checkEnvironment(t, "migrate", migrate.Environment, "migrate")
	if ledgerd.DependsOn["migrate"].Condition != "service_completed_successfully" {
		t.Error("ledgerd does not wait for migrate to complete successfully")
	}

	// Secret name -> the file deploy/make-secrets.sh writes.
	files := map[string]string{}
	for name, secret := range c.Secrets {
		rel, ok := strings.CutPrefix(secret.File, "./secrets/")
		if !ok {
			t.Errorf("secret %s is %q, want a file in ./secrets", name, secret.File)
		}
		files[name] = rel
	}
	dir := filepath.Join(t.TempDir(), "secrets")
	for range 2 { // a second run keeps the secrets
		if out, err := exec.Command("sh", "../../deploy/make-secrets.sh", dir).CombinedOutput(); err != nil {
			t.Fatalf("deploy/make-secrets.sh: %v\n%s", err, out)
		}
	}
	wantMode(t, dir, 0o700)
	read := func(secret string) string {
		t.Helper()
		path := filepath.Join(dir, files[secret])
		wantMode(t, path, 0o644) // read by the container's user; dir keeps others out
		v, err := readValueFile(path)
		if err != nil {
			t.Fatalf("secret %s: %v", secret, err)
		}
		return v
	}
	for _, s := range []struct {
		service  string
		env      map[string]string
		secrets  []string
		variable string
		user     string // the role a URL names; "" for the JWT secret
	}{
		{"migrate", migrate.Environment, migrate.Secrets, "DATABASE_URL_FILE", "ledger_owner"},
		{"ledgerd", ledgerd.Environment, ledgerd.Secrets, "DATABASE_URL_FILE", runtime},
		{"ledgerd", ledgerd.Environment, ledgerd.Secrets, "LEDGER_JWT_SECRET_FILE", ""},
	} {
		secret, ok := strings.CutPrefix(s.env[s.variable], "/run/secrets/")
		if !ok || !slices.Contains(s.secrets, secret) {
			t.Errorf("%s's %s = %q, want one of its secrets %q in /run/secrets", s.service, s.variable, s.env[s.variable], s.secrets)
			continue
		}
		value := read(secret)
		if s.user == "" {
			if err := checkSecretLength(value, secret); err != nil {
				t.Error(err)
			}
			continue
		}
		if u, err := url.Parse(value); err != nil || u.User.Username() != s.user || u.Path != "/ledger" {
			t.Errorf("%s's database URL %s connects as %q to %q, want %s to /ledger", s.service, secret, u.User.Username(), u.Path, s.user)
		}
	}
	for _, name := range []string{"DATABASE_URL", "LEDGER_JWT_SECRET"} {
		if _, ok := ledgerd.Environment[name]; ok {
			t.Errorf("ledgerd gets %s as an environment value, want the file form", name)
		}
	}
	for _, secret := range postgres.Secrets {
		read(secret)
	}
}
