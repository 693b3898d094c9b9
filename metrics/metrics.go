// Package metrics defines the ledger's Prometheus metrics and serves them.
// Each process makes one Metrics with its own registry (never the global
// one), so that several servers can run in one test binary. The packages
// that record take a *Metrics and record nothing when it is nil.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Outcome is how a command ended, the outcome label of
// ledger_commands_total.
type Outcome string

// The outcomes of a command.
const (
	// Created: a park or escalate appended its handoff.
	Created Outcome = "created"
	// Claimed: a claim appended its event.
	Claimed Outcome = "claimed"
	// Withdrawn: a withdraw appended its event.
	Withdrawn Outcome = "withdrawn"
	// Erased: an erasure destroyed a session's data key and appended its event.
	Erased Outcome = "erased"
	// RaceLost: a claim (or withdraw) found the handoff already claimed.
	RaceLost Outcome = "race_lost"
	// Rejected: a rule of the domain refused the command.
	Rejected Outcome = "rejected"
	// Busy: the session changed under the command on each of its tries.
	Busy Outcome = "busy"
	// Failed: the command failed for another reason, such as the
	// database being unreachable.
	Failed Outcome = "failed"
)

// Metrics holds the ledger's metrics and the registry that serves them.
type Metrics struct {
	registry  *prometheus.Registry
	requests  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	commands  *prometheus.CounterVec
	appends   prometheus.Counter
	conflicts prometheus.Counter
	retries   prometheus.Counter
	replays   prometheus.Counter
}

// New returns the metrics of one process, with the Go runtime's and the
// process's collectors registered.
func New() *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ledger_http_requests_total",
			Help: "HTTP requests answered, by method, route template and status.",
		}, []string{"method", "route", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ledger_http_request_duration_seconds",
			Help:    "Time from a request's arrival to its answer, by method, route template and status.",
			Buckets: prometheus.DefBuckets,
		}, []string{"method", "route", "status"}),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ledger_commands_total",
			Help: "Commands run, by type (park, escalate, claim, withdraw) and outcome.",
		}, []string{"type", "outcome"}),
		appends: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ledger_appends_total",
			Help: "Appends to the event log that committed.",
		}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ledger_append_conflicts_total",
			Help: "Appends refused because another append to the same session committed first.",
		}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ledger_command_retries_total",
			Help: "Commands decided again after a version conflict.",
		}),
		replays: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ledger_idempotency_replays_total",
			Help: "Requests answered with the kept response of an earlier request with the same Idempotency-Key.",
		}),
	}
	m.registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.requests, m.latency, m.commands, m.appends, m.conflicts, m.retries, m.replays,
	)
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{Registry: m.registry})
}

// Register adds a collector, such as Pool's or Checkpoints'.
func (m *Metrics) Register(c prometheus.Collector) error {
	return m.registry.Register(c)
}

// Request records an answered request. route is the route's template
// (/ai-sessions/:session_id/handoffs), never the path, so that ids do not
// multiply the series.
func (m *Metrics) Request(method, route string, status int, took time.Duration) {
	if m == nil {
		return
	}
	code := strconv.Itoa(status)
	m.requests.WithLabelValues(method, route, code).Inc()
	m.latency.WithLabelValues(method, route, code).Observe(took.Seconds())
}

// Command records a command of type typ that ended with outcome.
func (m *Metrics) Command(typ string, outcome Outcome) {
	if m == nil {
		return
	}
	m.commands.WithLabelValues(typ, string(outcome)).Inc()
}

// Appended records an append that committed.
func (m *Metrics) Appended() {
	if m != nil {
		m.appends.Inc()
	}
}

// Conflict records an append refused for a version conflict.
func (m *Metrics) Conflict() {
	if m != nil {
		m.conflicts.Inc()
	}
}

// Retry records a command decided again after a conflict.
func (m *Metrics) Retry() {
	if m != nil {
		m.retries.Inc()
	}
}

// Replay records a response replayed for an Idempotency-Key.
func (m *Metrics) Replay() {
	if m != nil {
		m.replays.Inc()
	}
}
