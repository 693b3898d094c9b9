package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.yaml.in/yaml/v3"
)

// compose is the part of docker-compose.yml the checks below read.
type compose struct {
	Services map[string]struct {
		Image       string            `yaml:"image"`
		Build       any               `yaml:"build"`
		Command     []string          `yaml:"command"`
		Environment map[string]string `yaml:"environment"`
		Ports       []string          `yaml:"ports"`
		Volumes     []string          `yaml:"volumes"`
		Healthcheck struct {
			Test []string `yaml:"test"`
		} `yaml:"healthcheck"`
		DependsOn map[string]struct {
			Condition string `yaml:"condition"`
		} `yaml:"depends_on"`
		StopGracePeriod string `yaml:"stop_grace_period"`
	} `yaml:"services"`
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

// TestDockerCompose_RunsTheProductionStack checks docker-compose.yml by
// reading it, since no container engine runs where the tests do: the three
// services exist with health checks, ledgerd waits for healthy dependencies,
// and every variable given to ledgerd is one it reads.
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

	var help bytes.Buffer
	_ = run(context.Background(), []string{"serve", "-h"}, &help, &help)
	for name := range ledgerd.Environment {
		if !strings.Contains(help.String(), "(env "+name+")") {
			t.Errorf("compose sets %s, which `ledgerd serve` does not read", name)
		}
	}
	for _, required := range []string{"DATABASE_URL", "NATS_URL", "LEDGER_JWT_SECRET"} {
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
