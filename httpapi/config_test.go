package httpapi_test

import (
	"strings"
	"testing"
	"time"

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
