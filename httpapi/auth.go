package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
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

// TokenOption adds a claim to a token SignToken makes.
type TokenOption func(*tokenClaims)

// WithIssuer sets the token's iss claim.
func WithIssuer(iss string) TokenOption {
	return func(c *tokenClaims) { c.Issuer = iss }
}

// WithAudience sets the token's aud claim.
func WithAudience(aud string) TokenOption {
	return func(c *tokenClaims) { c.Audience = jwt.ClaimStrings{aud} }
}

// SignToken returns an HS256 bearer token for actor that expires after ttl.
func SignToken(secret []byte, actor domain.Actor, ttl time.Duration, opts ...TokenOption) (string, error) {
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
	for _, opt := range opts {
		opt(&claims)
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
		actor, err := s.tokens.verify(c.Request().Header.Get(echo.HeaderAuthorization))
		if err != nil {
			return err
		}
		c.Set(ctxActor, actor)
		return next(c)
	}
}

// mayCommand refuses, with 403, a command from a role that only reads,
// before anything of the request is looked at or kept.
func mayCommand(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if !actorOf(c).Role.CanCommand() {
			return domain.Errorf(domain.EFORBIDDEN, domain.MsgReadOnlyRole)
		}
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

// DefaultJWTMaxTTL is how far ahead a token's exp may be when
// Config.JWTMaxTTL is 0.
const DefaultJWTMaxTTL = 24 * time.Hour

// clockSkew is how far the clocks of the server and of whatever made a
// token may differ: exp, nbf and iat are checked with this leeway.
const clockSkew = 30 * time.Second

// knownClaims are the claims a ledger token may carry with a meaning.
var knownClaims = []string{"sub", "exp", "iat", "nbf", "iss", "aud", "account_id", "team_id", "role", "jti"}

// verifiedToken is what a token was found to say when its signature and
// claims were checked.
type verifiedToken struct {
	actor   domain.Actor
	expires time.Time
}

// tokenVerifier checks bearer tokens. It remembers verified tokens by their
// exact text, so that a client's next request with the same token costs a
// map lookup instead of an HMAC and three JSON decodes. A token's text
// includes its signature, so a hit is a token this server has verified;
// its expiry is checked again on every use.
type tokenVerifier struct {
	secret   []byte
	issuer   string
	audience string
	maxTTL   time.Duration
	// parser checks a token's algorithm and signature, validator its
	// times.
	parser    *jwt.Parser
	validator *jwt.Validator
	verified  *lru.Cache[string, verifiedToken]
}

// newTokenVerifier returns the verifier of cfg's tokens.
func newTokenVerifier(cfg Config) *tokenVerifier {
	verified, err := lru.New[string, verifiedToken](tokenCacheSize)
	if err != nil {
		panic(err) // only for a size below 1
	}
	v := &tokenVerifier{
		secret:    cfg.JWTSecret,
		issuer:    cfg.JWTIssuer,
		audience:  cfg.JWTAudience,
		maxTTL:    cfg.JWTMaxTTL,
		parser:    jwt.NewParser(jwt.WithValidMethods([]string{signingMethod.Alg()}), jwt.WithoutClaimsValidation()),
		validator: jwt.NewValidator(jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithLeeway(clockSkew)),
		verified:  verified,
	}
	if v.maxTTL == 0 {
		v.maxTTL = DefaultJWTMaxTTL
	}
	return v
}

// verify returns the actor of an Authorization header value.
func (v *tokenVerifier) verify(header string) (domain.Actor, error) {
	if header == "" {
		return domain.Actor{}, unauthorized("Missing bearer token")
	}
	scheme, raw, ok := strings.Cut(header, " ")
	raw = strings.TrimSpace(raw)
	if !ok || !strings.EqualFold(scheme, "Bearer") || raw == "" {
		return domain.Actor{}, unauthorized("Authorization header must be: Bearer <token>")
	}
	if t, ok := v.verified.Get(raw); ok {
		if !time.Now().Before(t.expires.Add(clockSkew)) {
			v.verified.Remove(raw)
			return domain.Actor{}, errTokenExpired
		}
		return t.actor, nil
	}
	var claims tokenClaims
	if _, err := v.parser.ParseWithClaims(raw, &claims, func(*jwt.Token) (any, error) { return v.secret, nil }); err != nil {
		return domain.Actor{}, fmt.Errorf("%w: %w", errInvalidToken, err) // the cause is logged, not answered
	}
	// The signature holds: the payload is the one that was signed. Its
	// names are checked before its claims, which encoding/json may have
	// taken from a name spelled otherwise.
	payload, err := v.parser.DecodeSegment(strings.Split(raw, ".")[1])
	if err != nil {
		return domain.Actor{}, errInvalidToken
	}
	if err := checkClaimNames(payload); err != nil {
		return domain.Actor{}, err
	}
	err = v.validator.Validate(claims)
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return domain.Actor{}, errTokenExpired
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return domain.Actor{}, unauthorized("Token claim exp is required")
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return domain.Actor{}, unauthorized("Token not valid yet: its nbf or iat is in the future")
	case err != nil:
		return domain.Actor{}, fmt.Errorf("%w: %w", errInvalidToken, err)
	}
	if err := v.checkClaims(claims); err != nil {
		return domain.Actor{}, err
	}
	actor, err := claims.actor()
	if err != nil {
		return domain.Actor{}, err
	}
	v.verified.Add(raw, verifiedToken{actor: actor, expires: claims.ExpiresAt.Time})
	return actor, nil
}

var (
	errTokenExpired = unauthorized("Token expired")
	errInvalidToken = unauthorized("Invalid token")
)

// checkClaims checks the token's lifetime, issuer and audience.
func (v *tokenVerifier) checkClaims(c tokenClaims) error {
	if c.ExpiresAt.After(time.Now().Add(v.maxTTL + clockSkew)) {
		return unauthorized("Token claim exp must be at most " + v.maxTTL.String() + " ahead")
	}
	if v.issuer != "" && c.Issuer != v.issuer {
		return unauthorized("Token claim iss is missing or not accepted")
	}
	if v.audience != "" && !slices.Contains(c.Audience, v.audience) {
		return unauthorized("Token claim aud is missing or does not name this service")
	}
	return nil
}

// checkClaimNames refuses a payload whose object repeats a name, or has a
// name that differs from a known claim only in case. encoding/json, which
// decodes the claims, matches names without regard to case and lets the
// last of two equal names win, so either would let a token say one thing
// to a reader and another to the server: {"role":"viewer","Role":"owner"}.
func checkClaimNames(payload []byte) error {
	dec := json.NewDecoder(bytes.NewReader(payload))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return errInvalidToken
	}
	seen := make(map[string]bool)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return errInvalidToken
		}
		name, _ := tok.(string)
		if seen[name] {
			return unauthorized("Token claims must not repeat a name")
		}
		seen[name] = true
		for _, known := range knownClaims {
			if name != known && strings.EqualFold(name, known) {
				return unauthorized(fmt.Sprintf("Token claim %q is not %q: claim names are case-sensitive", name, known))
			}
		}
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return errInvalidToken
		}
	}
	return nil
}

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
