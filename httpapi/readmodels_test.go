package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
)

// testPoisonEvent appends an event the read model cannot apply, as a
// faulty writer might: commands and reads must go on, and /readyz must
// say "degraded", naming the projector, how many events it skipped and
// their positions, while the log says it too.
func testPoisonEvent(t *testing.T, nb NewBackend) {
	s := startServer(t, nb)
	alice := newTeam().user(domain.RoleEngineer)
	poison, err := s.Backend.Log.Append(t.Context(), eventcodec.StreamName(alice.AccountID, uuid.New()), eventstore.NoStream,
		[]eventstore.NewEvent{{Type: domain.TypeHandoffParked, Data: json.RawMessage(`{"handoff_id": 42}`)}})
	if err != nil {
		t.Fatalf("append the poison event: %v", err)
	}
	h := s.escalate(t, alice, uuid.New())
	if q := s.queue(t, alice); len(q) != 1 || !sameHandoff(q[0], h) {
		t.Fatalf("queue after the poison event = %+v, want [%+v]", q, h)
	}
	// The past is told as the read models tell it: without the poison.
	now := asOfPath("/ai-sessions/queue", time.Now())
	if q := decode[[]handoff](t, s.do(t, as(t, alice, http.MethodGet, now, ""), http.StatusOK)); len(q) != 1 || !sameHandoff(q[0], h) {
		t.Fatalf("queue as of now after the poison event = %+v, want [%+v]", q, h)
	}

	type readyBody struct {
		Detail string            `json:"detail"`
		Status string            `json:"status"`
		Checks map[string]string `json:"checks"`
	}
	ready := decode[readyBody](t, s.do(t, request{method: http.MethodGet, path: "/readyz"}, http.StatusOK))
	pos := poison[0].Position
	want := fmt.Sprintf("projector handoffs skipped 1 event it cannot apply, positions %d to %d", pos, pos)
	if ready.Status != "degraded" || ready.Detail != want || ready.Checks["projector"] != "failing" {
		t.Fatalf("/readyz after a poison event = %+v, want degraded: %s", ready, want)
	}
	if !strings.Contains(s.logs.String(), want) {
		t.Errorf("the log does not say %q: %s", want, s.logs.String())
	}
}

// testReadWaitBounded stops the projector, so that the read model falls
// behind the log after a command: each read must then answer 503 with a
// detail and Retry-After once its bound has passed, never hang.
func testReadWaitBounded(t *testing.T, open func(tb testing.TB, readWait time.Duration) Backend) {
	t.Parallel()
	const readWait = 300 * time.Millisecond
	s := startServer(t, func(tb testing.TB) Backend { return open(tb, readWait) })
	alice := newTeam().user(domain.RoleEngineer)
	session := uuid.New()
	s.escalate(t, alice, session)
	s.queue(t, alice) // read-your-writes while the projector runs

	s.Backend.StopProjector()
	s.escalate(t, alice, uuid.New())
	for _, path := range []string{"/ai-sessions/queue", historyPath(session)} {
		// A hanging read would end at this client's bound, far above the
		// server's, and fail the test.
		ctx, cancel := context.WithTimeout(t.Context(), 20*readWait)
		res, err := s.send(ctx, as(t, alice, http.MethodGet, path, ""))
		cancel()
		if err != nil {
			t.Fatalf("read with the projector stopped: %v", err)
		}
		if res.status != http.StatusServiceUnavailable || res.header.Get("Retry-After") != "1" {
			t.Fatalf("GET %s with the projector stopped: status %d, Retry-After %q; want 503 and 1; body %s",
				path, res.status, res.header.Get("Retry-After"), res.body)
		}
		if got := detail(t, res); got != "Read models are behind the log; retry shortly" {
			t.Errorf("GET %s: detail %q", path, got)
		}
	}
}
