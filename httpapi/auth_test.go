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
	v := newTokenVerifier(Config{JWTSecret: secret})
	actor := domain.Actor{UserID: uuid.New(), AccountID: uuid.New(), TeamID: uuid.New(), Role: domain.RoleAdmin}
	token, err := SignToken(secret, actor, time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	got, err := v.verify("Bearer " + token)
	if err != nil || got != actor {
		t.Fatalf("verify = %+v, %v; want %+v", got, err, actor)
	}
	cached, ok := v.verified.Get(token)
	if !ok || cached.actor != actor {
		t.Fatalf("cache holds %+v, %v after a verified token; want its actor", cached, ok)
	}
	if left := time.Until(cached.expires); left <= 59*time.Minute || left > time.Hour {
		t.Fatalf("cached token expires in %v, want the token's exp (1h)", left)
	}
	if got, err := v.verify("Bearer " + token); err != nil || got != actor {
		t.Fatalf("second verify = %+v, %v; want %+v", got, err, actor)
	}

	// A remembered token whose exp has passed, by more than the clock
	// skew allowed, is expired, not accepted.
	v.verified.Add(token, verifiedToken{actor: actor, expires: time.Now().Add(-clockSkew - time.Second)})
	_, err = v.verify("Bearer " + token)
	var derr *domain.Error
	if !errors.As(err, &derr) || derr.Code != domain.EUNAUTHORIZED || derr.Message != "Token expired" {
		t.Fatalf("verify of an expired remembered token = %v, want unauthorized Token expired", err)
	}
	if v.verified.Contains(token) {
		t.Fatal("an expired token stays in the cache")
	}
}

func TestVerify_DoesNotRememberRejectedTokens(t *testing.T) {
	secret := []byte("token cache test secret")
	v := newTokenVerifier(Config{JWTSecret: secret})
	actor := domain.Actor{UserID: uuid.New(), AccountID: uuid.New(), TeamID: uuid.New(), Role: domain.RoleEngineer}
	forged, err := SignToken([]byte("another secret"), actor, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := v.verify("Bearer " + forged); err == nil {
			t.Fatal("verify accepted a token signed with another secret")
		}
	}
	if n := v.verified.Len(); n != 0 {
		t.Fatalf("cache holds %d tokens after rejections, want 0", n)
	}
}

func TestVerify_IssuerAndAudience(t *testing.T) {
	secret := []byte("issuer and audience test secret")
	v := newTokenVerifier(Config{JWTSecret: secret, JWTIssuer: "https://idp.example", JWTAudience: "ledgerd"})
	actor := domain.Actor{UserID: uuid.New(), AccountID: uuid.New(), TeamID: uuid.New(), Role: domain.RoleEngineer}
	const (
		badIssuer   = "Token claim iss is missing or not accepted"
		badAudience = "Token claim aud is missing or does not name this service"
	)
	cases := []struct {
		name   string
		opts   []TokenOption
		detail string // "" for a token that verifies
	}{
		{"Both", []TokenOption{WithIssuer("https://idp.example"), WithAudience("ledgerd")}, ""},
		{"NoIssuer", []TokenOption{WithAudience("ledgerd")}, badIssuer},
		{"OtherIssuer", []TokenOption{WithIssuer("https://evil.example"), WithAudience("ledgerd")}, badIssuer},
		{"IssuerOtherCase", []TokenOption{WithIssuer("https://IDP.example"), WithAudience("ledgerd")}, badIssuer},
		{"NoAudience", []TokenOption{WithIssuer("https://idp.example")}, badAudience},
		{"OtherAudience", []TokenOption{WithIssuer("https://idp.example"), WithAudience("billing")}, badAudience},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			token, err := SignToken(secret, actor, time.Hour, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			got, err := v.verify("Bearer " + token)
			if tc.detail == "" {
				if err != nil || got != actor {
					t.Fatalf("verify = %+v, %v; want %+v", got, err, actor)
				}
				return
			}
			var derr *domain.Error
			if !errors.As(err, &derr) || derr.Code != domain.EUNAUTHORIZED || derr.Message != tc.detail {
				t.Fatalf("verify = %v, want unauthorized %q", err, tc.detail)
			}
		})
	}

	// Without the settings, iss and aud are not required.
	token, err := SignToken(secret, actor, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := newTokenVerifier(Config{JWTSecret: secret}).verify("Bearer " + token); err != nil || got != actor {
		t.Fatalf("verify without issuer and audience settings = %+v, %v", got, err)
	}
}

func TestVerify_MaxTTL(t *testing.T) {
	secret := []byte("max ttl test secret")
	v := newTokenVerifier(Config{JWTSecret: secret, JWTMaxTTL: 2 * time.Hour})
	actor := domain.Actor{UserID: uuid.New(), AccountID: uuid.New(), TeamID: uuid.New(), Role: domain.RoleViewer}
	for ttl, want := range map[time.Duration]string{
		2 * time.Hour:              "",
		2*time.Hour + 2*clockSkew:  "Token claim exp must be at most 2h0m0s ahead",
		25 * time.Hour:             "Token claim exp must be at most 2h0m0s ahead",
		100 * 365 * 24 * time.Hour: "Token claim exp must be at most 2h0m0s ahead",
	} {
		token, err := SignToken(secret, actor, ttl)
		if err != nil {
			t.Fatal(err)
		}
		_, err = v.verify("Bearer " + token)
		switch {
		case want == "" && err != nil:
			t.Errorf("ttl %v: verify = %v, want the actor", ttl, err)
		case want != "" && (err == nil || err.Error() != want):
			t.Errorf("ttl %v: verify = %v, want %q", ttl, err, want)
		}
	}
}
