package relay_test

import (
	"context"
	"io"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/oklog/ulid/v2"

	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/internal/ledgertest"
	"github.com/resolutionflow/ledgerd/leader"
	"github.com/resolutionflow/ledgerd/relay"
)

const (
	// outage is how long NATS is down.
	outage = 2 * time.Second
	// resumeBound is how soon after the connection to NATS is made again
	// the relay must publish.
	resumeBound = time.Second
)

// TestRelay_ResumesOnReconnectAndReportsTheOutage stops NATS for a few
// seconds while commands append, the relay's backoff at its longest (5s),
// and starts it again before that backoff ends: the relay must publish again
// within resumeBound of the reconnect, not when its backoff ends. While
// NATS is down it must name the outage, not the client's refusal to queue
// a publish. The events appended during the outage sit behind a position
// whose append is still open (and later rolls back): the relay's first
// batch stops before it, and the recovery must report the real backlog,
// not take that short batch for the log's head.
func TestRelay_ResumesOnReconnectAndReportsTheOutage(t *testing.T) {
	e := newEnv(t)
	var logs ledgertest.Buffer
	logger := slog.New(slog.NewTextHandler(io.MultiWriter(&logs, t.Output()), nil))
	cfg := testConfig()
	cfg.MinBackoff, cfg.MaxBackoff = relay.DefaultMaxBackoff, relay.DefaultMaxBackoff
	var reconnectedAt atomic.Int64 // Unix nanoseconds
	r := e.newRelayWith(leader.NewLocal(), cfg, logger,
		nats.ReconnectHandler(func(*nats.Conn) { reconnectedAt.Store(time.Now().UnixNano()) }))
	e.run(r)
	e.handoffs(2)
	published := e.waitPublished()

	e.nats.Stop()
	stopped := time.Now()
	e.handoffs(1) // the relay fails to publish these, and backs off
	e.waitUntil("the relay reports degraded", func() bool { return r.Status().Degraded })
	rollback := e.openAppend()
	e.handoffs(100) // 200 events behind the open append
	time.Sleep(outage - time.Since(stopped))
	head, err := e.store.Head(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	e.nats.Restart(t)

	recovered := regexp.MustCompile(`msg="relay recovered" .*checkpoint=(\d+) backlog=(\d+)`)
	e.waitUntil("the relay logs its recovery", func() bool { return recovered.MatchString(logs.String()) })
	m := recovered.FindStringSubmatch(logs.String())
	checkpoint, _ := strconv.ParseInt(m[1], 10, 64)
	backlog, _ := strconv.ParseInt(m[2], 10, 64)
	if checkpoint >= head || backlog != head-checkpoint {
		t.Errorf("the relay recovered at checkpoint %d with backlog %d, want the log's head %d minus the checkpoint", checkpoint, backlog, head)
	}
	if st := r.Status(); st.Backlog != head-st.Checkpoint { // the relay waits at the open append
		t.Errorf("status after the recovery: checkpoint %d, backlog %d; want the log's head %d minus the checkpoint", st.Checkpoint, st.Backlog, head)
	}
	rollback()
	all := e.waitPublished() // every event once, in order

	ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
	defer cancel()
	stream, err := e.js.Stream(ctx, eventcodec.DefaultNATSStream)
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.GetMsg(ctx, uint64(len(published)+1))
	if err != nil {
		t.Fatal(err)
	}
	if first.Header.Get(eventcodec.HeaderPosition) != strconv.FormatInt(all[len(published)].Position, 10) {
		t.Fatalf("message %d is not the first event of the outage", first.Sequence)
	}
	resumed := first.Time.Sub(time.Unix(0, reconnectedAt.Load()))
	t.Logf("first event published %v after the reconnect", resumed)
	if resumed > resumeBound {
		t.Errorf("the relay published %v after the reconnect, want within %v", resumed, resumeBound)
	}

	text := logs.String()
	if strings.Contains(text, "outbound buffer limit exceeded") {
		t.Error("the relay logged the client's refusal to queue instead of the outage")
	}
	degraded := regexp.MustCompile(`msg="relay degraded, retrying" .*err="NATS disconnected: connection (RECONNECTING|DISCONNECTED), last error: `)
	if !degraded.MatchString(text) {
		t.Error("the relay did not log that NATS is disconnected, with the connection's status and last error")
	}
}

// openAppend begins a transaction that appends an event to a new session
// and leaves it open: its position is a hole in the log until the returned
// function rolls it back.
func (e *env) openAppend() (rollback func()) {
	e.t.Helper()
	tx, err := e.newPool().Begin(e.t.Context())
	if err != nil {
		e.t.Fatal(err)
	}
	var once sync.Once
	rollback = func() {
		once.Do(func() {
			if err := tx.Rollback(context.Background()); err != nil {
				e.t.Errorf("roll back the open append: %v", err)
			}
		})
	}
	e.t.Cleanup(rollback) // before the pool closes, which waits for it
	_, err = tx.Exec(e.t.Context(), `INSERT INTO events (id, stream, version, type, data, metadata, prev_hash, hash)
VALUES ($1, $2, 1, 'HandoffParked', '{}', '{}', sha256(''), sha256(''))`,
		ulid.Make().String(), eventcodec.StreamName(e.accounts[0], uuid.New()))
	if err != nil {
		rollback()
		e.t.Fatal(err)
	}
	return rollback
}

// TestRelay_StartingWhileNATSIsDownReportsTheBacklogFromTheCheckpoint
// starts a relay while NATS is down on a log that an earlier relay has
// partly published: the backlog it reports is what waits beyond the
// checkpoint, not the whole log.
func TestRelay_StartingWhileNATSIsDownReportsTheBacklogFromTheCheckpoint(t *testing.T) {
	e := newEnv(t)
	stop := e.run(e.newRelay(leader.NewLocal(), testConfig()))
	e.handoffs(5)
	published := e.waitPublished()
	stop()
	e.nats.Stop()
	e.handoffs(2)

	r := e.newRelay(leader.NewLocal(), testConfig())
	e.run(r)
	checkpoint, head := published[len(published)-1].Position, e.lastPosition()
	e.waitUntil("the relay reports degraded", func() bool { return r.Status().Degraded })
	if st := r.Status(); st.Checkpoint != checkpoint || st.Backlog != head-checkpoint {
		t.Errorf("status while NATS is down: checkpoint %d, backlog %d; want %d and %d", st.Checkpoint, st.Backlog, checkpoint, head-checkpoint)
	}
}
