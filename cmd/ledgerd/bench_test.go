package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/resolutionflow/ledgerd/internal/natstest"
	"github.com/resolutionflow/ledgerd/internal/pgtest"
)

// tinyBench are the flags of a run of a few seconds.
var tinyBench = []string{
	"--json", "--quick", "--duration", "50ms", "--writers", "2", "--clients", "2", "--claimers", "4",
	"--race-rounds", "2", "--log-events", "500", "--lag-events", "20", "--growth", "200,400,800", "--growth-reads", "5",
}

// runBench runs `ledgerd bench args` and returns the report it printed
// and the exit status.
func runBench(tb testing.TB, args ...string) (map[string]any, int, string) {
	tb.Helper()
	var out, errOut bytes.Buffer
	err := run(tb.Context(), append([]string{"bench"}, args...), &out, &errOut)
	code := 0
	if err != nil {
		code = exitCode(err)
		return nil, code, err.Error() + "\n" + errOut.String()
	}
	var report map[string]any
	if err := json.Unmarshal(out.Bytes(), &report); err != nil {
		tb.Fatalf("bench --json printed no JSON (%v):\n%s", err, out.String())
	}
	return report, code, errOut.String()
}

// checkBenchReport checks the report's header and that it has figures of
// every kind.
func checkBenchReport(tb testing.TB, report map[string]any, mode string) {
	tb.Helper()
	if report["schema"] != float64(1) || report["mode"] != mode {
		tb.Fatalf("report schema %v, mode %v; want 1, %s", report["schema"], report["mode"], mode)
	}
	figures, _ := report["figures"].([]any)
	names := map[string]bool{}
	for _, f := range figures {
		fig, _ := f.(map[string]any)
		names[fmt.Sprint(fig["name"])] = true
		if rate, _ := fig["rate_per_s"].(float64); rate <= 0 {
			tb.Errorf("figure %v %v: rate %v", fig["name"], fig["case"], fig["rate_per_s"])
		}
	}
	for _, want := range []string{"append", "read_all", "rebuild", "rest_escalate_claim", "claim_race", "publish_lag", "growth_append", "growth_queue", "growth_history"} {
		if !names[want] {
			tb.Errorf("no figure %s in %v", want, names)
		}
	}
}

// TestBench_Embedded runs a tiny `ledgerd bench --json` in the embedded
// mode.
func TestBench_Embedded(t *testing.T) {
	report, code, logs := runBench(t, tinyBench...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, logs)
	}
	checkBenchReport(t, report, "embedded")
}

// TestBench_PostgresAndRemoteREST runs a tiny `ledgerd bench` on
// PostgreSQL and NATS, with the REST figures against a running `ledgerd
// serve`.
func TestBench_PostgresAndRemoteREST(t *testing.T) {
	secretFile := filepath.Join(t.TempDir(), "jwt-secret")
	if err := os.WriteFile(secretFile, []byte(strings.Repeat("s", 40)), 0o600); err != nil {
		t.Fatal(err)
	}
	base, stop := startServe(t, "--jwt-secret-file", secretFile)
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("serve: %v", err)
		}
	})

	ns := natstest.Start(t)
	args := append([]string{"--database-url", pgtest.NewEmptyDatabase(t), "--nats-url", ns.URL(),
		"--url", base, "--jwt-secret-file", secretFile}, tinyBench...)
	report, code, logs := runBench(t, args...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, logs)
	}
	checkBenchReport(t, report, "postgres")
	if report["rest"] != base {
		t.Fatalf("REST ran against %v, want the running server", report["rest"])
	}
}

// TestBench_RefusesALedgerAndBadFlags checks the exit status 2 of a
// database that holds a ledger without --scratch-ok and of bad flags.
func TestBench_RefusesALedgerAndBadFlags(t *testing.T) {
	ns := natstest.Start(t)
	for name, args := range map[string][]string{
		"Ledger":           {"--database-url", pgtest.NewDatabase(t), "--nats-url", ns.URL()},
		"BadWriters":       {"--writers", "1,x"},
		"NoWriters":        {"--writers", "0"},
		"ShrinkingGrowth":  {"--growth", "100,10"},
		"URLWithoutSecret": {"--url", "http://127.0.0.1:1"},
		"Unknown":          {"--no-such-flag"},
		"UnknownGroup":     {"--only", "append,everything"},
	} {
		t.Run(name, func(t *testing.T) {
			_, code, logs := runBench(t, args...)
			if code != 2 {
				t.Fatalf("exit %d, want 2: %s", code, logs)
			}
		})
	}
}
