package faultsuite

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/projections"
)

var long = flag.Bool("faults.long", false, "run every fault several rounds, under a longer load, with longer outages")

// config sizes a run of the suite.
type config struct {
	rounds  int
	clients int
	// warmAcks is how many commands are acknowledged in a phase before its
	// fault; recoverAcks how many after it, before the load stops.
	warmAcks, recoverAcks int64
	// natsDown and pgDown are how long NATS and PostgreSQL stay down.
	natsDown, pgDown time.Duration
	// faults are the faults of a round, in order.
	faults []fault
}

var (
	defaultRun = config{rounds: 1, clients: 4, warmAcks: 30, recoverAcks: 30, natsDown: 4 * time.Second, pgDown: 2 * time.Second,
		faults: faults}
	longRun = config{rounds: 3, clients: 4, warmAcks: 300, recoverAcks: 300, natsDown: 10 * time.Second, pgDown: 10 * time.Second,
		faults: append(slices.Clone(faults), fault{"PostgreSQL-crash", crashPostgres})}
)

// Bounds of the faults' own checks.
const (
	// takeoverBound is how soon after its leader was killed or frozen
	// another process must run the projector and the relay: leadership
	// ends within a few seconds of its holder going silent.
	takeoverBound = 6 * time.Second
	// relayResumeBound is how soon after the relay's connection is back
	// the relay must publish again.
	relayResumeBound = time.Second
	// reconnectTimeout bounds the wait for the relay to reconnect to a
	// restarted NATS server (it retries every second).
	reconnectTimeout = 5 * time.Second
	// staleWatch is how long the checkpoints are watched after a frozen
	// leader resumes.
	staleWatch = 1500 * time.Millisecond
	// ackTimeout bounds the wait for the load's commands to be
	// acknowledged.
	ackTimeout = 20 * time.Second
)

// fault takes something away from the cluster under load, checks what
// must hold meanwhile, and brings the cluster back to two healthy ledgerd
// processes, PostgreSQL and NATS.
type fault struct {
	name   string
	inject func(t *testing.T, c *cluster, cfg config, l *load)
}

var faults = []fault{
	{"SIGKILL", killLeader},
	{"SIGSTOP", freezeLeader},
	{"NATS", restartNATS},
	{"PostgreSQL", restartPostgres},
}

// TestFaultSuite runs each fault in turn (rounds times with -faults.long)
// on one cluster, and after each checks the ledger's guarantees; at the
// end a rebuild of the read models must reproduce them.
func TestFaultSuite(t *testing.T) {
	cfg := defaultRun
	if *long {
		cfg = longRun
	}
	c := newCluster(t)
	for range cfg.rounds {
		for _, f := range cfg.faults {
			t.Run(f.name, func(t *testing.T) { c.phase(t, cfg, f) })
		}
	}
	t.Run("rebuild", c.checkRebuild)
}

// phase runs the load, injects the fault, waits until commands are
// acknowledged again, stops the load and checks everything.
func (c *cluster) phase(t *testing.T, cfg config, f fault) {
	since, err := c.head(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	l := c.startLoad(t, cfg.clients, clientTimeout)
	var reqs []*request
	stop := func() {
		if reqs == nil {
			reqs = l.stop()
			for _, r := range reqs {
				c.sent[r.id] = true
			}
		}
	}
	defer stop() // when the phase fails early
	waitAcks(t, l, cfg.warmAcks)
	f.inject(t, c, cfg, l)
	waitAcks(t, l, l.acks.Load()+cfg.recoverAcks)
	stop()
	t.Logf("%d requests, %d commands acknowledged", len(reqs), l.acks.Load())

	c.checkAlive(t)
	checkAnswers(t, reqs)
	c.converge(t)
	events := c.readLog(t)
	checkLog(t, events, reqs, since, c.sent)
	c.checkStream(t, events)
	c.checkReadModels(t, events)
}

// waitAcks waits until the load has had n commands acknowledged.
func waitAcks(t *testing.T, l *load, n int64) {
	t.Helper()
	if !poll(ackTimeout, func() (bool, error) { return l.acks.Load() >= n, nil }) {
		t.Fatalf("only %d commands acknowledged after %v, want %d", l.acks.Load(), ackTimeout, n)
	}
}

// checkAlive checks that no process the suite did not kill has exited.
func (c *cluster) checkAlive(t *testing.T) {
	t.Helper()
	for _, p := range c.targets() {
		select {
		case <-p.exited:
			t.Errorf("ledgerd %s exited: %v\n%s", p.name, p.exitErr, p.logs())
		default:
		}
	}
}

// killLeader kills the leader with SIGKILL: another process must take
// over within takeoverBound. A new process takes the dead one's place.
func killLeader(t *testing.T, c *cluster, _ config, _ *load) {
	leader := c.waitLeader(t, nil)
	at, head := c.faultAt(t)
	leader.signal(t, syscall.SIGKILL)
	<-leader.exited
	c.checkTakeover(t, at, head)
	c.start(t)
}

// freezeLeader stops the leader with SIGSTOP: another process must take
// over within takeoverBound, reads on it answer (2xx, or 503 with
// Retry-After before the takeover), and once the frozen process resumes
// it must not move a checkpoint back.
func freezeLeader(t *testing.T, c *cluster, _ config, l *load) {
	leader := c.waitLeader(t, nil)
	at, head := c.faultAt(t)
	leader.signal(t, syscall.SIGSTOP)
	resumed := false
	defer func() {
		if !resumed {
			leader.signal(t, syscall.SIGCONT)
		}
	}()
	if took, ok := c.checkTakeover(t, at, head); ok {
		from := at.Add(took + time.Second)
		waitReads(t, l, from, leader)
		checkReadsAfter(t, l.snapshot(), from, leader)
	}
	leader.signal(t, syscall.SIGCONT)
	resumed = true
	c.checkNoStaleWrites(t)
}

// readsAfterTakeover is how many reads freezeLeader has answered by the
// processes left after the takeover before it resumes the frozen one.
const readsAfterTakeover = 8

// waitReads waits until the load has had readsAfterTakeover reads sent
// after from answered by a process other than frozen.
func waitReads(t *testing.T, l *load, from time.Time, frozen *proc) {
	t.Helper()
	n := 0
	if !poll(ackTimeout, func() (bool, error) {
		n = 0
		for _, r := range l.snapshot() {
			if isRead(r) && r.target != frozen && r.start.After(from) && r.status != 0 {
				n++
			}
		}
		return n >= readsAfterTakeover, nil
	}) {
		t.Fatalf("only %d reads answered in %v after the takeover, want %d", n, ackTimeout, readsAfterTakeover)
	}
}

// faultAt returns the time and the head of the log just before a fault.
func (c *cluster) faultAt(t *testing.T) (time.Time, int64) {
	t.Helper()
	head, err := c.head(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return time.Now(), head
}

// checkTakeover checks that the projector and the relay move past head,
// the log's head when the leader was taken away at at, within
// takeoverBound of at: some other process leads them. It returns how long
// that took and whether it happened in time.
func (c *cluster) checkTakeover(t *testing.T, at time.Time, head int64) (time.Duration, bool) {
	t.Helper()
	var proj, rel int64
	ok := poll(time.Until(at.Add(takeoverBound)), func() (bool, error) {
		var err error
		proj, rel, err = c.checkpoints(t.Context())
		return proj > head && rel > head, err
	})
	took := time.Since(at)
	if !ok {
		t.Errorf("no other process took the lead within %v: the projector is at %d, the relay at %d, the log's head was %d at the fault", takeoverBound, proj, rel, head)
		for _, p := range c.targets() {
			t.Logf("the end of the log of ledgerd %s:\n%s", p.name, p.logTail())
		}
		t.Logf("database sessions in a transaction or waiting for a lock:\n%s", c.stuckSessions(t.Context()))
		return took, false
	}
	t.Logf("the projector and the relay moved on %v after the fault", took.Round(time.Millisecond))
	return took, true
}

// stuckSessions describes the database's sessions that are idle in a
// transaction or waiting for another session's lock.
func (c *cluster) stuckSessions(ctx context.Context) string {
	rows, err := c.pool.Query(ctx, `SELECT format('pid %s %s, blocked by %s, since %s: %s',
			pid, state, pg_blocking_pids(pid), now() - state_change, left(query, 200))
		FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid()
		  AND (state = 'idle in transaction' OR cardinality(pg_blocking_pids(pid)) > 0)`)
	if err != nil {
		return err.Error()
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err.Error()
	}
	return strings.Join(lines, "\n")
}

// checkReadsAfter checks that every read sent after from to a process
// other than frozen was answered 200: a second after the takeover, the
// read models are led again.
func checkReadsAfter(t *testing.T, reqs []*request, from time.Time, frozen *proc) {
	t.Helper()
	l := &limited{t: t, what: "reads after the takeover"}
	defer l.done()
	for _, r := range reqs {
		if isRead(r) && r.target != frozen && r.start.After(from) && r.status != http.StatusOK {
			l.errorf("not 200: %v", r)
		}
	}
}

// checkNoStaleWrites watches the checkpoints for staleWatch after a frozen
// leader resumed: neither may move back.
func (c *cluster) checkNoStaleWrites(t *testing.T) {
	t.Helper()
	var lastProj, lastRel int64
	deadline := time.Now().Add(staleWatch)
	for time.Now().Before(deadline) {
		proj, rel, err := c.checkpoints(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if proj < lastProj || rel < lastRel {
			t.Errorf("a checkpoint moved back after the frozen leader resumed: projector %d → %d, relay %d → %d", lastProj, proj, lastRel, rel)
			return
		}
		lastProj, lastRel = proj, rel
		time.Sleep(20 * time.Millisecond) // sampling the checkpoints
	}
}

// restartNATS stops the NATS server for cfg.natsDown and starts it again:
// the relay must publish again within relayResumeBound of its
// reconnection.
func restartNATS(t *testing.T, c *cluster, cfg config, _ *load) {
	leader := c.waitLeader(t, nil)
	before, err := c.lastSeq(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	c.nats.Stop()
	time.Sleep(cfg.natsDown) // the outage
	restarted := time.Now()
	c.nats.Restart(t)

	var reconnected time.Time
	if !poll(reconnectTimeout, func() (bool, error) {
		times, err := leader.logTimes("nats reconnected", restarted)
		if len(times) > 0 {
			reconnected = times[0]
		}
		return len(times) > 0, err
	}) {
		t.Fatalf("ledgerd %s did not log its reconnection to NATS within %v of the restart; the end of its log:\n%s", leader.name, reconnectTimeout, leader.logTail())
	}
	if !poll(convergeTimeout, func() (bool, error) {
		last, err := c.lastSeq(t.Context())
		return last > before, err
	}) {
		t.Fatalf("the relay published nothing within %v of the restart", convergeTimeout)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	first, err := c.stream(ctx, t).GetMsg(ctx, before+1)
	if err != nil {
		t.Fatalf("get message %d: %v", before+1, err)
	}
	resumed := first.Time.Sub(reconnected)
	t.Logf("NATS down %v; the relay reconnected %v after the restart and published %v after that",
		cfg.natsDown, reconnected.Sub(restarted).Round(time.Millisecond), resumed.Round(time.Millisecond))
	if resumed > relayResumeBound {
		t.Errorf("the relay published again %v after it reconnected to NATS, more than %v", resumed.Round(time.Millisecond), relayResumeBound)
	}
}

// lastSeq returns the stream's last sequence number.
func (c *cluster) lastSeq(ctx context.Context) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	stream, err := c.js.Stream(ctx, eventcodec.DefaultNATSStream)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", eventcodec.DefaultNATSStream, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream info: %w", err)
	}
	return info.State.LastSeq, nil
}

// restartPostgres stops PostgreSQL (a fast shutdown) for cfg.pgDown and
// starts it again: see postgresOutage.
func restartPostgres(t *testing.T, c *cluster, cfg config, l *load) {
	postgresOutage(t, c, cfg, l, c.pg.Stop)
}

// crashPostgres stops PostgreSQL with an immediate shutdown, as in a
// crash, for cfg.pgDown and starts it again: see postgresOutage.
func crashPostgres(t *testing.T, c *cluster, cfg config, l *load) {
	postgresOutage(t, c, cfg, l, c.pg.Crash)
}

// postgresOutage stops PostgreSQL with stop for cfg.pgDown and starts it
// again: every request answered while it was down gets 503 with
// Retry-After (or, for a bad body, 422), and commands are acknowledged
// again once it is up.
func postgresOutage(t *testing.T, c *cluster, cfg config, l *load, stop func(testing.TB)) {
	stop(t)
	down := window{from: time.Now()}
	time.Sleep(cfg.pgDown) // the outage
	down.to = time.Now()
	c.pg.Start(t)
	waitAcks(t, l, l.acks.Load()+cfg.recoverAcks)

	seen := 0
	bad := &limited{t: t, what: "answers while PostgreSQL was down"}
	defer bad.done()
	for _, r := range l.snapshot() {
		if r.status == 0 || r.start.Before(down.from) || r.end.After(down.to) {
			continue
		}
		seen++
		ok := r.status == http.StatusServiceUnavailable && r.retryAfter != ""
		if r.kind == kindBadBody {
			ok = ok || r.status == http.StatusUnprocessableEntity
		}
		if !ok {
			bad.errorf("want 503 with Retry-After: %v", r)
		}
	}
	t.Logf("PostgreSQL down %v: %d requests answered meanwhile", cfg.pgDown, seen)
	if seen == 0 {
		t.Errorf("no request was answered while PostgreSQL was down")
	}
}

// checkRebuild stops the processes and runs `ledgerd projections
// rebuild`: the read model it builds from the log must equal the one the
// processes built.
func (c *cluster) checkRebuild(t *testing.T) {
	c.converge(t)
	for _, p := range c.targets() {
		p.stop(t)
	}
	before := c.dumpReadModel(t)
	rebuild := exec.CommandContext(t.Context(), c.bin, "projections", "rebuild")
	rebuild.Env = c.env()
	if out, err := rebuild.CombinedOutput(); err != nil {
		t.Fatalf("ledgerd projections rebuild: %v\n%s", err, out)
	}
	if after := c.dumpReadModel(t); after != before {
		t.Errorf("the rebuilt read model differs from the one the processes built\nrebuilt: %.2000s\nserved:  %.2000s", after, before)
	}
}

// dumpReadModel returns every handoffs row, the projector's checkpoint and
// the skipped events, as JSON.
//
// The notes, sealed with a nonce of their own each time they are written,
// are dumped as the master key opens them.
func (c *cluster) dumpReadModel(t *testing.T) string {
	t.Helper()
	var dump string
	err := c.pool.QueryRow(t.Context(), `SELECT json_build_array(
		(SELECT coalesce(json_agg(to_jsonb(h) - 'engineer_notes' ORDER BY h.id), '[]') FROM handoffs h),
		(SELECT position FROM checkpoints WHERE name = $1),
		(SELECT count(*) FROM projection_skipped))::text`, projections.HandoffsProjector).Scan(&dump)
	if err != nil {
		t.Fatalf("dump the read model: %v", err)
	}
	keys := testKeyring(t)
	// pgx.ForEachRow reports the query's error.
	rows, _ := c.pool.Query(t.Context(), `SELECT h.account_id, h.session_id, h.engineer_notes, k.key_id, k.wrapped, k.master_key_id
FROM handoffs AS h LEFT JOIN data_keys AS k ON k.stream_id = ('session:' || h.account_id::text || ':' || h.session_id::text) COLLATE "C"
ORDER BY h.id`)
	var (
		account, session uuid.UUID
		notes            string
		keyID, masterID  *string
		wrapped          []byte
	)
	_, err = pgx.ForEachRow(rows, []any{&account, &session, &notes, &keyID, &wrapped, &masterID}, func() error {
		var key *eventstore.DataKey
		if keyID != nil && masterID != nil {
			key = &eventstore.DataKey{ID: *keyID, Wrapped: wrapped, MasterKeyID: *masterID}
		}
		opened, erased := keys.OpenNotes(eventcodec.StreamName(account, session), key, notes)
		dump += fmt.Sprintf("\n%q %v", opened, erased)
		return nil
	})
	if err != nil {
		t.Fatalf("dump the read model's notes: %v", err)
	}
	return dump
}
