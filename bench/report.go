package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/resolutionflow/ledgerd/internal/alternate"
)

// SchemaVersion is the version of the JSON report; it changes only when a
// field changes meaning or goes away.
const SchemaVersion = 1

// Report is what a run measured, printed as a table or as JSON.
type Report struct {
	Schema    int       `json:"schema"`
	Mode      string    `json:"mode"`
	REST      string    `json:"rest"`
	StartedAt time.Time `json:"started_at"`
	Seconds   float64   `json:"seconds"`
	Figures   []Figure  `json:"figures"`
}

// Figure is one measurement beside its baseline. Every field is always
// present in the JSON; the baseline's are 0 where a figure has none.
type Figure struct {
	// Name is the figure's kind (append, rest_escalate_claim, claim_race,
	// read_all, rebuild, publish_lag, growth_append, growth_queue,
	// growth_history) and Case its parameters, such as "writers=16
	// streams=new".
	Name string `json:"name"`
	Case string `json:"case"`
	// Unit is what Rate counts per second: "appends", "events",
	// "escalate+claim", "rounds", "reads".
	Unit string `json:"unit"`
	// Calls is how many operations were measured.
	Calls int `json:"calls"`
	// Rate is operations per second; BaselineRate the baseline's in the
	// same run, and Ratio Rate over BaselineRate (1.0: as fast).
	Rate         float64 `json:"rate_per_s"`
	Baseline     string  `json:"baseline"`
	BaselineRate float64 `json:"baseline_rate_per_s"`
	Ratio        float64 `json:"ratio"`
	// P50, P95, P99 are the latency of one operation in milliseconds.
	P50 float64 `json:"p50_ms"`
	P95 float64 `json:"p95_ms"`
	P99 float64 `json:"p99_ms"`
	// CPUPerOp and BaselineCPUPerOp are the processor time the whole
	// machine spent per operation, in microseconds, where /proc/stat
	// tells it; 0 otherwise.
	CPUPerOp         float64 `json:"cpu_us_per_op"`
	BaselineCPUPerOp float64 `json:"baseline_cpu_us_per_op"`
	// LogEvents is how many events the log held when the figure was
	// measured.
	LogEvents int64 `json:"log_events"`
}

// latencies sets the figure's percentiles from sorted latencies.
func (f *Figure) latencies(sorted []time.Duration) {
	f.P50 = ms(alternate.Percentile(sorted, 0.50))
	f.P95 = ms(alternate.Percentile(sorted, 0.95))
	f.P99 = ms(alternate.Percentile(sorted, 0.99))
}

// alternated fills the figure from an alternating run.
func (f *Figure) alternated(res alternate.Result) {
	f.Calls = res.Calls
	f.Rate = res.Rate()
	f.BaselineRate = res.BaselineRate()
	f.Ratio = res.Ratio()
	f.latencies(res.Latencies)
	if res.CPUKnown && res.Calls > 0 {
		f.CPUPerOp = float64(res.OpCPU.Microseconds()) / float64(res.Calls)
		f.BaselineCPUPerOp = float64(res.BaselineCPU.Microseconds()) / float64(res.Calls)
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// WriteJSON writes the report as indented JSON.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes the report as a table for a person.
func (r Report) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "ledgerd bench: %s store, REST %s, %.0f s\n\n", r.Mode, r.REST, r.Seconds)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "figure\tcase\tlog events\trate/s\tbaseline/s\tratio\tp50 ms\tp95 ms\tp99 ms\t")
	for _, f := range r.Figures {
		base, ratio := "-", "-"
		if f.BaselineRate > 0 {
			base, ratio = fmt.Sprintf("%.0f", f.BaselineRate), fmt.Sprintf("%.2f", f.Ratio)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.0f %s\t%s\t%s\t%.2f\t%.2f\t%.2f\t\n",
			f.Name, f.Case, f.LogEvents, f.Rate, f.Unit, base, ratio, f.P50, f.P95, f.P99)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nbaselines:")
	seen := map[string]bool{}
	for _, f := range r.Figures {
		if f.Baseline != "" && !seen[f.Baseline] {
			seen[f.Baseline] = true
			fmt.Fprintf(w, "  %s\n", f.Baseline)
		}
	}
	return nil
}

// progress prints one updating line on a terminal, and nothing elsewhere.
type progress struct {
	w    io.Writer
	mu   sync.Mutex
	what string
	last time.Time
}

func newProgress(w io.Writer) *progress {
	f, ok := w.(*os.File)
	if !ok {
		return &progress{}
	}
	if info, err := f.Stat(); err != nil || info.Mode()&os.ModeCharDevice == 0 {
		return &progress{}
	}
	return &progress{w: w}
}

func (p *progress) start(what string) {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.what = what
	fmt.Fprintf(p.w, "\r\033[K%s", what)
}

func (p *progress) update(done, total int64) {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if time.Since(p.last) < 200*time.Millisecond {
		return
	}
	p.last = time.Now()
	fmt.Fprintf(p.w, "\r\033[K%s: %d%%", p.what, min(100, done*100/max(total, 1)))
}

func (p *progress) done() {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprint(p.w, "\r\033[K")
}

// shortCase trims a case for the table.
func shortCase(parts ...string) string { return strings.Join(parts, " ") }
