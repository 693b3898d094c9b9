package httpapi_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/domain"
)

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
