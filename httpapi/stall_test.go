package httpapi_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventstore/pgstore"
	"github.com/resolutionflow/ledgerd/httpapi"
	"github.com/resolutionflow/ledgerd/internal/ledgertest"
	"github.com/resolutionflow/ledgerd/internal/pgtest"
	"github.com/resolutionflow/ledgerd/leader"
	"github.com/resolutionflow/ledgerd/leader/pgleader"
	"github.com/resolutionflow/ledgerd/projections"
	"github.com/resolutionflow/ledgerd/projections/pgviews"
)

// readiness is a /readyz answer.
type readiness struct {
	Detail string            `json:"detail"`
	Status string            `json:"status"`
	Checks map[string]string `json:"checks"`
}

// relayCheckpoint stands for the relay's checkpoint, which the test moves
// by hand as a relay would.
const relayCheckpoint = "relay.nats"

// TestStallCheck_Postgres stops the projector while commands go on, and
// checks that /readyz names the stalled projector (200, degraded) within
// the bound, and the relay whose checkpoint stands still too; that each
// clears once its checkpoint moves again; and that an idle log, however
// long, is no stall.
func TestStallCheck_Postgres(t *testing.T) {
	const after = 200 * time.Millisecond
	pool := pgtest.NewPool(t, poolSize)
	events, views := pgstore.New(pool), pgviews.New(pool)
	s := startServer(t, func(tb testing.TB) Backend { return postgresBackend(tb, postgresOptions{Pool: pool}) },
		httpapi.StallCheck("projector", projections.NewStallWatch(views, events, projections.HandoffsProjector, after)),
		httpapi.StallCheck("relay", projections.NewStallWatch(views, events, relayCheckpoint, after)))
	alice := newTeam().user(domain.RoleEngineer)
	session := uuid.New()
	s.escalate(t, alice, session)
	s.history(t, alice, session) // the projector has caught up
	moveRelay(t, views, events)

	// Idle for several times the bound: no stall.
	for range 3 {
		if got := s.readiness(t); got.Status != "ok" {
			t.Fatalf("/readyz with an idle log = %+v", got)
		}
		time.Sleep(after)
	}

	s.Backend.StopProjector()
	s.escalate(t, alice, uuid.New())
	head, err := events.Head(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	got := s.readinessUntil(t, "/readyz sees both stalls", func(r readiness) bool {
		return r.Checks["projector"] == "failing" && r.Checks["relay"] == "failing"
	})
	for _, want := range []string{
		"projector handoffs: checkpoint 1 has not moved for ",
		"relay relay.nats: checkpoint 1 has not moved for ",
		"while the log's head is " + strconv.FormatInt(head, 10),
	} {
		if got.Status != "degraded" || !strings.Contains(got.Detail, want) {
			t.Fatalf("/readyz with the projector and the relay stopped = %+v, want degraded with %q", got, want)
		}
	}

	moveRelay(t, views, events)
	got = s.readinessUntil(t, "the relay's stall clears", func(r readiness) bool { return r.Checks["relay"] == "ok" })
	if got.Checks["projector"] != "failing" || strings.Contains(got.Detail, "relay") {
		t.Fatalf("/readyz with the relay moved on = %+v, want only the projector stalled", got)
	}

	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	locker, err := pgleader.New(pool, logger, pgleader.Config{})
	if err != nil {
		t.Fatal(err)
	}
	projector := projections.NewProjector(events, views, locker, events.Appended, logger)
	runInBackground(t, projector.Run)
	s.readinessUntil(t, "the projector's stall clears", func(r readiness) bool { return r.Status == "ok" })
}

// moveRelay moves the relay's checkpoint to the head of the log.
func moveRelay(tb testing.TB, views *pgviews.Store, events *pgstore.Store) {
	tb.Helper()
	ctx := context.Background()
	from, err := views.Checkpoint(ctx, relayCheckpoint)
	if err != nil {
		tb.Fatal(err)
	}
	head, err := events.Head(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	if err := views.Move(ctx, leader.Fence{}, relayCheckpoint, from, head); err != nil {
		tb.Fatal(err)
	}
}

// readiness asks /readyz, which must answer 200.
func (s *apiServer) readiness(tb testing.TB) readiness {
	tb.Helper()
	return decode[readiness](tb, s.do(tb, request{method: http.MethodGet, path: "/readyz"}, http.StatusOK))
}

// stallBound bounds how long a test waits for /readyz to see a stall, or
// its end: the stall bound and a loaded machine's delays.
const stallBound = 10 * time.Second

// readinessUntil asks /readyz until its answer satisfies ok, within
// stallBound, and returns that answer.
func (s *apiServer) readinessUntil(tb testing.TB, what string, ok func(readiness) bool) readiness {
	tb.Helper()
	var got readiness
	ledgertest.WaitUntil(tb, stallBound, what, func() bool {
		got = s.readiness(tb)
		return ok(got)
	})
	return got
}

// TestReadyz_SharedCheckName: checks that share a name show as one, failing
// when any of them fails, whatever their order.
func TestReadyz_SharedCheckName(t *testing.T) {
	failing := httpapi.Check{Name: "projector", Degrading: true, Func: func(context.Context) error { return httpapi.Notice("stalled") }}
	passing := httpapi.Check{Name: "projector", Degrading: true, Func: func(context.Context) error { return nil }}
	s := startServer(t, newPostgresBackend, failing, passing)
	if got := s.readiness(t); got.Status != "degraded" || got.Checks["projector"] != "failing" || got.Detail != "stalled" {
		t.Fatalf("/readyz = %+v, want the projector failing", got)
	}
}
