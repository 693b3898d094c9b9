package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/resolutionflow/ledgerd/bench"
	"github.com/resolutionflow/ledgerd/internal/natstest"
	"github.com/resolutionflow/ledgerd/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// tiny is a run of a few seconds: every figure, tiny sizes, logging
// through tb.
func tiny(tb testing.TB) bench.Config {
	return bench.Config{
		Logger:         slog.New(slog.NewTextHandler(tb.Output(), nil)),
		Duration:       100 * time.Millisecond,
		Writers:        []int{1, 4},
		Clients:        []int{4},
		Claimers:       8,
		RaceRounds:     3,
		LogEvents:      1_000,
		LagEvents:      50,
		Growth:         []int64{500, 1_500, 3_000},
		GrowthReads:    10,
		CatchUpTimeout: time.Minute,
	}
}

// TestRun_Postgres runs the benchmark on a scratch schema in a PostgreSQL
// database, publishing to a NATS server, and checks that every figure is
// there and sane, and that nothing the run made is left behind.
func TestRun_Postgres(t *testing.T) {
	dbURL := pgtest.NewEmptyDatabase(t)
	ns := natstest.Start(t)
	target, err := bench.Open(t.Context(), bench.Options{DatabaseURL: dbURL, NATSURL: ns.URL()})
	if err != nil {
		t.Fatal(err)
	}
	report, err := bench.Run(t.Context(), target, tiny(t), nil)
	stream := target.Stream
	target.Close()
	if err != nil {
		t.Fatal(err)
	}
	checkReport(t, report, "postgres", tiny(t))

	pool := pgtest.Pool(t, dbURL, 2)
	var schemas int
	if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'ledgerd_bench_%'`).Scan(&schemas); err != nil {
		t.Fatal(err)
	}
	if schemas != 0 {
		t.Fatalf("%d scratch schemas left after the run", schemas)
	}
	checkNoStream(t, ns.URL(), stream)
}

// TestRun_Embedded runs the benchmark in the embedded mode.
func TestRun_Embedded(t *testing.T) {
	target, err := bench.Open(t.Context(), bench.Options{})
	if err != nil {
		t.Fatal(err)
	}
	report, err := bench.Run(t.Context(), target, tiny(t), nil)
	target.Close()
	if err != nil {
		t.Fatal(err)
	}
	checkReport(t, report, "embedded", tiny(t))
}

// TestRun_Only runs one group of figures and checks that only its figures
// are in the report.
func TestRun_Only(t *testing.T) {
	target, err := bench.Open(t.Context(), bench.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := tiny(t)
	cfg.Only = []string{"append", "lag"}
	report, err := bench.Run(t.Context(), target, cfg, nil)
	target.Close()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]int{}
	for _, f := range report.Figures {
		names[f.Name]++
	}
	if len(names) != 2 || names["append"] != 2*len(cfg.Writers) || names["publish_lag"] != 1 {
		t.Fatalf("figures %v, want only append and publish_lag", names)
	}
	cfg.Only = []string{"nothing"}
	if err := cfg.Validate(); err == nil {
		t.Fatal("Validate took an unknown group")
	}
}

// TestOpen_RefusesADatabaseWithALedger checks that a database holding a
// ledger is refused unless ScratchOK, and that with it the ledger's own
// tables are left as they were.
func TestOpen_RefusesADatabaseWithALedger(t *testing.T) {
	dbURL := pgtest.NewDatabase(t) // migrated: it holds a ledger
	ns := natstest.Start(t)
	_, err := bench.Open(t.Context(), bench.Options{DatabaseURL: dbURL, NATSURL: ns.URL()})
	if !errors.Is(err, bench.ErrHoldsLedger) {
		t.Fatalf("Open on a database with a ledger: %v, want ErrHoldsLedger", err)
	}
	pool := pgtest.Pool(t, dbURL, 2)
	if n := countSchemas(t, pool); n != 0 {
		t.Fatalf("a refused Open left %d scratch schemas", n)
	}
	target, err := bench.Open(t.Context(), bench.Options{DatabaseURL: dbURL, NATSURL: ns.URL(), ScratchOK: true})
	if err != nil {
		t.Fatalf("Open with ScratchOK: %v", err)
	}
	if n := countSchemas(t, pool); n != 1 {
		t.Fatalf("%d scratch schemas during the run, want 1", n)
	}
	target.Close()
	var events int
	if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM public.events`).Scan(&events); err != nil {
		t.Fatal(err)
	}
	if events != 0 || countSchemas(t, pool) != 0 {
		t.Fatalf("after the run: %d events in the ledger's own log, %d scratch schemas; want 0 and 0", events, countSchemas(t, pool))
	}
}

// TestOpen_RefusesATakenStream checks that a NATS server with a stream on
// the ledger's subjects is refused: the run's events would go into it.
func TestOpen_RefusesATakenStream(t *testing.T) {
	ns := natstest.Start(t)
	js := natstest.JetStream(t, ns.URL())
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "HANDOFFS", Subjects: []string{"handoff.>"}}); err != nil {
		t.Fatal(err)
	}
	_, err := bench.Open(t.Context(), bench.Options{NATSURL: ns.URL()})
	if !errors.Is(err, bench.ErrStreamTaken) {
		t.Fatalf("Open on a NATS server with a ledger stream: %v, want ErrStreamTaken", err)
	}
}

func countSchemas(tb testing.TB, pool *pgxpool.Pool) int {
	tb.Helper()
	var n int
	if err := pool.QueryRow(tb.Context(), `SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'ledgerd_bench_%'`).Scan(&n); err != nil {
		tb.Fatal(err)
	}
	return n
}

func checkNoStream(tb testing.TB, url, stream string) {
	tb.Helper()
	js := natstest.JetStream(tb, url)
	ctx, cancel := context.WithTimeout(tb.Context(), 5*time.Second)
	defer cancel()
	if _, err := js.Stream(ctx, stream); !errors.Is(err, jetstream.ErrStreamNotFound) {
		tb.Fatalf("scratch stream %s after the run: %v, want not found", stream, err)
	}
}

// figureFields are the JSON fields of a figure: the schema scripts read.
var figureFields = []string{
	"baseline", "baseline_cpu_us_per_op", "baseline_rate_per_s", "calls", "case", "cpu_us_per_op",
	"log_events", "name", "p50_ms", "p95_ms", "p99_ms", "rate_per_s", "ratio", "unit",
}

// checkReport checks that the report has every figure cfg asks for, each
// sane, and that its JSON has the stable schema.
func checkReport(tb testing.TB, r bench.Report, mode string, cfg bench.Config) {
	tb.Helper()
	if r.Schema != bench.SchemaVersion || r.Mode != mode || r.Seconds <= 0 {
		tb.Fatalf("report header: schema %d, mode %q, %v s", r.Schema, r.Mode, r.Seconds)
	}
	want := map[string]int{
		"append":              2 * len(cfg.Writers),
		"read_all":            1,
		"rebuild":             1,
		"rest_escalate_claim": len(cfg.Clients),
		"rest_escalate":       len(cfg.Clients),
		"rest_claim":          len(cfg.Clients),
		"claim_race":          1,
		"claim_race_claim":    1,
		"publish_lag":         1,
		"growth_append":       len(cfg.Growth),
		"growth_queue":        len(cfg.Growth),
		"growth_history":      len(cfg.Growth),
	}
	got := map[string]int{}
	cases := map[string]bool{}
	for _, f := range r.Figures {
		got[f.Name]++
		key := f.Name + " " + f.Case
		if cases[key] {
			tb.Errorf("figure %s twice", key)
		}
		cases[key] = true
		if f.Calls <= 0 || f.Rate <= 0 || f.P50 <= 0 || f.P50 > f.P95 || f.P95 > f.P99 || f.LogEvents <= 0 || f.Unit == "" {
			tb.Errorf("figure %s is not sane: %+v", key, f)
		}
		if f.Baseline != "" && (f.BaselineRate <= 0 || f.Ratio <= 0) {
			tb.Errorf("figure %s names a baseline but has no baseline figure: %+v", key, f)
		}
		if (f.Name == "append" || f.Name == "growth_append" || f.Name == "rest_escalate_claim") && f.Baseline == "" {
			tb.Errorf("figure %s has no baseline", key)
		}
	}
	for name, n := range want {
		if got[name] != n {
			tb.Errorf("%d figures %s, want %d", got[name], name, n)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			tb.Errorf("unexpected figure %s", name)
		}
	}
	// Race rounds: exactly one winner each, or Run fails; every round is
	// counted.
	for _, f := range r.Figures {
		if f.Name == "claim_race" && f.Calls != cfg.RaceRounds {
			tb.Errorf("claim race: %d rounds, want %d", f.Calls, cfg.RaceRounds)
		}
		if f.Name == "claim_race_claim" && f.Calls != cfg.RaceRounds*cfg.Claimers {
			tb.Errorf("claim race: %d claims, want %d", f.Calls, cfg.RaceRounds*cfg.Claimers)
		}
		if f.Name == "publish_lag" && f.Calls != cfg.LagEvents {
			tb.Errorf("publish lag over %d events, want %d", f.Calls, cfg.LagEvents)
		}
	}
	var buf bytes.Buffer
	if err := r.WriteJSON(&buf); err != nil {
		tb.Fatal(err)
	}
	var doc struct {
		Figures []map[string]any `json:"figures"`
	}
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		tb.Fatal(err)
	}
	for _, f := range doc.Figures {
		keys := make([]string, 0, len(f))
		for k := range f {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if !slices.Equal(keys, figureFields) {
			tb.Fatalf("figure fields %v, want %v", keys, figureFields)
		}
	}
	buf.Reset()
	if err := r.WriteTable(&buf); err != nil {
		tb.Fatal(err)
	}
	for name := range want {
		if !strings.Contains(buf.String(), name) {
			tb.Errorf("table has no %s:\n%s", name, buf.String())
		}
	}
	if tb.Failed() {
		tb.Logf("report:\n%s", fmt.Sprint(buf.String()))
	}
}
