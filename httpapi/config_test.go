package httpapi_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/httpapi"
)

func TestNew_RejectsIncompleteConfig(t *testing.T) {
	_, err := httpapi.New(httpapi.Config{})
	if err == nil {
		t.Fatal("New accepted an empty Config")
	}
	for _, field := range []string{"Commands", "Queries", "Events", "Idempotency", "JWTSecret"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error %q does not name %s", err, field)
		}
	}
}

func TestSignToken_RejectsEmptySecretAndTTL(t *testing.T) {
	actor := newTeam().user(domain.RoleEngineer)
	if _, err := httpapi.SignToken(nil, actor, time.Hour); err == nil {
		t.Error("SignToken accepted an empty secret")
	}
	if _, err := httpapi.SignToken(testSecret, actor, 0); err == nil {
		t.Error("SignToken accepted a zero ttl")
	}
}

// TestConfig_ClockStampsCommands gives the API a clock of its own: every
// command's handoff carries its readings, not the wall clock's.
func TestConfig_ClockStampsCommands(t *testing.T) {
	at := time.Date(2031, 5, 4, 3, 2, 1, 123456000, time.UTC)
	s := startConfigured(t, newSQLiteBackend, func(cfg *httpapi.Config) { cfg.Clock = func() time.Time { return at } })
	tm := newTeam()
	h := s.escalate(t, tm.user(domain.RoleEngineer), uuid.New())
	claimed := s.claim(t, tm.user(domain.RoleAdmin), h)
	if !h.CreatedAt.Equal(at) || claimed.ClaimedAt == nil || !claimed.ClaimedAt.Equal(at) {
		t.Fatalf("created_at %v, claimed_at %v; want both %v", h.CreatedAt, claimed.ClaimedAt, at)
	}
}
