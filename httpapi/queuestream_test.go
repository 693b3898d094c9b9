package httpapi_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/httpapi"
)

func init() {
	openapi3filter.RegisterBodyDecoder("text/event-stream", decodeEventStream)
}

// sseEvent is one server-sent event: its name and its data.
type sseEvent struct {
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
}

// parseEventStream reads server-sent events, each data a JSON line.
func parseEventStream(body []byte) ([]sseEvent, error) {
	var out []sseEvent
	for block := range strings.SplitSeq(strings.TrimSuffix(string(body), "\n\n"), "\n\n") {
		var e sseEvent
		for line := range strings.SplitSeq(block, "\n") {
			name, value, _ := strings.Cut(line, ": ")
			switch name {
			case "event":
				e.Event = value
			case "data":
				e.Data = json.RawMessage(value)
			}
		}
		if e.Event == "" && e.Data == nil {
			continue // a comment
		}
		if !json.Valid(e.Data) {
			return nil, fmt.Errorf("event %q: data is not JSON: %s", e.Event, e.Data)
		}
		out = append(out, e)
	}
	return out, nil
}

// decodeEventStream gives the document's schema of the queue stream the
// events as it describes them: an array of {event, data}.
func decodeEventStream(body io.Reader, _ http.Header, _ *openapi3.SchemaRef, _ openapi3filter.EncodingFn) (any, error) {
	raw, err := io.ReadAll(body)
	if err != nil {
		return nil, err
	}
	events, err := parseEventStream(raw)
	if err != nil {
		return nil, err
	}
	out := []any{}
	for _, e := range events {
		var data any
		if err := json.Unmarshal(e.Data, &data); err != nil {
			return nil, err
		}
		out = append(out, map[string]any{"event": e.Event, "data": data})
	}
	return out, nil
}

// queueStream is an open GET /ai-sessions/queue/stream of a test.
type queueStream struct {
	req    *http.Request
	res    *http.Response
	cancel context.CancelFunc
	events chan sseEvent
	done   chan error

	mu  sync.Mutex
	raw bytes.Buffer // the complete events read so far
}

// openQueueStream opens actor's queue stream and waits for its ready
// event; the stream is closed, and what it answered checked against the
// OpenAPI document, when the test ends.
func (s *apiServer) openQueueStream(tb testing.TB, actor domain.Actor) *queueStream {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/ai-sessions/queue/stream", nil)
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token(tb, actor))
	res, err := s.client.Do(req)
	if err != nil {
		cancel()
		tb.Fatalf("open the queue stream: %v", err)
	}
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/event-stream" {
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		cancel()
		tb.Fatalf("queue stream: %d %s %s", res.StatusCode, res.Header.Get("Content-Type"), body)
	}
	qs := &queueStream{req: req, res: res, cancel: cancel, events: make(chan sseEvent, 100), done: make(chan error, 1)}
	go qs.read()
	tb.Cleanup(func() {
		qs.close()
		qs.mu.Lock()
		body := bytes.Clone(qs.raw.Bytes())
		qs.mu.Unlock()
		if err := conforms(context.Background(), req, "", response{status: res.StatusCode, header: res.Header, body: body}); err != nil {
			tb.Error(err)
		}
	})
	if e := qs.next(tb, 10*time.Second); e.Event != "ready" {
		tb.Fatalf("first event = %s %s, want ready", e.Event, e.Data)
	}
	return qs
}

func (qs *queueStream) read() {
	r := bufio.NewReader(qs.res.Body)
	var block bytes.Buffer
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			qs.done <- err
			close(qs.events)
			return
		}
		block.Write(line)
		if len(line) > 1 {
			continue
		}
		events, err := parseEventStream(block.Bytes())
		if err != nil {
			qs.done <- err
			close(qs.events)
			return
		}
		qs.mu.Lock()
		qs.raw.Write(block.Bytes())
		qs.mu.Unlock()
		block.Reset()
		for _, e := range events {
			qs.events <- e
		}
	}
}

func (qs *queueStream) close() {
	qs.cancel()
	qs.res.Body.Close()
}

// next returns the stream's next event, failing the test when none comes
// within limit.
func (qs *queueStream) next(tb testing.TB, limit time.Duration) sseEvent {
	tb.Helper()
	select {
	case e, ok := <-qs.events:
		if !ok {
			tb.Fatalf("the queue stream ended: %v", <-qs.done)
		}
		return e
	case <-time.After(limit):
		tb.Fatalf("no queue stream event within %v", limit)
	}
	return sseEvent{}
}

// nextHandoff returns the handoff of the stream's next event, which must
// be a handoff event.
func (qs *queueStream) nextHandoff(tb testing.TB, limit time.Duration) handoff {
	tb.Helper()
	e := qs.next(tb, limit)
	if e.Event != "handoff" {
		tb.Fatalf("event = %s %s, want a handoff", e.Event, e.Data)
	}
	v, err := decodeStrict[struct {
		Position int64   `json:"position"`
		Handoff  handoff `json:"handoff"`
	}](e.Data)
	if err != nil {
		tb.Fatal(err)
	}
	if v.Position < 1 {
		tb.Fatalf("handoff event at position %d", v.Position)
	}
	return v.Handoff
}

// expectChanges reads handoff events until each handoff of states has
// shown its last state there, failing on a state not in states or older
// than one its handoff showed before. states are the states of some
// handoffs in the order they took them. A handoff's state may show again,
// and an intermediate one may be skipped: each event gives a handoff's
// state as the read models have it when the stream reads them.
func (qs *queueStream) expectChanges(tb testing.TB, limit time.Duration, states ...handoff) {
	tb.Helper()
	final := map[uuid.UUID]int{}
	for i, h := range states {
		final[h.ID] = i
	}
	seen := map[uuid.UUID]int{}
	for len(final) > 0 {
		got := qs.nextHandoff(tb, limit)
		j := slices.IndexFunc(states, func(h handoff) bool { return sameHandoff(h, got) })
		if j < 0 {
			tb.Fatalf("streamed %+v, not one of %+v", got, states)
		}
		if before, ok := seen[got.ID]; ok && j < before {
			tb.Fatalf("streamed %+v after a later state of it", got)
		}
		seen[got.ID] = j
		if final[got.ID] == j {
			delete(final, got.ID)
		}
	}
}

// expectQuiet fails when the stream has an event within d.
func (qs *queueStream) expectQuiet(tb testing.TB, d time.Duration) {
	tb.Helper()
	select {
	case e, ok := <-qs.events:
		if ok {
			tb.Fatalf("unexpected event %s %s", e.Event, e.Data)
		}
	case <-time.After(d):
	}
}

// testQueueStream follows the queue streams of a team, another team of the
// account, an auditor and another account through an escalation, a claim,
// a park and a withdrawal: each sees its own queue's changes, at once and
// in order, and nothing of any other queue.
func testQueueStream(t *testing.T, nb NewBackend) {
	s := startServer(t, nb)
	tm := newTeam()
	alice, bob := tm.user(domain.RoleEngineer), tm.user(domain.RoleViewer)
	other := team{account: tm.account, id: uuid.New()}
	carol := other.user(domain.RoleEngineer)
	auditor := team{account: tm.account, id: uuid.New()}.user(domain.RoleAuditor)
	dave := newTeam().user(domain.RoleOwner)

	// A handoff from before the streams open is not replayed.
	s.escalate(t, carol, uuid.New())

	bobs, carols, auditors, daves := s.openQueueStream(t, bob), s.openQueueStream(t, carol), s.openQueueStream(t, auditor), s.openQueueStream(t, dave)
	const soon = 5 * time.Second // at once, on an idle machine; bounded on a loaded one
	session := uuid.New()
	start := time.Now()
	escalated := s.escalate(t, alice, session)
	for _, qs := range []*queueStream{bobs, auditors} {
		if got := qs.nextHandoff(t, soon); !sameHandoff(got, escalated) {
			t.Fatalf("streamed %+v, want %+v", got, escalated)
		}
	}
	t.Logf("escalation streamed after %v", time.Since(start))

	claimed := s.claim(t, alice, escalated)
	parked := s.create(t, alice, session, `{"intent":"park","engineer_notes":"<script>alert(1)</script>","priority":"low"}`)
	withdrawn := decode[handoff](t, s.do(t, as(t, alice, http.MethodPost, actionPath(session, parked.ID, "withdraw"), ""), http.StatusOK))
	// Each change shows in order; a state may show again when the read
	// models had it already as the stream read an earlier event.
	for _, qs := range []*queueStream{bobs, auditors} {
		qs.expectChanges(t, soon, escalated, claimed, parked, withdrawn)
	}
	// The other team and the other account saw nothing of it; the other
	// team sees its own.
	daves.expectQuiet(t, 300*time.Millisecond)
	mine := s.escalate(t, carol, uuid.New())
	if got := carols.nextHandoff(t, soon); !sameHandoff(got, mine) {
		t.Fatalf("carol streamed %+v, want her own %+v", got, mine)
	}
	daves.expectQuiet(t, 300*time.Millisecond)
}

// testQueueStreamRefusals checks the stream's token rules: it is the
// queue's.
func testQueueStreamRefusals(t *testing.T, nb NewBackend) {
	s := startServer(t, nb)
	s.expectError(t, request{method: http.MethodGet, path: "/ai-sessions/queue/stream"}, http.StatusUnauthorized, "Missing bearer token")
	s.expectError(t, request{method: http.MethodGet, path: "/ai-sessions/queue/stream", auth: "Bearer nonsense"}, http.StatusUnauthorized, "Invalid token")
}

// silentTail is a LogTail that never signals an append, as for appends
// made by another process.
type silentTail struct{ httpapi.LogTail }

func (silentTail) Appended() <-chan struct{} { return nil }

// TestQueueStream_FindsAppendsOfOtherProcesses runs the stream with no
// wake-ups at all: it finds the changes by polling, within a second.
func TestQueueStream_FindsAppendsOfOtherProcesses(t *testing.T) {
	b := newSQLiteBackend(t)
	s := serveBackend(t, b, func(cfg *httpapi.Config) { cfg.Tail = silentTail{cfg.Tail} })
	tm := newTeam()
	alice, bob := tm.user(domain.RoleEngineer), tm.user(domain.RoleEngineer)
	bobs := s.openQueueStream(t, bob)
	h := s.escalate(t, alice, uuid.New())
	start := time.Now()
	if got := bobs.nextHandoff(t, 5*time.Second); got.ID != h.ID {
		t.Fatalf("streamed %+v", got)
	}
	start = time.Now()
	s.claim(t, alice, h)
	if got := bobs.nextHandoff(t, 5*time.Second); got.Status != "claimed" {
		t.Fatalf("streamed %+v", got)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("the claim was streamed after %v, want within a second", took)
	}
}

// TestQueueStream_EndsAtShutdown checks that an open stream ends when the
// server begins to shut down, rather than holding the shutdown up.
func TestQueueStream_EndsAtShutdown(t *testing.T) {
	closing := make(chan struct{})
	s := serveBackend(t, newSQLiteBackend(t), func(cfg *httpapi.Config) { cfg.Closing = closing })
	qs := s.openQueueStream(t, newTeam().user(domain.RoleEngineer))
	close(closing)
	select {
	case _, ok := <-qs.events:
		if ok {
			t.Fatal("an event after the shutdown began")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the stream is still open 5 s after the shutdown began")
	}
}

// testQueueStreamAcrossTeams follows a session whose handoff one team
// escalated and an engineer of another team claimed and parked again: the
// first team sees its handoff leave its queue and nothing of the park; the
// other team sees only the park.
func testQueueStreamAcrossTeams(t *testing.T, nb NewBackend) {
	s := startServer(t, nb)
	tm := newTeam()
	alice, bob := tm.user(domain.RoleEngineer), tm.user(domain.RoleViewer)
	other := team{account: tm.account, id: uuid.New()}
	carol, dave := other.user(domain.RoleEngineer), other.user(domain.RoleViewer)
	session := uuid.New()
	escalated := s.escalate(t, alice, session)
	bobs, daves := s.openQueueStream(t, bob), s.openQueueStream(t, dave)
	claimed := s.claim(t, carol, escalated)
	parked := s.create(t, carol, session, `{"intent":"park","engineer_notes":"mine now","priority":"low"}`)
	bobs.expectChanges(t, 5*time.Second, claimed)
	daves.expectChanges(t, 5*time.Second, parked)
	// A change of another session shows next: nothing else came before it.
	mine := s.escalate(t, alice, uuid.New())
	bobs.expectChanges(t, 5*time.Second, mine)
	withdrawn := decode[handoff](t, s.do(t, as(t, carol, http.MethodPost, actionPath(session, parked.ID, "withdraw"), ""), http.StatusOK))
	daves.expectChanges(t, 5*time.Second, parked, withdrawn)
	bobs.expectQuiet(t, 300*time.Millisecond)
}
