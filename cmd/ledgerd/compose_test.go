package main

import (
	"bytes"
	"context"
	"os"
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
		Healthcheck struct {
			Test []string `yaml:"test"`
		} `yaml:"healthcheck"`
		DependsOn map[string]struct {
			Condition string `yaml:"condition"`
		} `yaml:"depends_on"`
		StopGracePeriod string `yaml:"stop_grace_period"`
	} `yaml:"services"`
}

// TestDockerCompose_RunsTheProductionStack checks docker-compose.yml by
// reading it, since no container engine runs where the tests do: the three
// services exist with health checks, ledgerd waits for healthy dependencies,
// NATS runs JetStream, and every variable given to ledgerd is one it reads.
func TestDockerCompose_RunsTheProductionStack(t *testing.T) {
	raw, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatalf("read docker-compose.yml: %v", err)
	}
	var c compose
	if err := yaml.Unmarshal(raw, &c); err != nil {
		t.Fatalf("parse docker-compose.yml: %v", err)
	}
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
