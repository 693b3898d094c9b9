package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/domain"
)

// Sizes of the claim race.
const (
	claimers   = 64
	raceRounds = 20
)

// testClaimRace has 64 engineers of one account click Pick Up on the same
// escalation at once, for many rounds: exactly one wins with 200, the 63
// others get 409 "Handoff already claimed" naming the winner, nobody gets a
// 5xx, and the stream holds exactly one HandoffClaimed.
func testClaimRace(t *testing.T, nb NewBackend) {
	s := startServer(t, nb)
	tm := newTeam()
	roles := []domain.Role{domain.RoleEngineer, domain.RoleAdmin, domain.RoleOwner}
	tokens := make([]string, claimers)
	users := make(map[uuid.UUID]bool, claimers)
	for i := range tokens {
		u := tm.user(roles[i%len(roles)])
		tokens[i], users[u.UserID] = "Bearer "+token(t, u), true
	}
	var total time.Duration
	for round := range raceRounds {
		h := s.escalate(t, tm.user(domain.RoleEngineer), uuid.New())
		start := time.Now()
		results, errs := s.claimAtOnce(h, tokens)
		elapsed := time.Since(start)
		total += elapsed
		if err := checkRace(h, results, errs, users); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		claims := 0
		for _, e := range s.stream(t, tm.account, h.SessionID) {
			if e.Type == domain.TypeHandoffClaimed {
				claims++
			}
		}
		if claims != 1 {
			t.Fatalf("round %d: %d HandoffClaimed events, want 1", round, claims)
		}
		t.Logf("round %d: %d concurrent claims in %v", round, claimers, elapsed.Round(time.Millisecond))
	}
	t.Logf("%d rounds: mean %v per round of %d claims", raceRounds, (total / raceRounds).Round(time.Millisecond), claimers)
}

// claimAtOnce sends one claim per token, all released together.
func (s *apiServer) claimAtOnce(h handoff, tokens []string) ([]response, []error) {
	results := make([]response, len(tokens))
	errs := make([]error, len(tokens))
	ready := make(chan struct{})
	var wg sync.WaitGroup
	for i, tok := range tokens {
		wg.Go(func() {
			<-ready
			r := request{method: http.MethodPost, path: actionPath(h.SessionID, h.ID, "claim"), auth: tok}
			ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
			defer cancel()
			results[i], errs[i] = s.send(ctx, r)
		})
	}
	close(ready)
	wg.Wait()
	return results, errs
}

// checkRace checks the answers to one round of concurrent claims.
func checkRace(h handoff, results []response, errs []error, users map[uuid.UUID]bool) error {
	var winner *handoff
	for i, res := range results {
		if errs[i] != nil {
			return errs[i]
		}
		if res.status != http.StatusOK {
			continue
		}
		if winner != nil {
			return fmt.Errorf("two claims got 200: %s and %s", winner.ClaimedBy, res.body)
		}
		w, err := decodeStrict[handoff](res.body)
		if err != nil {
			return err
		}
		winner = &w
	}
	if winner == nil || winner.ClaimedBy == nil || !users[*winner.ClaimedBy] || winner.ID != h.ID || winner.ClaimedAt == nil {
		return fmt.Errorf("no valid winner among the answers: %+v", winner)
	}
	for _, res := range results {
		if res.status == http.StatusOK {
			continue
		}
		if res.status != http.StatusConflict {
			return fmt.Errorf("a loser got %d: %s", res.status, res.body)
		}
		lost, err := decodeStrict[claimedConflict](res.body)
		if err != nil {
			return err
		}
		if lost.Detail != "Handoff already claimed" || lost.ClaimedBy != *winner.ClaimedBy || !lost.ClaimedAt.Equal(*winner.ClaimedAt) {
			return fmt.Errorf("loser's body %+v does not name the winner %s at %s", lost, *winner.ClaimedBy, winner.ClaimedAt)
		}
	}
	return nil
}
