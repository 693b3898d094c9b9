package httpapi_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/resolutionflow/ledgerd/domain"
)

func TestMetrics_Postgres(t *testing.T) { testMetrics(t, newPostgresBackend) }

func TestMetrics_SQLite(t *testing.T) { testMetrics(t, newSQLiteBackend) }

// metricsClaimers is the number of claims of the metrics' claim race.
const metricsClaimers = 16

// testMetrics races claims of one handoff through the API and checks, on
// the /metrics the API serves without a token, that the race-lost counter
// moved by exactly the number of losers and the claimed counter by one,
// that requests are counted by route template and never by path, and
// that an Idempotency-Key retry counts one replay.
func testMetrics(t *testing.T, nb NewBackend) {
	s := startServer(t, nb)
	tm := newTeam()
	tokens := make([]string, metricsClaimers)
	users := make(map[uuid.UUID]bool, metricsClaimers)
	for i := range tokens {
		u := tm.user(domain.RoleEngineer)
		tokens[i], users[u.UserID] = "Bearer "+token(t, u), true
	}
	h := s.escalate(t, tm.user(domain.RoleEngineer), uuid.New())
	results, errs := s.claimAtOnce(h, tokens)
	if err := checkRace(h, results, errs, users); err != nil {
		t.Fatal(err)
	}

	holder := tm.user(domain.RoleEngineer)
	create := as(t, holder, http.MethodPost, createPath(uuid.New()), `{"intent": "park", "engineer_notes": "n"}`).with("Idempotency-Key", "metrics-1")
	s.do(t, create, http.StatusCreated)
	if res := s.do(t, create, http.StatusCreated); res.header.Get("Idempotent-Replayed") != "true" {
		t.Fatal("the retry was not replayed")
	}

	res := s.do(t, request{method: http.MethodGet, path: "/metrics"}, http.StatusOK)
	families := parseMetrics(t, res.body)
	claim := "/ai-sessions/:session_id/handoffs/:handoff_id/claim"
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"ledger_commands_total", map[string]string{"type": "claim", "outcome": "race_lost"}, metricsClaimers - 1},
		{"ledger_commands_total", map[string]string{"type": "claim", "outcome": "claimed"}, 1},
		{"ledger_commands_total", map[string]string{"type": "escalate", "outcome": "created"}, 1},
		{"ledger_commands_total", map[string]string{"type": "park", "outcome": "created"}, 1},
		{"ledger_http_requests_total", map[string]string{"method": "POST", "route": claim, "status": "409"}, metricsClaimers - 1},
		{"ledger_http_requests_total", map[string]string{"method": "POST", "route": claim, "status": "200"}, 1},
		{"ledger_http_request_duration_seconds", map[string]string{"method": "POST", "route": claim, "status": "409"}, metricsClaimers - 1},
		{"ledger_idempotency_replays_total", nil, 1},
	} {
		if got := metricValue(t, families, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if body := string(res.body); strings.Contains(body, h.SessionID.String()) || strings.Contains(body, h.ID.String()) {
		t.Error("a metric's label holds an id from a path")
	}
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total", "ledger_appends_total"} {
		if families[name] == nil {
			t.Errorf("/metrics has no %s", name)
		}
	}
}

// parseMetrics parses a scrape in the Prometheus text format.
func parseMetrics(tb testing.TB, body []byte) map[string]*dto.MetricFamily {
	tb.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		tb.Fatalf("parse /metrics: %v", err)
	}
	return families
}

// metricValue is the value of the series of family name with exactly
// labels: a counter's or a gauge's value, a histogram's count.
func metricValue(tb testing.TB, families map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	tb.Helper()
	f := families[name]
	if f == nil {
		tb.Fatalf("/metrics has no %s", name)
	}
next:
	for _, m := range f.GetMetric() {
		if len(m.GetLabel()) != len(labels) {
			continue
		}
		for _, l := range m.GetLabel() {
			if labels[l.GetName()] != l.GetValue() {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return 0
}
