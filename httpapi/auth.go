package httpapi

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/hashicorp/golang-lru/v2"
	"github.com/labstack/echo/v4"

	"github.com/resolutionflow/ledgerd/domain"
)

// signingMethod is the only algorithm accepted and issued.
var signingMethod = jwt.SigningMethodHS256

// tokenClaims are the claims of a ledger bearer token. sub is the user.
type tokenClaims struct {
	jwt.RegisteredClaims
	AccountID string `json:"account_id"`
	TeamID    string `json:"team_id"`
	Role      string `json:"role"`
}

// SignToken returns an HS256 bearer token for actor that expires after ttl.
func SignToken(secret []byte, actor domain.Actor, ttl time.Duration) (string, error) {
	if len(secret) == 0 {
		return "", errors.New("sign token: empty secret")
	}
	if ttl <= 0 {
		return "", fmt.Errorf("sign token: ttl must be positive, got %v", ttl)
	}
	now := time.Now()
	claims := tokenClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   actor.UserID.String(),
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
		AccountID: actor.AccountID.String(),
		TeamID:    actor.TeamID.String(),
		Role:      string(actor.Role),
	}
	token, err := jwt.NewWithClaims(signingMethod, claims).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return token, nil
}

// authenticate lets through requests with a valid bearer token and puts
// their actor in the context; it rejects the others with 401.
func (s *server) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		// Two headers could be read differently by a proxy in front.
		if len(c.Request().Header.Values(echo.HeaderAuthorization)) > 1 {
			return unauthorized("Only one Authorization header is allowed")
		}
		actor, err := s.verify(c.Request().Header.Get(echo.HeaderAuthorization))
		if err != nil {
			return err
		}
		c.Set(ctxActor, actor)
		return next(c)
	}
}

func actorOf(c echo.Context) domain.Actor {
	actor, _ := c.Get(ctxActor).(domain.Actor)
	return actor
}

func unauthorized(detail string) error {
	return domain.Errorf(domain.EUNAUTHORIZED, "%s", detail)
}

// tokenCacheSize bounds how many verified tokens the server remembers.
const tokenCacheSize = 10_000

// verifiedToken is what a token was found to say when its signature and
// claims were checked.
type verifiedToken struct {
	actor   domain.Actor
	expires time.Time
}

// tokenCache remembers verified tokens by their exact text, so that a
// client's next request with the same token costs a map lookup instead of
// an HMAC and three JSON decodes. A token's text includes its signature, so
// a hit is a token this server has verified; its expiry is checked again
// on every use.
type tokenCache = lru.Cache[string, verifiedToken]

func newTokenCache() *tokenCache {
	c, err := lru.New[string, verifiedToken](tokenCacheSize)
	if err != nil {
		panic(err) // only for a size below 1
	}
	return c
}

// verify returns the actor of an Authorization header value.
func (s *server) verify(header string) (domain.Actor, error) {
	if header == "" {
		return domain.Actor{}, unauthorized("Missing bearer token")
	}
	scheme, raw, ok := strings.Cut(header, " ")
	raw = strings.TrimSpace(raw)
	if !ok || !strings.EqualFold(scheme, "Bearer") || raw == "" {
		return domain.Actor{}, unauthorized("Authorization header must be: Bearer <token>")
	}
	if v, ok := s.tokens.Get(raw); ok {
		if !time.Now().Before(v.expires) {
			s.tokens.Remove(raw)
			return domain.Actor{}, errTokenExpired
		}
		return v.actor, nil
	}
	var claims tokenClaims
	_, err := jwt.ParseWithClaims(raw, &claims, func(*jwt.Token) (any, error) { return s.secret, nil },
		jwt.WithValidMethods([]string{signingMethod.Alg()}), jwt.WithExpirationRequired())
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return domain.Actor{}, errTokenExpired
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return domain.Actor{}, unauthorized("Token claim exp is required")
	case err != nil:
		return domain.Actor{}, unauthorized("Invalid token")
	}
	actor, err := claims.actor()
	if err != nil {
		return domain.Actor{}, err
	}
	s.tokens.Add(raw, verifiedToken{actor: actor, expires: claims.ExpiresAt.Time})
	return actor, nil
}

var errTokenExpired = unauthorized("Token expired")

// actor checks the ledger's claims and returns who they name.
func (c tokenClaims) actor() (domain.Actor, error) {
	var a domain.Actor
	var err error
	if a.UserID, err = claimID("sub", c.Subject); err != nil {
		return domain.Actor{}, err
	}
	if a.AccountID, err = claimID("account_id", c.AccountID); err != nil {
		return domain.Actor{}, err
	}
	if a.TeamID, err = claimID("team_id", c.TeamID); err != nil {
		return domain.Actor{}, err
	}
	if a.Role, err = domain.ParseRole(c.Role); err != nil {
		return domain.Actor{}, unauthorized("Token claim " + domain.ErrorMessage(err))
	}
	return a, nil
}

func claimID(name, value string) (uuid.UUID, error) {
	id, err := uuid.Parse(value)
	if err != nil || id == uuid.Nil {
		return uuid.Nil, unauthorized("Token claim " + name + " must be a UUID")
	}
	return id, nil
}
