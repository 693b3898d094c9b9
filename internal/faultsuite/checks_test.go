package faultsuite

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/resolutionflow/ledgerd/commands"
	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/eventstore/pgstore"
	"github.com/resolutionflow/ledgerd/projections"
	"github.com/resolutionflow/ledgerd/projections/pgviews"
	"github.com/resolutionflow/ledgerd/projections/storetest"
	"github.com/resolutionflow/ledgerd/shred"
)

// Bounds of the checks.
const (
	// answerBound is the longest a healthy process may take to answer:
	// a read waits for the read models for at most --read-wait-timeout
	// (2s by default) before it answers 503.
	answerBound = 5 * time.Second
	// clientTimeout is when a client gives up on an answer.
	clientTimeout = 15 * time.Second
	// convergeTimeout bounds the wait, once the load has stopped, for the
	// projector and the relay to reach the head of the log.
	convergeTimeout = 20 * time.Second
	// errorsShown is how many failures of one kind a check reports in
	// full.
	errorsShown = 5
)

// limited reports at most errorsShown failures of one check, then how
// many more there were.
type limited struct {
	t    *testing.T
	what string
	n    int
}

func (l *limited) errorf(format string, args ...any) {
	l.t.Helper()
	l.n++
	if l.n <= errorsShown {
		l.t.Errorf(l.what+": "+format, args...)
	}
}

func (l *limited) done() {
	l.t.Helper()
	if l.n > errorsShown {
		l.t.Errorf("%s: %d more like these", l.what, l.n-errorsShown)
	}
}

// checkAnswers checks what the clients got: an answer within answerBound
// from every process that was neither killed nor stopped meanwhile, only
// the statuses each kind of request may get, no 5xx but 503, and a
// Retry-After on every 503.
func checkAnswers(t *testing.T, reqs []*request) {
	t.Helper()
	l := &limited{t: t, what: "answers"}
	defer l.done()
	for _, r := range reqs {
		faulted := r.target.faulted(r.start, r.end)
		switch {
		case r.status == 0 && faulted:
			continue // the process was killed or stopped
		case r.status == 0:
			l.errorf("no answer from a healthy process: %v", r)
			continue
		case r.err != nil:
			l.errorf("bad answer: %v", r)
		case r.status >= 500 && r.status != http.StatusServiceUnavailable:
			l.errorf("a 5xx other than 503: %v", r)
		case r.status == http.StatusServiceUnavailable && r.retryAfter == "":
			l.errorf("a 503 without Retry-After: %v", r)
		case !slices.Contains(allowed(r), r.status):
			l.errorf("status %d, want one of %v: %v", r.status, allowed(r), r)
		case r.kind == kindHistory && r.acked() && !r.sawHandoff:
			l.errorf("the history misses the handoff %s acknowledged before it was read: %v", r.handoff, r)
		}
		if took := r.end.Sub(r.start); !faulted && took > answerBound {
			l.errorf("answered after %v, more than %v: %v", took.Round(time.Millisecond), answerBound, r)
		}
	}
}

// allowed returns the statuses a request of r's kind may get.
func allowed(r *request) []int {
	unavailable := http.StatusServiceUnavailable
	switch r.kind {
	case kindEscalate:
		return []int{http.StatusCreated, unavailable}
	case kindClaim:
		return []int{http.StatusOK, unavailable}
	case kindReclaim:
		if r.claimAcked {
			return []int{http.StatusConflict, unavailable}
		}
		// The claim before it may or may not have committed.
		return []int{http.StatusOK, http.StatusConflict, unavailable}
	case kindBadBody:
		return []int{http.StatusUnprocessableEntity, unavailable}
	}
	return []int{http.StatusOK, unavailable}
}

// converge waits until the projector and the relay have reached the head
// of the log.
func (c *cluster) converge(t *testing.T) {
	t.Helper()
	var head, proj, rel int64
	ok := poll(convergeTimeout, func() (bool, error) {
		var err error
		if head, err = c.head(t.Context()); err != nil {
			return false, err
		}
		proj, rel, err = c.checkpoints(t.Context())
		return proj == head && rel == head, err
	})
	if !ok {
		t.Fatalf("the projector (at %d) and the relay (at %d) did not reach the head of the log (%d) within %v", proj, rel, head, convergeTimeout)
	}
}

// poll calls cond every 20ms until it is true, an error (which fails the
// test's goroutine, so only call it there), or limit has passed; it
// reports whether cond came true.
func poll(limit time.Duration, cond func() (bool, error)) bool {
	deadline := time.Now().Add(limit)
	for {
		ok, err := cond()
		if err == nil && ok {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, not ordering events
	}
}

// readLog returns the whole log in position order.
func (c *cluster) readLog(t *testing.T) []eventstore.Event {
	t.Helper()
	// The log as the processes read it: opened by their master key.
	store := shred.NewStore(pgstore.New(c.pool), testKeyring(t))
	var all []eventstore.Event
	for {
		after := int64(0)
		if len(all) > 0 {
			after = all[len(all)-1].Position
		}
		page, err := store.ReadAll(t.Context(), after, 1000)
		if err != nil {
			t.Fatalf("read the log: %v", err)
		}
		if len(page) == 0 {
			return all
		}
		all = append(all, page...)
	}
}

// eventKey is what an event did: its type and the handoff it concerns.
type eventKey struct {
	typ     string
	handoff uuid.UUID
}

func keyOf(t *testing.T, e eventstore.Event) eventKey {
	t.Helper()
	decoded, err := eventcodec.Decode(e.Type, e.Data)
	if err != nil {
		t.Fatalf("decode event %d: %v", e.Position, err)
	}
	switch d := decoded.(type) {
	case domain.HandoffEscalated:
		return eventKey{e.Type, d.HandoffID}
	case domain.HandoffClaimed:
		return eventKey{e.Type, d.HandoffID}
	}
	t.Fatalf("event %d is a %s, which the load never asks for", e.Position, e.Type)
	return eventKey{}
}

// checkLog checks the log against the requests of a phase: every
// acknowledged command has exactly one event, of its type and handoff;
// every refused one (4xx) and every read has none; a command without an
// answer or with a 5xx has at most one. Every event the phase appended
// (after position since) comes from a request sent, and no handoff is
// escalated or claimed twice in the whole log.
func checkLog(t *testing.T, events []eventstore.Event, reqs []*request, since int64, sent map[string]bool) {
	t.Helper()
	byRequest := map[string][]eventstore.Event{}
	seen := map[eventKey]int64{}
	dup := &limited{t: t, what: "log"}
	for _, e := range events {
		byRequest[e.Metadata.ClientRequestID] = append(byRequest[e.Metadata.ClientRequestID], e)
		k := keyOf(t, e)
		if first, ok := seen[k]; ok {
			dup.errorf("%s of handoff %s at positions %d and %d", k.typ, k.handoff, first, e.Position)
		}
		seen[k] = e.Position
		if e.Position > since && !sent[e.Metadata.ClientRequestID] {
			dup.errorf("event %d (%s) answers no request the clients sent (request id %q)", e.Position, e.Type, e.Metadata.ClientRequestID)
		}
	}
	dup.done()

	l := &limited{t: t, what: "events of requests"}
	defer l.done()
	for _, r := range reqs {
		evs := byRequest[r.id]
		switch {
		case !r.command() || (r.status >= 400 && r.status < 500):
			if len(evs) != 0 {
				l.errorf("%d events for a request that may append none: %v", len(evs), r)
			}
		case r.acked():
			if len(evs) != 1 {
				l.errorf("%d events for an acknowledged command, want 1: %v", len(evs), r)
			} else if k := keyOf(t, evs[0]); k != (eventKey{r.eventType(), r.handoff}) {
				l.errorf("event %d is %s of %s, want %s of %s: %v", evs[0].Position, k.typ, k.handoff, r.eventType(), r.handoff, r)
			}
		default: // no answer, or a 5xx: it may have committed
			if len(evs) > 1 {
				l.errorf("%d events for a command whose outcome is unknown, want at most 1: %v", len(evs), r)
			}
		}
	}
}

// checkStream checks that the JetStream stream holds exactly one message
// per event of the log, in log order.
func (c *cluster) checkStream(t *testing.T, events []eventstore.Event) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), convergeTimeout)
	defer cancel()
	stream := c.stream(ctx, t)
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	if info.State.Msgs != uint64(len(events)) || (len(events) > 0 && info.State.FirstSeq != 1) {
		t.Errorf("the stream holds %d messages (sequences %d to %d), the log %d events", info.State.Msgs, info.State.FirstSeq, info.State.LastSeq, len(events))
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("ordered consumer: %v", err)
	}
	l := &limited{t: t, what: "stream"}
	defer l.done()
	for i := 0; i < int(info.State.Msgs); {
		batch, err := cons.Fetch(int(info.State.Msgs)-i, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatalf("fetch: %v", err)
		}
		n := 0
		for m := range batch.Messages() {
			if i+n < len(events) {
				e := events[i+n]
				pos, id := m.Headers().Get(eventcodec.HeaderPosition), m.Headers().Get(jetstream.MsgIDHeader)
				if pos != strconv.FormatInt(e.Position, 10) || id != e.ID {
					l.errorf("message %d is event %s at position %s, the log's event %d is %s at position %d", i+n+1, id, pos, i+n+1, e.ID, e.Position)
				}
			}
			n++
		}
		if err := batch.Error(); err != nil {
			t.Fatalf("fetch: %v", err)
		}
		if n == 0 && ctx.Err() != nil {
			t.Fatalf("read %d of %d messages: %v", i, info.State.Msgs, ctx.Err())
		}
		i += n
	}
}

// stream returns the ledger's JetStream stream.
func (c *cluster) stream(ctx context.Context, t *testing.T) jetstream.Stream {
	t.Helper()
	stream, err := c.js.Stream(ctx, eventcodec.DefaultNATSStream)
	if err != nil {
		t.Fatalf("stream %s: %v", eventcodec.DefaultNATSStream, err)
	}
	return stream
}

// checkReadModels checks that the read model holds, for every session in
// the log, the session folded from its stream by the domain's own rules
// (as commands load it), and no other handoffs.
func (c *cluster) checkReadModels(t *testing.T, events []eventstore.Event) {
	t.Helper()
	loader := commands.NewHandler(shred.NewStore(pgstore.New(c.pool), testKeyring(t)), nil)
	views := pgviews.New(c.pool).WithKeys(testKeyring(t))
	streams := map[string]bool{}
	total := 0
	l := &limited{t: t, what: "read model"}
	defer l.done()
	for _, e := range events {
		if streams[e.Stream] {
			continue
		}
		streams[e.Stream] = true
		account, session, err := eventcodec.ParseStreamName(e.Stream)
		if err != nil {
			t.Fatalf("event %d: %v", e.Position, err)
		}
		state, err := loader.Load(t.Context(), account, session)
		if err != nil {
			t.Fatalf("load session %s: %v", session, err)
		}
		want := slices.Clone(state.Handoffs)
		slices.Reverse(want) // the history is newest first
		total += len(want)
		got, err := views.History(t.Context(), account, session, projections.Page{Limit: projections.MaxPageSize})
		if err != nil {
			t.Fatalf("history of %s: %v", session, err)
		}
		if !slices.EqualFunc(got, want, storetest.Equal) {
			l.errorf("session %s:\nthe log folds to %s\nthe read model has %s", session, describe(want), describe(got))
		}
	}
	var rows int
	if err := c.pool.QueryRow(t.Context(), `SELECT count(*) FROM handoffs`).Scan(&rows); err != nil {
		t.Fatalf("count handoffs: %v", err)
	}
	if rows != total {
		t.Errorf("the read model holds %d handoffs, the log folds to %d", rows, total)
	}
}

func describe(hs []domain.Handoff) string {
	return fmt.Sprintf("%+v", hs)
}

// testMasterKey is the master key every process of the cluster is given.
const testMasterKey = "6c65646765726420746573742d6d6173746572206b6579206f6e6c7920202020"

// testKeyring opens the log as the processes do.
func testKeyring(t *testing.T) *shred.Keyring {
	t.Helper()
	m, err := shred.ParseMasterKey(testMasterKey)
	if err != nil {
		t.Fatal(err)
	}
	return shred.NewKeyring(m)
}
