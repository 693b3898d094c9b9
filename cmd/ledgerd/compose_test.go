package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.yaml.in/yaml/v3"
	"golang.org/x/mod/modfile"

	"github.com/resolutionflow/ledgerd/audit/natswitness"
)

// compose is the part of docker-compose.yml the checks below read.
type compose struct {
	Services map[string]struct {
		Image       string            `yaml:"image"`
		Build       any               `yaml:"build"`
		Command     []string          `yaml:"command"`
		Environment map[string]string `yaml:"environment"`
		Ports       []string          `yaml:"ports"`
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
		if !strings.Contains(help.String(), "env "+name+",") {
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
	for _, required := range []string{"DATABASE_URL_FILE", "NATS_URL", "LEDGER_JWT_SECRET_FILE", "LEDGER_AUDIT_KEY_FILE", "LEDGER_MASTER_KEY_FILE"} {
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

// TestDockerCompose_NATSRequiresCredentials checks compose's NATS: its port
// is not published to the host, it loads deploy/nats.conf, and ledgerd
// logs in with the password both get from NATS_PASSWORD. It then runs a
// real server on that configuration: JetStream is on, anonymous clients
// are refused, and ledgerd's user can do what the relay and tail do but
// not delete or purge the stream.
func TestDockerCompose_NATSRequiresCredentials(t *testing.T) {
	c := readCompose(t)
	natsSvc, ledgerd := c.Services["nats"], c.Services["ledgerd"]
	if len(natsSvc.Ports) > 0 {
		t.Errorf("nats publishes ports %q to the host", natsSvc.Ports)
	}
	const confInContainer = "/etc/nats/nats.conf"
	if !slices.Equal(natsSvc.Command, []string{"--config", confInContainer}) {
		t.Errorf("nats command %q, want --config %s", natsSvc.Command, confInContainer)
	}
	if !slices.Contains(natsSvc.Volumes, "./deploy/nats.conf:"+confInContainer+":ro") {
		t.Errorf("nats volumes %q do not mount deploy/nats.conf at %s", natsSvc.Volumes, confInContainer)
	}
	password := natsSvc.Environment["NATS_PASSWORD"]
	if !strings.HasPrefix(password, "${NATS_PASSWORD:?") || ledgerd.Environment["NATS_PASSWORD"] != password {
		t.Errorf("nats and ledgerd get NATS_PASSWORD %q and %q, want both the required variable NATS_PASSWORD",
			password, ledgerd.Environment["NATS_PASSWORD"])
	}
	if user := ledgerd.Environment["NATS_USER"]; user != "ledger" {
		t.Errorf("ledgerd's NATS_USER = %q, want ledger", user)
	}

	const secret = "5f2b9c0e7a1d4e3f8b6a9c2d1e0f7a3b5c8d9e2f1a0b3c4d5e6f7a8b9c0d1e2f"
	t.Setenv("NATS_PASSWORD", secret)
	opts, err := server.ProcessConfigFile("../../deploy/nats.conf")
	if err != nil {
		t.Fatalf("load deploy/nats.conf: %v", err)
	}
	if !opts.JetStream || opts.NoAuthUser != "" || len(opts.Users) == 0 {
		t.Fatalf("deploy/nats.conf: JetStream %v, no_auth_user %q, %d users; want JetStream and only users with passwords",
			opts.JetStream, opts.NoAuthUser, len(opts.Users))
	}
	opts.Host, opts.Port, opts.HTTPPort = "127.0.0.1", server.RANDOM_PORT, 0
	opts.StoreDir, opts.NoLog, opts.NoSigs = t.TempDir(), true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS with deploy/nats.conf not ready")
	}
	address := "nats://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(srv.Addr().(*net.TCPAddr).Port))
	if nc, err := nats.Connect(address); !errors.Is(err, nats.ErrAuthorization) {
		if nc != nil {
			nc.Close()
		}
		t.Fatalf("anonymous connect: err = %v, want %v", err, nats.ErrAuthorization)
	}

	// What the relay does: make the stream, publish expecting its last
	// sequence, read its last message.
	refused := make(chan error, 4)
	nc, err := nats.Connect(address, nats.UserInfo("ledger", secret), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		refused <- err
	}))
	if err != nil {
		t.Fatalf("connect as ledger: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "LEDGER", Subjects: []string{"handoff.>"}})
	if err != nil {
		t.Fatalf("create the stream as ledger: %v", err)
	}
	if _, err := js.Publish(ctx, "handoff.a.s.HandoffEscalated", []byte(`{"type":"HandoffEscalated"}`),
		jetstream.WithMsgID("01J00000000000000000000000"), jetstream.WithExpectLastSequence(0)); err != nil {
		t.Fatalf("publish as ledger: %v", err)
	}
	if _, err := js.Stream(ctx, "LEDGER"); err != nil {
		t.Fatalf("stream info as ledger: %v", err)
	}
	if _, err := stream.GetMsg(ctx, 1); err != nil {
		t.Fatalf("read a message as ledger: %v", err)
	}
	// What the checkpoint witness does: make its stream, publish.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: natswitness.DefaultStream, Subjects: []string{natswitness.Subject}}); err != nil {
		t.Fatalf("create the checkpoint stream as ledger: %v", err)
	}
	if _, err := js.Stream(ctx, natswitness.DefaultStream); err != nil {
		t.Fatalf("checkpoint stream info as ledger: %v", err)
	}
	if _, err := js.Publish(ctx, natswitness.Subject, []byte("a signed note"), jetstream.WithMsgID("checkpoint-1-00")); err != nil {
		t.Fatalf("publish a checkpoint as ledger: %v", err)
	}
	// What tail does, with the credentials flags.
	if line := tailFirstLine(t, "--nats-url", address, "--nats-user", "ledger", "--nats-password", secret); !strings.Contains(line, "HandoffEscalated") {
		t.Fatalf("tail printed %q", line)
	}
	for _, subject := range []string{"$JS.API.STREAM.DELETE.LEDGER", "$JS.API.STREAM.PURGE.LEDGER"} {
		if err := nc.Publish(subject, nil); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-refused:
			if !errors.Is(err, nats.ErrPermissionViolation) {
				t.Errorf("ledger publishes on %s: error %v, want a permissions violation", subject, err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("ledger published on %s: no permissions violation", subject)
		}
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

// TestDeployment_ImagesArePinned checks that every image compose runs and
// the Dockerfile builds from names a full version, that compose's NATS is
// the nats-server release the tests embed, and that the build image's Go
// is the one go.mod names.
func TestDeployment_ImagesArePinned(t *testing.T) {
	// A full version has three numbers; PostgreSQL's have two (15.14).
	pinned := regexp.MustCompile(`^(postgres:\d+\.\d+|[a-z0-9./-]+:v?\d+\.\d+\.\d+)(-[a-z0-9]+)?$`)
	c := readCompose(t)
	for name, svc := range c.Services {
		if svc.Image != "" && !pinned.MatchString(svc.Image) {
			t.Errorf("compose service %s runs image %q, not pinned to a full version", name, svc.Image)
		}
	}
	dockerfile, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(dockerfile), "\n") {
		if fields := strings.Fields(line); len(fields) >= 2 && fields[0] == "FROM" && !pinned.MatchString(fields[1]) {
			t.Errorf("Dockerfile builds FROM %q, not pinned to a full version", fields[1])
		}
	}

	raw, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	mod, err := modfile.Parse("go.mod", raw, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := "golang:" + mod.Go.Version + "-"; !strings.Contains(string(dockerfile), "FROM "+want) {
		t.Errorf("the Dockerfile does not build with %s… (go.mod's Go)", want)
	}
	for _, r := range mod.Require {
		if r.Mod.Path == "github.com/nats-io/nats-server/v2" {
			if want := "nats:" + strings.TrimPrefix(r.Mod.Version, "v") + "-alpine"; c.Services["nats"].Image != want {
				t.Errorf("compose runs NATS %q, want %q, the release the tests embed", c.Services["nats"].Image, want)
			}
		}
	}
}

// TestDockerignore_KeepsSecretsOutOfTheBuild checks that the image build,
// which copies the whole directory, is sent no secret, no local data and
// no repository history.
func TestDockerignore_KeepsSecretsOutOfTheBuild(t *testing.T) {
	raw, err := os.ReadFile("../../.dockerignore")
	if err != nil {
		t.Fatalf("read .dockerignore: %v", err)
	}
	var patterns []string
	for _, line := range strings.Split(string(raw), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			patterns = append(patterns, strings.TrimSuffix(strings.TrimPrefix(line, "/"), "/"))
		}
	}
	for _, want := range []string{".git", "secrets", "ledger-data"} {
		if !slices.Contains(patterns, want) {
			t.Errorf(".dockerignore does not keep %s out of the build (patterns %q)", want, patterns)
		}
	}
}
