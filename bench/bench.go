// Package bench is `ledgerd bench`: the benchmark a user runs against their
// own deployment, as pgbench and `nats bench` are for theirs. It makes a
// scratch ledger (a schema of its own in the user's PostgreSQL database, or
// an embedded store in a temporary directory: Target) and measures, each
// beside a baseline run in the same process, the append, the REST escalate
// and claim, the claim race, reading and rebuilding the log, the relay's
// publish lag, and how appends and reads hold up as the log grows; then it
// removes what it made. Figures that alternate with their baseline use
// internal/alternate, the method of the Go benchmarks.
package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/oklog/ulid/v2"

	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/internal/alternate"
	"github.com/resolutionflow/ledgerd/leader"
	"github.com/resolutionflow/ledgerd/projections"
	"github.com/resolutionflow/ledgerd/relay"
)

// Config says what to measure and for how long.
type Config struct {
	// Duration is how long each figure that alternates with its baseline
	// runs (both kinds together).
	Duration time.Duration
	// Writers are the numbers of concurrent appenders measured.
	Writers []int
	// Clients are the numbers of concurrent REST clients measured.
	Clients []int
	// Claimers is how many clients race to claim one handoff, in
	// RaceRounds rounds.
	Claimers   int
	RaceRounds int
	// LogEvents is the size of the log read and rebuilt.
	LogEvents int64
	// LagEvents is how many events the publish lag is measured on.
	LagEvents int
	// Growth are the log sizes at which appends and reads are measured,
	// in increasing order; GrowthReads how many reads of each kind.
	Growth      []int64
	GrowthReads int
	// CatchUpTimeout bounds each wait for the projector and the relay to
	// reach the head of the log.
	CatchUpTimeout time.Duration
	// REST is where the REST figures run: a running ledgerd's base URL
	// (with JWTSecret, its token secret), or nil to start one in this
	// process on the scratch ledger.
	REST *Remote
	// Only, when not empty, limits the run to these groups of figures
	// (Groups).
	Only []string
	// Logger receives the workers' logs; slog.Default() when nil.
	Logger *slog.Logger
}

// Groups are the groups of figures Config.Only can choose: growth
// (growth_*), read (read_all, rebuild), append, rest (rest_*, claim_race*)
// and lag (publish_lag).
var Groups = []string{"growth", "read", "append", "rest", "lag"}

// runs reports whether the group of figures is to run.
func (c Config) runs(group string) bool {
	return len(c.Only) == 0 || slices.Contains(c.Only, group)
}

// Remote is a running ledgerd.
type Remote struct {
	URL       string
	JWTSecret []byte
}

// DefaultConfig is a full run: a few minutes on PostgreSQL, most of them
// spent generating the million-event log of the growth figures.
func DefaultConfig() Config {
	return Config{
		Duration:       5 * time.Second,
		Writers:        []int{1, 4, 16},
		Clients:        []int{16, 64},
		Claimers:       64,
		RaceRounds:     50,
		LogEvents:      100_000,
		LagEvents:      5_000,
		Growth:         []int64{10_000, 100_000, 1_000_000},
		GrowthReads:    500,
		CatchUpTimeout: 10 * time.Minute,
	}
}

// QuickConfig is a run of seconds with small sizes, to see that the
// figures are there and roughly where; not for comparing. It runs the
// same writers, clients and claimers as DefaultConfig.
func QuickConfig() Config {
	c := DefaultConfig()
	c.Duration = 500 * time.Millisecond
	c.RaceRounds = 5
	c.LogEvents, c.LagEvents = 2_000, 200
	c.Growth, c.GrowthReads = []int64{1_000, 5_000, 10_000}, 50
	c.CatchUpTimeout = 2 * time.Minute
	return c
}

// Validate refuses a configuration that cannot run.
func (c Config) Validate() error {
	switch {
	case c.Duration <= 0:
		return fmt.Errorf("duration must be positive, got %s", c.Duration)
	case len(c.Writers) == 0 || len(c.Clients) == 0:
		return fmt.Errorf("give at least one writer count and one client count")
	case c.Claimers < 2 || c.Claimers > 1024:
		return fmt.Errorf("claimers must be from 2 to 1024, got %d", c.Claimers)
	case c.RaceRounds < 1:
		return fmt.Errorf("race rounds must be at least 1, got %d", c.RaceRounds)
	case c.LogEvents < 1 || c.LagEvents < 1 || c.GrowthReads < 1:
		return fmt.Errorf("log events, lag events and growth reads must be positive")
	case c.CatchUpTimeout <= 0:
		return fmt.Errorf("catch-up timeout must be positive, got %s", c.CatchUpTimeout)
	}
	for _, g := range c.Only {
		if !slices.Contains(Groups, g) {
			return fmt.Errorf("no group of figures %q; the groups are %v", g, Groups)
		}
	}
	for _, n := range append(append([]int{}, c.Writers...), c.Clients...) {
		if n < 1 || n > 1024 {
			return fmt.Errorf("writer and client counts must be from 1 to 1024, got %d", n)
		}
	}
	for i, n := range c.Growth {
		if n < 1 || (i > 0 && n <= c.Growth[i-1]) {
			return fmt.Errorf("growth sizes must be positive and increasing, got %v", c.Growth)
		}
	}
	return nil
}

// Run measures every figure on t and returns the report; progress, when it
// is a terminal, gets a line saying what runs. It stops at the first
// failure, or when ctx ends, having stopped the workers it started.
func Run(ctx context.Context, t *Target, cfg Config, progressTo io.Writer) (Report, error) {
	if err := cfg.Validate(); err != nil {
		return Report{}, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	r := &runner{t: t, cfg: cfg, p: newProgress(progressTo)}
	r.report = Report{Schema: SchemaVersion, Mode: t.Mode, REST: "in-process", StartedAt: time.Now().UTC()}
	if cfg.REST != nil {
		r.report.REST = cfg.REST.URL
	}
	err := r.run(ctx)
	r.report.Seconds = time.Since(r.report.StartedAt).Seconds()
	r.p.done()
	return r.report, err
}

type runner struct {
	t      *Target
	cfg    Config
	p      *progress
	report Report

	projector   *projections.Projector
	stopWorkers func()
	// readDone is set once read_all and rebuild are measured.
	readDone bool
	// filler owns the generated sessions.
	filler tenant
}

func (r *runner) add(f Figure) { r.report.Figures = append(r.report.Figures, f) }

func (r *runner) run(ctx context.Context) error {
	r.filler = newTenant()
	defer r.pause()
	// The growth figures come first, while the log is small; the log read
	// and rebuilt is the one they grew.
	if r.cfg.runs("growth") {
		if err := r.growth(ctx); err != nil {
			return err
		}
	}
	if r.cfg.runs("read") && !r.readDone {
		if err := fill(ctx, r.t, r.filler, r.cfg.LogEvents, r.p); err != nil {
			return err
		}
		if err := r.readAndRebuild(ctx); err != nil {
			return err
		}
	}
	if r.cfg.runs("append") {
		if err := r.appends(ctx); err != nil {
			return err
		}
	}
	if !r.cfg.runs("rest") && !r.cfg.runs("lag") {
		return nil
	}
	// The REST figures and the publish lag run with the projector and the
	// relay, as a server does.
	if err := r.skipRelay(ctx); err != nil {
		return err
	}
	if err := r.resume(ctx); err != nil {
		return err
	}
	if err := r.catchUp(ctx); err != nil {
		return err
	}
	if r.cfg.runs("rest") {
		if err := r.rest(ctx); err != nil {
			return err
		}
	}
	if r.cfg.runs("lag") {
		return r.publishLag(ctx)
	}
	return nil
}

// baselineOp is the plain single-row insert every append is compared
// with, on a new stream each call.
func (r *runner) baselineOp() alternate.Op {
	prefix := ulid.Make().String()
	var n atomic.Int64
	return func(ctx context.Context, _ int) error {
		return r.t.db.exec(ctx, alternate.BaselineInsert, prefix+"-"+strconv.FormatInt(n.Add(1), 10), alternate.BaselineEvent)
	}
}

const baselineInsert = "single-row INSERT into a scratch table with UNIQUE(stream, version), a new stream each"

// appends measures the append, as the command handler makes it (one
// event, sealed under its session's data key, AppendKeyed without reading
// back; a new session's key inserted by the same statement), to new and to
// existing streams.
func (r *runner) appends(ctx context.Context) error {
	tn := newTenant()
	for _, writers := range r.cfg.Writers {
		for _, kind := range []string{"new", "existing"} {
			r.p.start(fmt.Sprintf("append, %d writers, %s streams", writers, kind))
			op, err := r.appendOp(ctx, tn, writers, kind)
			if err != nil {
				return err
			}
			res, err := alternate.Run(ctx, alternate.Config{Workers: writers, Duration: r.cfg.Duration}, r.baselineOp(), op, nil)
			if err != nil {
				return fmt.Errorf("append, %d writers, %s streams: %w", writers, kind, err)
			}
			f := Figure{Name: "append", Case: shortCase("writers="+strconv.Itoa(writers), "streams="+kind), Unit: "appends", Baseline: baselineInsert}
			f.alternated(res)
			f.LogEvents = r.head(ctx)
			r.add(f)
		}
	}
	return nil
}

// appendOp appends one event: to a new session each call, or to the
// worker's own session, which has events already.
func (r *runner) appendOp(ctx context.Context, tn tenant, writers int, kind string) (alternate.Op, error) {
	if kind == "new" {
		return func(ctx context.Context, _ int) error {
			s := tn.session()
			e, err := s.next()
			if err != nil {
				return err
			}
			return s.append(ctx, r.t, []eventstore.NewEvent{e})
		}, nil
	}
	own := make([]*session, writers)
	for w := range own {
		own[w] = tn.session()
		e, err := own[w].next()
		if err == nil {
			err = own[w].append(ctx, r.t, []eventstore.NewEvent{e})
		}
		if err != nil {
			return nil, fmt.Errorf("create the existing streams: %w", err)
		}
	}
	return func(ctx context.Context, w int) error {
		s := own[w]
		e, err := s.next()
		if err != nil {
			return err
		}
		return s.append(ctx, r.t, []eventstore.NewEvent{e})
	}, nil
}

// head returns the position of the log's last event, 0 when it cannot
// tell.
func (r *runner) head(ctx context.Context) int64 {
	h, err := r.t.Log.Head(ctx)
	if err != nil {
		return 0
	}
	return h
}

// readPage is how many events one read of the whole log asks for.
const readPage = 1000

// readPasses is how many times the log and its baseline are read.
const readPasses = 3

// readAndRebuild generates a log of LogEvents events, reads it whole
// (ReadAll, in pages) alternating with a plain read of as many rows of a
// scratch table, and rebuilds the read models from it.
func (r *runner) readAndRebuild(ctx context.Context) error {
	if err := fill(ctx, r.t, r.filler, r.cfg.LogEvents, r.p); err != nil {
		return err
	}
	head, err := r.t.Log.Head(ctx)
	if err != nil {
		return fmt.Errorf("read the head of the log: %w", err)
	}
	r.p.start("reading the log")
	if err := r.t.db.fillScan(ctx, int(head)); err != nil {
		return fmt.Errorf("fill the scan table: %w", err)
	}
	var readTime, scanTime time.Duration
	var pages []time.Duration
	for range readPasses {
		start := time.Now()
		n, err := r.t.db.countRows(ctx)
		if err != nil {
			return fmt.Errorf("read the scan table: %w", err)
		}
		if int64(n) != head {
			return fmt.Errorf("read %d rows of the scan table, want %d", n, head)
		}
		scanTime += time.Since(start)
		start = time.Now()
		read := int64(0)
		for after := int64(0); after < head; {
			t := time.Now()
			events, err := r.t.Log.ReadAll(ctx, after, readPage)
			if err != nil {
				return fmt.Errorf("read the log after %d: %w", after, err)
			}
			if len(events) == 0 {
				return fmt.Errorf("the log ends at %d, before its head %d", after, head)
			}
			pages = append(pages, time.Since(t))
			after = events[len(events)-1].Position
			read += int64(len(events))
		}
		readTime += time.Since(start)
		if read != head {
			return fmt.Errorf("read %d events of a log of %d", read, head)
		}
	}
	slices.Sort(pages)
	events := int(head) * readPasses
	readAll := Figure{Name: "read_all", Case: fmt.Sprintf("pages=%d", readPage), Unit: "events", Calls: events,
		Rate: rate(events, readTime), Baseline: "one SELECT of as many rows of a scratch table", BaselineRate: rate(events, scanTime), LogEvents: head}
	readAll.Ratio = readAll.Rate / readAll.BaselineRate
	readAll.latencies(pages)
	r.add(readAll)

	r.p.start("rebuilding the read models")
	start := time.Now()
	if err := projections.Rebuild(ctx, r.t.Log, r.t.Views); err != nil {
		return err
	}
	took := time.Since(start)
	rebuild := Figure{Name: "rebuild", Case: "whole log", Unit: "events", Calls: int(head), Rate: rate(int(head), took),
		Baseline: "read_all: reading the same log", BaselineRate: readAll.Rate, LogEvents: head}
	rebuild.Ratio = rebuild.Rate / rebuild.BaselineRate
	rebuild.latencies([]time.Duration{took})
	r.add(rebuild)
	r.readDone = true
	return nil
}

func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// rebuild brings the read models to the head of the log after a fill,
// faster than the projector's catching up would.
func (r *runner) rebuild(ctx context.Context) error {
	r.p.start("rebuilding the read models")
	if err := projections.Rebuild(ctx, r.t.Log, r.t.Views); err != nil {
		return err
	}
	return nil
}

// skipRelay moves the relay's checkpoint to the head of the log, while the
// relay is stopped: the generated history and the appends of the append
// figures are not published. Publishing them would take the relay
// minutes and measure nothing the publish lag needs; the relay publishes
// what the REST figures and the lag figure write. The relay takes the
// gap for a stream that lacks events it published, which it logs
// (relayLogHandler drops that message).
func (r *runner) skipRelay(ctx context.Context) error {
	head, err := r.t.Log.Head(ctx)
	if err != nil {
		return fmt.Errorf("read the head of the log: %w", err)
	}
	cp, err := r.t.Views.Checkpoint(ctx, relay.Name)
	if err != nil {
		return fmt.Errorf("read the relay's checkpoint: %w", err)
	}
	if cp >= head {
		return nil
	}
	if err := r.t.Views.Move(ctx, leader.Fence{}, relay.Name, cp, head); err != nil {
		return fmt.Errorf("move the relay's checkpoint to %d: %w", head, err)
	}
	return nil
}

// relayLogHandler drops the relay's error about a stream that lacks
// events, which skipRelay causes on purpose.
type relayLogHandler struct{ slog.Handler }

func (h relayLogHandler) Handle(ctx context.Context, rec slog.Record) error {
	if strings.HasPrefix(rec.Message, "the stream lacks events") {
		return nil
	}
	return h.Handler.Handle(ctx, rec)
}

func (h relayLogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return relayLogHandler{h.Handler.WithAttrs(attrs)}
}

func (h relayLogHandler) WithGroup(name string) slog.Handler {
	return relayLogHandler{h.Handler.WithGroup(name)}
}

// resume runs the projector and the relay, as a server does, until pause.
// The append figures run without them, as the store's own benchmarks do.
func (r *runner) resume(ctx context.Context) error {
	if r.stopWorkers != nil {
		return nil
	}
	r.projector = projections.NewProjector(r.t.Log, r.t.Views, r.t.Locker, r.t.Log.Appended, r.cfg.Logger)
	relayLogger := slog.New(relayLogHandler{r.cfg.Logger.Handler()})
	rl, err := relay.New(relay.Deps{NATS: r.t.NATS, Log: r.t.Log, Checkpoints: r.t.Views, Locker: r.t.Locker, Wake: r.t.Log.Appended, Logger: relayLogger}, relay.Config{Stream: r.t.Stream})
	if err != nil {
		return err
	}
	work, stop := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	for _, run := range []func(context.Context) error{r.projector.Run, rl.Run} {
		wg.Go(func() {
			if err := run(work); err != nil {
				r.cfg.Logger.Error("benchmark worker stopped", "err", err)
			}
		})
	}
	r.stopWorkers = func() {
		stop()
		wg.Wait()
	}
	return nil
}

// pause stops the projector and the relay.
func (r *runner) pause() {
	if r.stopWorkers != nil {
		r.stopWorkers()
		r.stopWorkers = nil
	}
}

// catchUp waits, at most CatchUpTimeout, until the projector and the relay
// have reached the head of the log.
func (r *runner) catchUp(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.CatchUpTimeout)
	defer cancel()
	head, err := r.t.Log.Head(ctx)
	if err != nil {
		return fmt.Errorf("read the head of the log: %w", err)
	}
	r.p.start(fmt.Sprintf("waiting for the projector and the relay to reach position %d", head))
	if err := r.projector.WaitFor(ctx, head); err != nil {
		return fmt.Errorf("wait for the projector to reach %d: %w", head, err)
	}
	for {
		cp, err := r.t.Views.Checkpoint(ctx, relay.Name)
		if err != nil {
			return fmt.Errorf("read the relay's checkpoint: %w", err)
		}
		if cp >= head {
			return nil
		}
		r.p.update(cp, head)
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for the relay to reach %d (at %d): %w", head, cp, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// growth fills the log to each size of Growth and measures there the
// append (16 writers, or the most given, new streams) against its
// baseline, and the latency of reading the team's queue and a session's
// history, whose baseline is the first size's figure.
func (r *runner) growth(ctx context.Context) error {
	writers := 16
	if !slices.Contains(r.cfg.Writers, writers) {
		writers = r.cfg.Writers[len(r.cfg.Writers)-1]
	}
	tn := newTenant()
	if err := r.t.db.fillScan(ctx, scanPageRows); err != nil {
		return fmt.Errorf("fill the scan table: %w", err)
	}
	for _, size := range r.cfg.Growth {
		r.pause()
		if err := fill(ctx, r.t, r.filler, size, r.p); err != nil {
			return err
		}
		if r.cfg.runs("read") && !r.readDone && size >= r.cfg.LogEvents {
			if err := r.readAndRebuild(ctx); err != nil {
				return err
			}
		} else if err := r.rebuild(ctx); err != nil {
			return err
		}
		if err := r.skipRelay(ctx); err != nil {
			return err
		}
		if err := r.resume(ctx); err != nil {
			return err
		}
		if err := r.catchUp(ctx); err != nil {
			return err
		}
		if err := r.t.db.tidy(ctx); err != nil {
			return fmt.Errorf("vacuum the read models: %w", err)
		}
		head := r.head(ctx)
		label := "events=" + strconv.FormatInt(size, 10)
		r.p.start(fmt.Sprintf("growth at %d events: reads", head))
		sessions, err := r.sessionsOf(ctx)
		if err != nil {
			return err
		}
		if err := r.reads(ctx, "growth_queue", label+" limit=100", head, func(ctx context.Context, _ int) error {
			_, err := r.t.Views.Queue(ctx, r.filler.account, r.filler.team, projections.Page{Limit: 100})
			return err
		}); err != nil {
			return err
		}
		if err := r.reads(ctx, "growth_history", label+" limit=100", head, func(ctx context.Context, _ int) error {
			_, err := r.t.Views.History(ctx, r.filler.account, sessions[rand.IntN(len(sessions))], projections.Page{Limit: 100})
			return err
		}); err != nil {
			return err
		}
		r.pause()
		r.p.start(fmt.Sprintf("growth at %d events: append", head))
		op, err := r.appendOp(ctx, tn, writers, "new")
		if err != nil {
			return err
		}
		res, err := alternate.Run(ctx, alternate.Config{Workers: writers, Duration: r.cfg.Duration}, r.baselineOp(), op, nil)
		if err != nil {
			return fmt.Errorf("growth at %d: append: %w", size, err)
		}
		f := Figure{Name: "growth_append", Case: shortCase(label, "writers="+strconv.Itoa(writers)), Unit: "appends", Baseline: baselineInsert, LogEvents: head}
		f.alternated(res)
		r.add(f)
	}
	return nil
}

// sessionsOf returns sessions of the generated tenant, read from the
// queue: the sessions whose history the growth figures read.
func (r *runner) sessionsOf(ctx context.Context) ([]uuid.UUID, error) {
	open, err := r.t.Views.Queue(ctx, r.filler.account, r.filler.team, projections.Page{Limit: 100})
	if err != nil {
		return nil, fmt.Errorf("read the generated queue: %w", err)
	}
	if len(open) == 0 {
		return nil, fmt.Errorf("the generated queue is empty")
	}
	ids := make([]uuid.UUID, len(open))
	for i, h := range open {
		ids[i] = h.SessionID
	}
	return ids, nil
}

// scanPageRows is how many rows the growth reads' baseline table holds.
const scanPageRows = 1000

// reads measures GrowthReads calls of read, one at a time, alternating
// in slices with the baseline read of a page of a plain table, and adds
// the figure.
func (r *runner) reads(ctx context.Context, name, label string, head int64, read alternate.Op) error {
	baseline := func(ctx context.Context, _ int) error { return r.t.db.readScanPage(ctx) }
	res, err := alternate.Run(ctx, alternate.Config{Workers: 1, Calls: r.cfg.GrowthReads, SliceCalls: 50}, baseline, read, nil)
	if err != nil {
		return fmt.Errorf("%s %s: %w", name, label, err)
	}
	f := Figure{Name: name, Case: label, Unit: "reads", Baseline: "SELECT of the first 100 rows of a scratch table by its primary key", LogEvents: head}
	f.alternated(res)
	r.add(f)
	return nil
}
