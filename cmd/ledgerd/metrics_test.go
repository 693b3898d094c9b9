package main

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/resolutionflow/ledgerd/internal/pgtest"
)

// scrape gets url without a token and returns its status and body.
func scrape(tb testing.TB, url string) (int, string) {
	tb.Helper()
	resp, err := http.Get(url)
	if err != nil {
		tb.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("GET %s: read body: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// TestServe_MetricsOnTheAPIPortByDefault checks that serve answers
// /metrics on the API's port without a token, with the checkpoints'
// series the scrape reads from the store.
func TestServe_MetricsOnTheAPIPortByDefault(t *testing.T) {
	base, _ := startServe(t)
	status, body := scrape(t, base+"/metrics")
	if status != http.StatusOK {
		t.Fatalf("GET /metrics: %d, want 200", status)
	}
	for _, series := range []string{
		`ledger_http_requests_total{method="GET",route="/healthz",status="200"}`,
		`ledger_checkpoint_lag_events{name="handoffs"}`,
		`ledger_checkpoint_position{name="relay.nats"}`,
		"ledger_relay_degraded ",
		"go_goroutines ",
	} {
		if !strings.Contains(body, series) {
			t.Errorf("/metrics has no %s", series)
		}
	}
}

// TestServe_MetricsAddrMovesMetrics checks that with --metrics-addr,
// /metrics is served there, without a token, and no longer on the API's
// port.
func TestServe_MetricsAddrMovesMetrics(t *testing.T) {
	metricsAddr := freeAddr(t)
	base, _ := startServe(t, "--metrics-addr", metricsAddr)
	if status, _ := scrape(t, base+"/metrics"); status != http.StatusNotFound {
		t.Errorf("GET /metrics on the API's port: %d, want 404", status)
	}
	status, body := scrape(t, "http://"+metricsAddr+"/metrics")
	if status != http.StatusOK || !strings.Contains(body, "go_goroutines ") {
		t.Fatalf("GET /metrics on --metrics-addr: %d %.200s", status, body)
	}
	if status, _ := scrape(t, "http://"+metricsAddr+"/healthz"); status != http.StatusNotFound {
		t.Errorf("GET /healthz on --metrics-addr: %d, want 404", status)
	}
}

// TestServe_MetricsOfThePostgresPool checks that serve on PostgreSQL
// reports its pool's statistics.
func TestServe_MetricsOfThePostgresPool(t *testing.T) {
	base, _ := startServe(t, "--database-url", pgtest.NewDatabase(t), "--embedded-nats", "--jwt-secret", testSecret, "--audit-key-file", auditKeyFileFor(t), "--master-key-file", masterKeyFileFor(t))
	_, body := scrape(t, base+"/metrics")
	for _, series := range []string{`ledger_db_pool_connections{state="idle"}`, "ledger_db_pool_max_connections 32", "ledger_db_pool_acquires_total "} {
		if !strings.Contains(body, series) {
			t.Errorf("/metrics has no %s", series)
		}
	}
}
