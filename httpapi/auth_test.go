package httpapi

import (
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/domain"
)

// The REST suite checks what verify accepts and rejects; these tests check
// that remembering verified tokens changes none of it.

func TestVerify_RemembersTokenUntilItExpires(t *testing.T) {
	secret := []byte("token cache test secret")
	s := &server{secret: secret, tokens: newTokenCache()}
	actor := domain.Actor{UserID: uuid.New(), AccountID: uuid.New(), TeamID: uuid.New(), Role: domain.RoleAdmin}
	token, err := SignToken(secret, actor, time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	got, err := s.verify("Bearer " + token)
	if err != nil || got != actor {
		t.Fatalf("verify = %+v, %v; want %+v", got, err, actor)
	}
	cached, ok := s.tokens.Get(token)
	if !ok || cached.actor != actor {
		t.Fatalf("cache holds %+v, %v after a verified token; want its actor", cached, ok)
	}
	if left := time.Until(cached.expires); left <= 59*time.Minute || left > time.Hour {
		t.Fatalf("cached token expires in %v, want the token's exp (1h)", left)
	}
	if got, err := s.verify("Bearer " + token); err != nil || got != actor {
		t.Fatalf("second verify = %+v, %v; want %+v", got, err, actor)
	}

	// A remembered token whose exp has passed is expired, not accepted.
	s.tokens.Add(token, verifiedToken{actor: actor, expires: time.Now().Add(-time.Second)})
	_, err = s.verify("Bearer " + token)
	var derr *domain.Error
	if !errors.As(err, &derr) || derr.Code != domain.EUNAUTHORIZED || derr.Message != "Token expired" {
		t.Fatalf("verify of an expired remembered token = %v, want unauthorized Token expired", err)
	}
	if s.tokens.Contains(token) {
		t.Fatal("an expired token stays in the cache")
	}
}

func TestVerify_DoesNotRememberRejectedTokens(t *testing.T) {
	secret := []byte("token cache test secret")
	s := &server{secret: secret, tokens: newTokenCache()}
	actor := domain.Actor{UserID: uuid.New(), AccountID: uuid.New(), TeamID: uuid.New(), Role: domain.RoleEngineer}
	forged, err := SignToken([]byte("another secret"), actor, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := s.verify("Bearer " + forged); err == nil {
			t.Fatal("verify accepted a token signed with another secret")
		}
	}
	if n := s.tokens.Len(); n != 0 {
		t.Fatalf("cache holds %d tokens after rejections, want 0", n)
	}
}
