package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/commands"
	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/projections"
)

// This file helps tests that build read models from a real log: they play
// commands through a handler, then check the read models against the log.

var priorities = []domain.Priority{domain.PriorityLow, domain.PriorityNormal, domain.PriorityHigh, domain.PriorityUrgent}

// Story plays out the life of a new session of the account, through h: an
// engineer of the team parks it, an admin claims it and escalates it, and
// for odd i withdraws the escalation. The commands go through h in order,
// so their times increase. It returns the session and the position of its
// last event, which only a handler that waits for the read models knows
// (see commands.Result; 0 from one that does not). It does not fail a test,
// so it may run on any goroutine.
func Story(ctx context.Context, h *commands.Handler, account, team uuid.UUID, i int) (session uuid.UUID, last int64, err error) {
	session = uuid.New()
	do := func(actor domain.Actor, cmd domain.Command) {
		if err != nil {
			return
		}
		var res commands.Result
		res, err = h.Execute(ctx, actor, session, cmd, commands.Trace{RequestID: uuid.NewString()})
		last = res.Position
	}
	owner := domain.Actor{UserID: uuid.New(), AccountID: account, TeamID: team, Role: domain.RoleEngineer}
	senior := domain.Actor{UserID: uuid.New(), AccountID: account, TeamID: team, Role: domain.RoleAdmin}
	parked, escalated := uuid.New(), uuid.New()
	do(owner, domain.CreateHandoff{Actor: owner, HandoffID: parked, Intent: domain.IntentPark,
		Priority: priorities[i%len(priorities)], Notes: "parked by " + owner.UserID.String(), At: h.Now()})
	do(senior, domain.ClaimHandoff{Actor: senior, HandoffID: parked, At: h.Now()})
	do(senior, domain.CreateHandoff{Actor: senior, HandoffID: escalated, Intent: domain.IntentEscalate,
		Priority: priorities[(i+1)%len(priorities)], Notes: "escalated by " + senior.UserID.String(), At: h.Now()})
	if i%2 == 1 {
		do(senior, domain.WithdrawHandoff{Actor: senior, HandoffID: escalated, At: h.Now()})
	}
	if err != nil {
		return session, last, fmt.Errorf("story %d: %w", i, err)
	}
	return session, last, nil
}

// Stories plays n stories of the account and team at once, on up to 8
// goroutines, and returns their sessions and the highest position
// appended (as Story knows it).
func Stories(tb testing.TB, h *commands.Handler, account, team uuid.UUID, n int) ([]uuid.UUID, int64) {
	tb.Helper()
	sessions := make([]uuid.UUID, n)
	lasts := make([]int64, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			sessions[i], lasts[i], errs[i] = Story(tb.Context(), h, account, team, i)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		tb.Fatal(err)
	}
	return sessions, slices.Max(lasts)
}

// AssertHistories checks the read model against the log: the history q
// gives of each session holds the handoffs of the session's state, as
// loader folds it from the session's stream, newest first. It returns how
// many handoffs the sessions hold.
func AssertHistories(tb testing.TB, loader *commands.Handler, q projections.Queries, account uuid.UUID, sessions []uuid.UUID) int {
	tb.Helper()
	total := 0
	for _, session := range sessions {
		state, err := loader.Load(tb.Context(), account, session)
		if err != nil {
			tb.Fatalf("load session %s: %v", session, err)
		}
		want := slices.Clone(state.Handoffs)
		slices.Reverse(want)
		got := History(tb, q, account, session)
		total += len(want)
		wantHandoffs(tb, "history of session "+session.String()+" against the log", got, want)
	}
	return total
}

// WatchLowest calls count in a loop, on another goroutine, until the
// returned function is called, which returns the lowest count seen. An
// error from count ends the loop and fails tb when the function is called.
func WatchLowest(tb testing.TB, count func(context.Context) (int, error)) func() int {
	tb.Helper()
	ctx, cancel := context.WithCancel(tb.Context())
	type result struct {
		lowest int
		err    error
	}
	done := make(chan result, 1)
	go func() {
		r := result{lowest: -1}
		for ctx.Err() == nil {
			n, err := count(ctx)
			if err != nil {
				if ctx.Err() == nil {
					r.err = err
				}
				break
			}
			if r.lowest < 0 || n < r.lowest {
				r.lowest = n
			}
		}
		done <- r
	}()
	return func() int {
		tb.Helper()
		cancel()
		r := <-done
		if r.err != nil {
			tb.Fatalf("count while watching: %v", r.err)
		}
		return r.lowest
	}
}
