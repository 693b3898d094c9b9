package faultsuite

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/resolutionflow/ledgerd/internal/ledgertest"
	"github.com/resolutionflow/ledgerd/internal/natstest"
	"github.com/resolutionflow/ledgerd/internal/pgtest"
	"github.com/resolutionflow/ledgerd/projections"
	"github.com/resolutionflow/ledgerd/relay"
)

const (
	jwtSecret    = "fault-suite-secret-0123456789abcdef"
	startTimeout = 30 * time.Second
	stopTimeout  = 15 * time.Second
)

// buildLedgerd builds the ledgerd command into a temporary directory.
func buildLedgerd(tb testing.TB) string {
	tb.Helper()
	gotool, err := exec.LookPath("go")
	if err != nil {
		tb.Fatalf("the fault suite builds ledgerd and needs the go tool: %v", err)
	}
	bin := filepath.Join(tb.TempDir(), "ledgerd")
	build := exec.CommandContext(tb.Context(), gotool, "build", "-o", bin, "github.com/resolutionflow/ledgerd/cmd/ledgerd")
	if out, err := build.CombinedOutput(); err != nil {
		tb.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// cluster is the deployment under test: ledgerd processes sharing one
// PostgreSQL database and one NATS server.
type cluster struct {
	bin   string
	pg    *pgtest.Server
	dbURL string
	nats  *natstest.Server
	// js is the test's own connection to NATS, which reconnects after a
	// restart.
	js jetstream.JetStream
	// pool is the test's own pool on the database.
	pool *pgxpool.Pool
	// logDir holds the processes' logs, and the audit key, until the whole
	// test has ended.
	logDir string
	// auditKey is the path of the audit checkpoint signing key every
	// process is given.
	auditKey string

	mu    sync.Mutex
	procs []*proc // every process started, in order
	// sent holds the ids of the requests of the phases so far.
	sent map[string]bool
}

// window is a span of time; an end that is zero is still open.
type window struct{ from, to time.Time }

// overlaps reports whether w and [from, to] share an instant.
func (w window) overlaps(from, to time.Time) bool {
	return !from.After(w.endOr(to)) && !to.Before(w.from)
}

func (w window) endOr(open time.Time) time.Time {
	if w.to.IsZero() {
		return open
	}
	return w.to
}

// newCluster starts PostgreSQL, NATS and two ledgerd processes, the first
// of which is the leader.
func newCluster(t *testing.T) *cluster {
	t.Helper()
	start := time.Now()
	c := &cluster{bin: buildLedgerd(t), logDir: t.TempDir(), sent: map[string]bool{}}
	built := time.Since(start)
	c.auditKey = c.makeAuditKey(t)
	// Beside the audit key: the master key every process shares.
	if err := os.WriteFile(filepath.Join(filepath.Dir(c.auditKey), "master-key"), []byte(testMasterKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.pg, c.nats = pgtest.StartServer(t), natstest.Start(t)
	c.dbURL = c.pg.NewDatabase(t)
	c.pool = pgtest.Pool(t, c.dbURL, 4)
	nc, err := nats.Connect(c.nats.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatalf("connect to nats: %v", err)
	}
	t.Cleanup(nc.Close)
	if c.js, err = jetstream.New(nc); err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	first := c.start(t)
	c.waitLeader(t, first)
	c.start(t)
	t.Logf("ledgerd built in %v; PostgreSQL, NATS and two processes up %v later", built.Round(time.Millisecond), (time.Since(start) - built).Round(time.Millisecond))
	t.Cleanup(func() {
		for _, p := range c.procs {
			p.stop(t)
		}
	})
	return c
}

// makeAuditKey writes a key made by `ledgerd audit keygen` to a file and
// returns its path.
func (c *cluster) makeAuditKey(t *testing.T) string {
	t.Helper()
	key, err := exec.CommandContext(t.Context(), c.bin, "audit", "keygen", "--name", "ledgerd.faultsuite").Output()
	if err != nil {
		t.Fatalf("ledgerd audit keygen: %v", err)
	}
	path := filepath.Join(c.logDir, "audit-key")
	if err := os.WriteFile(path, key, 0o600); err != nil {
		t.Fatalf("write the audit key: %v", err)
	}
	return path
}

// proc is a `ledgerd serve` process.
type proc struct {
	name string
	cmd  *exec.Cmd
	base string
	log  string
	// exited is closed when the process has ended, with exitErr.
	exited  chan struct{}
	exitErr error

	mu sync.Mutex
	// faults are the times the process was killed or stopped.
	faults []window
	dead   bool
}

// start starts another ledgerd process and waits until it answers
// /healthz.
func (c *cluster) start(t *testing.T) *proc {
	t.Helper()
	c.mu.Lock()
	name := string(rune('a' + len(c.procs)))
	c.mu.Unlock()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	addr := l.Addr().String()
	l.Close()
	p := &proc{name: name, base: "http://" + addr, log: filepath.Join(c.logDir, "ledgerd-"+name+".log"), exited: make(chan struct{})}
	logFile, err := os.Create(p.log)
	if err != nil {
		t.Fatalf("create log: %v", err)
	}
	defer logFile.Close()
	p.cmd = exec.Command(c.bin, "serve")
	p.cmd.Env = c.env("LEDGER_HTTP_ADDR=" + addr)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	// Pdeathsig ends the process if the test binary dies without doing so.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start ledgerd serve: %v", err)
	}
	go func() {
		p.exitErr = p.cmd.Wait()
		close(p.exited)
	}()
	if err := p.waitHealthy(); err != nil {
		_ = p.cmd.Process.Kill()
		<-p.exited
		t.Fatalf("%v\n%s", err, p.logs())
	}
	// Clients send it requests from now on.
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	return p
}

// env is the environment of a ledgerd process: this cluster's database,
// NATS, secret and audit key, and nothing inherited that would choose
// others.
func (c *cluster) env(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DATABASE_URL=") && !strings.HasPrefix(kv, "NATS_") && !strings.HasPrefix(kv, "LEDGER_") {
			env = append(env, kv)
		}
	}
	env = append(env, "DATABASE_URL="+c.dbURL, "NATS_URL="+c.nats.URL(), "LEDGER_JWT_SECRET="+jwtSecret,
		"LEDGER_AUDIT_KEY_FILE="+c.auditKey, "LEDGER_MASTER_KEY_FILE="+filepath.Join(filepath.Dir(c.auditKey), "master-key"))
	return append(env, extra...)
}

func (p *proc) waitHealthy() error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.After(startTimeout)
	for {
		resp, err := client.Get(p.base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.exited:
			return fmt.Errorf("ledgerd %s exited before it was healthy: %v", p.name, p.exitErr)
		case <-deadline:
			return fmt.Errorf("ledgerd %s not healthy after %v", p.name, startTimeout)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (p *proc) logs() string {
	out, err := os.ReadFile(p.log)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(out)
}

// logTailLines is how many of its last log lines logTail shows.
const logTailLines = 40

// logTail returns the last logTailLines lines of the process's log.
func (p *proc) logTail() string {
	lines := strings.Split(strings.TrimSpace(p.logs()), "\n")
	return strings.Join(lines[max(0, len(lines)-logTailLines):], "\n")
}

// signal sends sig to the process and records a fault from now on (SIGKILL,
// SIGSTOP) or ends the open one (SIGCONT).
func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%v to ledgerd %s: %v", sig, p.name, err)
	}
	switch sig {
	case syscall.SIGCONT:
		p.faults[len(p.faults)-1].to = time.Now()
	default:
		p.faults = append(p.faults, window{from: time.Now()})
		p.dead = p.dead || sig == syscall.SIGKILL
	}
}

// faulted reports whether the process was killed or stopped at some
// instant between from and to.
func (p *proc) faulted(from, to time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.ContainsFunc(p.faults, func(w window) bool { return w.overlaps(from, to) })
}

// healthy reports whether the process runs and is not stopped.
func (p *proc) healthy() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.dead && (len(p.faults) == 0 || !p.faults[len(p.faults)-1].to.IsZero())
}

// stop ends a process that still runs with SIGTERM (SIGKILL if that takes
// too long) and waits for it.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGCONT) // a stopped process cannot handle SIGTERM
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(stopTimeout):
		_ = p.cmd.Process.Kill()
		<-p.exited
		t.Errorf("ledgerd %s did not stop within %v of SIGTERM\n%s", p.name, stopTimeout, p.logs())
	}
}

// targets returns the processes clients may send requests to.
func (c *cluster) targets() []*proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*proc
	for _, p := range c.procs {
		if p.healthy() {
			out = append(out, p)
		}
	}
	return out
}

// findProc returns the first process started for which match is true.
func (c *cluster) findProc(match func(*proc) bool) *proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.procs {
		if match(p) {
			return p
		}
	}
	return nil
}

// leaderLocks are the names of the leadership leases of a deployment: the
// handoffs projector's and the relay's.
var leaderLocks = []string{projections.HandoffsProjector, relay.Name}

// leaders returns the process holding each unexpired leadership lease. A
// lease's holder is "host:pid:random", naming the process by its pid.
func (c *cluster) leaders(ctx context.Context) (map[string]*proc, error) {
	rows, err := c.pool.Query(ctx, `SELECT name, holder FROM leader_leases WHERE expires_at > clock_timestamp()`)
	if err != nil {
		return nil, fmt.Errorf("read the leases: %w", err)
	}
	type lease struct{ Name, Holder string }
	leases, err := pgx.CollectRows(rows, pgx.RowToStructByPos[lease])
	if err != nil {
		return nil, fmt.Errorf("read the leases: %w", err)
	}
	held := map[string]*proc{}
	for _, l := range leases {
		fields := strings.Split(l.Holder, ":")
		if len(fields) < 3 {
			return nil, fmt.Errorf("lease %s: holder %q is not host:pid:random", l.Name, l.Holder)
		}
		pid, err := strconv.Atoi(fields[len(fields)-2])
		if err != nil {
			return nil, fmt.Errorf("lease %s: holder %q: %w", l.Name, l.Holder, err)
		}
		if p := c.findProc(func(p *proc) bool { return p.cmd.Process.Pid == pid }); p != nil {
			held[l.Name] = p
		}
	}
	return held, nil
}

// waitLeader waits until healthy processes hold every leadership lease,
// and returns the relay's leader. When want is not nil, it must hold every
// lease.
func (c *cluster) waitLeader(t *testing.T, want *proc) *proc {
	t.Helper()
	var held map[string]*proc
	ledgertest.WaitUntil(t, startTimeout, "healthy processes hold every leadership lease", func() bool {
		var err error
		if held, err = c.leaders(t.Context()); err != nil {
			t.Fatal(err)
		}
		for _, name := range leaderLocks {
			if p := held[name]; p == nil || !p.healthy() || (want != nil && p != want) {
				return false
			}
		}
		return true
	})
	for _, name := range leaderLocks {
		t.Logf("%s led by ledgerd %s", name, held[name].name)
	}
	return held[relay.Name]
}

// head returns the position of the last event in the log, 0 when empty.
func (c *cluster) head(ctx context.Context) (int64, error) {
	var head int64
	err := c.pool.QueryRow(ctx, `SELECT coalesce(max(position), 0) FROM events`).Scan(&head)
	if err != nil {
		return 0, fmt.Errorf("read the log's head: %w", err)
	}
	return head, nil
}

// checkpoints returns the positions of the handoffs projector and of the
// relay.
func (c *cluster) checkpoints(ctx context.Context) (projector, relayPos int64, err error) {
	err = c.pool.QueryRow(ctx, `SELECT
		coalesce((SELECT position FROM checkpoints WHERE name = $1), 0),
		coalesce((SELECT position FROM checkpoints WHERE name = $2), 0)`,
		projections.HandoffsProjector, relay.Name).Scan(&projector, &relayPos)
	if err != nil {
		return 0, 0, fmt.Errorf("read the checkpoints: %w", err)
	}
	return projector, relayPos, nil
}

// logLine is the part of a ledgerd JSON log line the suite reads.
type logLine struct {
	Time time.Time `json:"time"`
	Msg  string    `json:"msg"`
}

// logTimes returns the times of the process's log lines whose message is
// msg, from after on.
func (p *proc) logTimes(msg string, after time.Time) ([]time.Time, error) {
	f, err := os.Open(p.log)
	if err != nil {
		return nil, fmt.Errorf("open the log of ledgerd %s: %w", p.name, err)
	}
	defer f.Close()
	var times []time.Time
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var l logLine
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == msg && !l.Time.Before(after) {
			times = append(times, l.Time)
		}
	}
	if err := sc.Err(); err != nil && !errors.Is(err, bufio.ErrTooLong) {
		return nil, fmt.Errorf("read the log of ledgerd %s: %w", p.name, err)
	}
	return times, nil
}
