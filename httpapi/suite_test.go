package httpapi_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/oklog/ulid/v2"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/httpapi"
	"github.com/resolutionflow/ledgerd/idempotency"
)

// runSuite runs the REST tests on a backend; each test gets its own.
func runSuite(t *testing.T, nb NewBackend) {
	tests := []struct {
		name string
		run  func(t *testing.T, nb NewBackend)
	}{
		{"Flow", testFlow},
		{"HandoffJSONShape", testHandoffJSONShape},
		{"CreateDefaults", testCreateDefaults},
		{"QueueOrder", testQueueOrder},
		{"Pages", testPages},
		{"PageLimits", testPageLimits},
		{"PageCursors", testPageCursors},
		{"AsOf", testAsOf},
		{"AsOfRefusesBadInstants", testAsOfBadInstants},
		{"Unauthorized", testUnauthorized},
		{"ViewerCannotClaim", testViewerCannotClaim},
		{"AuditorReadsAndCommandsNothing", testAuditorReadsAndCommandsNothing},
		{"EventRoutesRoles", testEventRoutesRoles},
		{"SessionEvents", testSessionEvents},
		{"AccountEvents", testAccountEvents},
		{"EventExport", testEventExport},
		{"ClientAddress", testClientAddress},
		{"SessionNotFound", testSessionNotFound},
		{"HandoffNotFound", testHandoffNotFound},
		{"NilUUID", testNilUUID},
		{"MalformedUUID", testMalformedUUID},
		{"ContentType", testContentType},
		{"UUIDSpellings", testUUIDSpellings},
		{"Conflicts", testConflicts},
		{"InvalidBodies", testInvalidBodies},
		{"HistoryIsScopedToAccount", testHistoryScoped},
		{"Routing", testRouting},
		{"Probes", testProbes},
		{"QueueStream", testQueueStream},
		{"QueueStreamRefusals", testQueueStreamRefusals},
		{"QueueStreamAcrossTeams", testQueueStreamAcrossTeams},
		{"PoisonEvent", testPoisonEvent},
		{"RequestIDs", testRequestIDs},
		{"IdempotentRetry", testIdempotentRetry},
		{"IdempotencyKeyMisuse", testIdempotencyKeyMisuse},
		{"IdempotencyKeysBelongToOneAccount", testIdempotencyKeysPerAccount},
		{"IdempotentRequestsAtOnce", testIdempotentRequestsAtOnce},
		{"InternalErrorReleasesKey", testInternalErrorReleasesKey},
		{"Erase", testErase},
		{"EraseDuringBusyRun", testEraseDuringBusyRun},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, nb)
		})
	}
}

func testFlow(t *testing.T, nb NewBackend) {
	s := startServer(t, nb)
	tm := newTeam()
	alice, bob := tm.user(domain.RoleEngineer), tm.user(domain.RoleAdmin)
	session := uuid.New()

	escalated := s.escalate(t, alice, session)
	if escalated.Status != "open" || escalated.CreatedBy != alice.UserID || escalated.ClaimedBy != nil {
		t.Fatalf("escalated = %+v", escalated)
	}
	if q := s.queue(t, bob); len(q) != 1 || !sameHandoff(q[0], escalated) {
		t.Fatalf("queue after escalate = %+v, want [%+v]", q, escalated)
	}

	claimed := s.claim(t, bob, escalated)
	if claimed.Status != "claimed" || claimed.ClaimedBy == nil || *claimed.ClaimedBy != bob.UserID ||
		claimed.ClaimedAt == nil || claimed.ClaimedAt.Before(escalated.CreatedAt) || claimed.ID != escalated.ID {
		t.Fatalf("claimed = %+v", claimed)
	}
	if q := s.queue(t, alice); len(q) != 0 {
		t.Fatalf("queue after claim = %+v, want []", q)
	}

	// Bob now holds the session: he parks it and takes the park back.
	parked := s.create(t, bob, session, `{"intent":"park","engineer_notes":"waiting on customer","priority":"low"}`)
	withdrawn := decode[handoff](t, s.do(t, as(t, bob, http.MethodPost, actionPath(session, parked.ID, "withdraw"), ""), http.StatusOK))
	if withdrawn.Status != "withdrawn" || withdrawn.ID != parked.ID || withdrawn.ClaimedBy != nil {
		t.Fatalf("withdrawn = %+v", withdrawn)
	}
	if q := s.queue(t, alice); len(q) != 0 {
		t.Fatalf("queue after withdraw = %+v, want []", q)
	}

	hist := s.history(t, alice, session)
	if len(hist) != 2 || !sameHandoff(hist[0], withdrawn) || !sameHandoff(hist[1], claimed) {
		t.Fatalf("history = %+v, want [%+v %+v]", hist, withdrawn, claimed)
	}
	want := []string{domain.TypeHandoffEscalated, domain.TypeHandoffClaimed, domain.TypeHandoffParked, domain.TypeHandoffWithdrawn}
	if got := types(s.stream(t, tm.account, session)); !slices.Equal(got, want) {
		t.Fatalf("stream = %v, want %v", got, want)
	}
}

func testHandoffJSONShape(t *testing.T, nb NewBackend) {
	s := startServer(t, nb)
	tm := newTeam()
	alice := tm.user(domain.RoleEngineer)
	session := uuid.New()
	res := s.do(t, as(t, alice, http.MethodPost, createPath(session), `{"intent":"escalate","engineer_notes":"n","priority":"urgent"}`), http.StatusCreated)
	if ct := res.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("Content-Type = %q", ct)
	}
	var fields map[string]any
	if err := json.Unmarshal(res.body, &fields); err != nil {
		t.Fatalf("decode %s: %v", res.body, err)
	}
	id, err := uuid.Parse(fields["id"].(string))
	if err != nil || id.Version() != 4 {
		t.Fatalf("id %v is not a random UUID", fields["id"])
	}
	createdAt, err := time.Parse(time.RFC3339Nano, fields["created_at"].(string))
	if err != nil || !strings.HasSuffix(fields["created_at"].(string), "Z") || time.Since(createdAt) > time.Minute {
		t.Fatalf("created_at %v is not a recent RFC 3339 UTC time", fields["created_at"])
	}
	want := map[string]any{
		"id": id.String(), "session_id": session.String(), "intent": "escalate", "engineer_notes": "n",
		"priority": "urgent", "status": "open", "created_by": alice.UserID.String(),
		"created_at": fields["created_at"], "claimed_by": nil, "claimed_at": nil,
	}
	if !maps.Equal(fields, want) {
		t.Fatalf("handoff JSON = %v, want %v", fields, want)
	}

	bob := tm.user(domain.RoleOwner)
	res = s.do(t, as(t, bob, http.MethodPost, actionPath(session, id, "claim"), ""), http.StatusOK)
	fields = nil
	if err := json.Unmarshal(res.body, &fields); err != nil {
		t.Fatalf("decode %s: %v", res.body, err)
	}
	claimedAt, _ := fields["claimed_at"].(string)
	if fields["claimed_by"] != bob.UserID.String() || !strings.HasSuffix(claimedAt, "Z") {
		t.Fatalf("claimed handoff JSON = %v", fields)
	}
	if _, err := time.Parse(time.RFC3339Nano, claimedAt); err != nil {
		t.Fatalf("claimed_at: %v", err)
	}
}

func testCreateDefaults(t *testing.T, nb NewBackend) {
	s := startServer(t, nb)
	alice := newTeam().user(domain.RoleViewer) // any role may park its own session
	h := s.create(t, alice, uuid.New(), `{"intent":"park"}`)
	if h.Priority != "normal" || h.EngineerNotes != "" || h.Intent != "park" {
		t.Fatalf("defaults = %+v", h)
	}
	h = s.create(t, alice, uuid.New(), `{"intent":"escalate","engineer_notes":null,"priority":null}`)
	if h.Priority != "normal" || h.EngineerNotes != "" {
		t.Fatalf("nulls = %+v", h)
	}
	// Text is kept as sent, escaped surrogate pairs and U+FFFD included.
	h = s.create(t, alice, uuid.New(), `{"intent":"park","engineer_notes":"caf\u00e9 \ud83d\ude00 \\ud800 \ufffd ✓"}`)
	if want := "café 😀 \\ud800 \ufffd ✓"; h.EngineerNotes != want {
		t.Fatalf("notes = %q, want %q", h.EngineerNotes, want)
	}
}

func testQueueOrder(t *testing.T, nb NewBackend) {
	s := startServer(t, nb)
	tm := newTeam()
	alice := tm.user(domain.RoleEngineer)
	bodies := []string{
		`{"intent":"park","priority":"urgent"}`,
		`{"intent":"escalate","priority":"normal"}`,
		`{"intent":"escalate","priority":"high"}`,
		`{"intent":"park","priority":"low"}`,
		`{"intent":"escalate","priority":"normal"}`,
	}
	var made []handoff
	for _, b := range bodies {
		made = append(made, s.create(t, alice, uuid.New(), b))
	}
	// Another team and another account see none of them.
	other := newTeam()
	s.create(t, other.user(domain.RoleEngineer), uuid.New(), `{"intent":"escalate","priority":"urgent"}`)
	sameAccount := team{account: tm.account, id: uuid.New()}
	if q := s.queue(t, sameAccount.user(domain.RoleEngineer)); len(q) != 0 {
		t.Fatalf("another team's queue = %+v", q)
	}

	want := []uuid.UUID{made[2].ID, made[1].ID, made[4].ID, made[0].ID, made[3].ID}
	q := s.queue(t, tm.user(domain.RoleViewer))
	got := make([]uuid.UUID, len(q))
	for i, h := range q {
		got[i] = h.ID
	}
	if !slices.Equal(got, want) {
		t.Fatalf("queue order = %v, want %v", got, want)
	}
}

func testUnauthorized(t *testing.T, nb NewBackend) {
	s := startServer(t, nb)
	actor := newTeam().user(domain.RoleEngineer)
	now := time.Now()
	valid := jwt.MapClaims{
		"sub": actor.UserID.String(), "account_id": actor.AccountID.String(), "team_id": actor.TeamID.String(),
		"role": "engineer", "exp": now.Add(time.Hour).Unix(),
	}
	without := func(name string) jwt.MapClaims {
		c := jwt.MapClaims{}
		for k, v := range valid {
			if k != name {
				c[k] = v
			}
		}
		return c
	}
	with := func(name string, value any) jwt.MapClaims {
		c := without(name)
		c[name] = value
		return c
	}
	// A viewer's claims, as an unfinished JSON object.
	viewerClaims := fmt.Sprintf(`{"sub":%q,"account_id":%q,"team_id":%q,"exp":%d,"role":"viewer"`,
		actor.UserID, actor.AccountID, actor.TeamID, now.Add(time.Hour).Unix())
	cases := []struct {
		name, auth, detail string
	}{
		{"Missing", "", "Missing bearer token"},
		{"NotBearer", "Basic dXNlcjpwYXNz", "Authorization header must be: Bearer <token>"},
		{"EmptyBearer", "Bearer ", "Authorization header must be: Bearer <token>"},
		{"Garbage", "Bearer not.a.jwt", "Invalid token"},
		{"Expired", bearer(t, jwt.SigningMethodHS256, testSecret, with("exp", now.Add(-time.Minute).Unix())), "Token expired"},
		{"BadSignature", bearer(t, jwt.SigningMethodHS256, []byte("another secret"), valid), "Invalid token"},
		{"AlgNone", "Bearer " + unsignedToken(t, valid), "Invalid token"},
		{"HS512", bearer(t, jwt.SigningMethodHS512, testSecret, valid), "Invalid token"},
		{"NoExp", bearer(t, jwt.SigningMethodHS256, testSecret, without("exp")), "Token claim exp is required"},
		{"NoSub", bearer(t, jwt.SigningMethodHS256, testSecret, without("sub")), "Token claim sub must be a UUID"},
		{"NoAccount", bearer(t, jwt.SigningMethodHS256, testSecret, without("account_id")), "Token claim account_id must be a UUID"},
		{"BadAccount", bearer(t, jwt.SigningMethodHS256, testSecret, with("account_id", "acme")), "Token claim account_id must be a UUID"},
		{"NilSub", bearer(t, jwt.SigningMethodHS256, testSecret, with("sub", uuid.Nil.String())), "Token claim sub must be a UUID"},
		{"NilAccount", bearer(t, jwt.SigningMethodHS256, testSecret, with("account_id", uuid.Nil.String())), "Token claim account_id must be a UUID"},
		{"NilTeam", bearer(t, jwt.SigningMethodHS256, testSecret, with("team_id", uuid.Nil.String())), "Token claim team_id must be a UUID"},
		{"NoRole", bearer(t, jwt.SigningMethodHS256, testSecret, without("role")), "Token claim role must be one of viewer, engineer, admin, owner, auditor"},
		{"WrongRole", bearer(t, jwt.SigningMethodHS256, testSecret, with("role", "superuser")), "Token claim role must be one of viewer, engineer, admin, owner, auditor"},
		{"RoleOfWrongType", bearer(t, jwt.SigningMethodHS256, testSecret, with("role", 3)), "Invalid token"},
		{"TooLong", bearer(t, jwt.SigningMethodHS256, testSecret, with("exp", now.Add(25*time.Hour).Unix())), "Token claim exp must be at most 24h0m0s ahead"},
		{"NotYetValid", bearer(t, jwt.SigningMethodHS256, testSecret, with("nbf", now.Add(time.Minute).Unix())), "Token not valid yet: its nbf or iat is in the future"},
		{"IssuedInTheFuture", bearer(t, jwt.SigningMethodHS256, testSecret, with("iat", now.Add(time.Minute).Unix())), "Token not valid yet: its nbf or iat is in the future"},
		{"RepeatedRole", signedPayload(t, viewerClaims+`,"role":"owner"}`), "Token claims must not repeat a name"},
		{"RepeatedEscapedRole", signedPayload(t, viewerClaims+`,"\u0072ole":"owner"}`), "Token claims must not repeat a name"},
		{"RepeatedUnknownClaim", signedPayload(t, viewerClaims+`,"x":1,"x":2}`), "Token claims must not repeat a name"},
		{"CaseVariantRole", signedPayload(t, viewerClaims+`,"Role":"owner"}`), `Token claim "Role" is not "role": claim names are case-sensitive`},
		{"CaseVariantOnly", signedPayload(t, strings.Replace(viewerClaims, `"role"`, `"ROLE"`, 1)+`}`), `Token claim "ROLE" is not "role": claim names are case-sensitive`},
		{"FoldedSub", signedPayload(t, viewerClaims+`,"\u017fub":"`+uuid.NewString()+`"}`), `Token claim "ſub" is not "sub": claim names are case-sensitive`},
		{"CaseVariantExp", signedPayload(t, viewerClaims+`,"EXP":1}`), `Token claim "EXP" is not "exp": claim names are case-sensitive`},
	}
	routes := []struct{ method, path, body string }{
		{http.MethodGet, "/ai-sessions/queue", ""},
		{http.MethodGet, historyPath(uuid.New()), ""},
		{http.MethodPost, createPath(uuid.New()), `{"intent":"park"}`},
		{http.MethodPost, actionPath(uuid.New(), uuid.New(), "claim"), ""},
		{http.MethodPost, actionPath(uuid.New(), uuid.New(), "withdraw"), ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, r := range routes {
				res := s.do(t, request{method: r.method, path: r.path, body: r.body, auth: tc.auth}, http.StatusUnauthorized)
				if got := detail(t, res); got != tc.detail {
					t.Fatalf("%s %s: detail %q, want %q", r.method, r.path, got, tc.detail)
				}
				if got := res.header.Get("WWW-Authenticate"); got != "Bearer" {
					t.Fatalf("WWW-Authenticate = %q, want Bearer", got)
				}
			}
		})
	}
	// Each refusal is logged with its reason, which may say more than the
	// answer: a bad signature is only an "Invalid token" to the client.
	logs := s.logs.String()
	for _, reason := range []string{"Missing bearer token", "Token expired", "Invalid token: token signature is invalid", "Token claim exp is required"} {
		if !strings.Contains(logs, `msg="request refused: not authenticated" reason="`+reason) {
			t.Fatalf("no log line of a 401 with reason %q; the log:\n%s", reason, logs)
		}
	}
	good := bearer(t, jwt.SigningMethodHS256, testSecret, valid)
	twice := request{method: http.MethodGet, path: "/ai-sessions/queue", header: http.Header{"Authorization": {good, good}}}
	if got := detail(t, s.do(t, twice, http.StatusUnauthorized)); got != "Only one Authorization header is allowed" {
		t.Fatalf("two Authorization headers: detail %q", got)
	}
	s.expectNoNewEvents(t, 0)
	// The token that the cases spoil is itself good, and so are its
	// viewer's claims, and times off by less than the clock skew allowed.
	s.do(t, request{method: http.MethodGet, path: "/ai-sessions/queue", auth: good}, http.StatusOK)
	s.do(t, request{method: http.MethodGet, path: "/ai-sessions/queue", auth: signedPayload(t, viewerClaims+`}`)}, http.StatusOK)
	skewed := with("exp", now.Add(-10*time.Second).Unix())
	skewed["nbf"], skewed["iat"] = now.Add(10*time.Second).Unix(), now.Add(10*time.Second).Unix()
	s.do(t, request{method: http.MethodGet, path: "/ai-sessions/queue", auth: bearer(t, jwt.SigningMethodHS256, testSecret, skewed)}, http.StatusOK)
	s.do(t, request{method: http.MethodGet, path: "/ai-sessions/queue", auth: bearer(t, jwt.SigningMethodHS256, testSecret, with("exp", now.Add(24*time.Hour).Unix()))}, http.StatusOK)
}

// signedPayload signs a JSON payload, as it is, into an HS256 bearer token
// (jwt.MapClaims cannot hold a repeated name).
func signedPayload(tb testing.TB, payload string) string {
	tb.Helper()
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString([]byte(payload))
	sig, err := jwt.SigningMethodHS256.Sign(signing, testSecret)
	if err != nil {
		tb.Fatalf("sign: %v", err)
	}
	return "Bearer " + signing + "." + enc.EncodeToString(sig)
}

// bearer signs claims into an Authorization header value.
func bearer(tb testing.TB, method jwt.SigningMethod, secret []byte, claims jwt.MapClaims) string {
	tb.Helper()
	tok, err := jwt.NewWithClaims(method, claims).SignedString(secret)
	if err != nil {
		tb.Fatalf("sign: %v", err)
	}
	return "Bearer " + tok
}

// unsignedToken is a token with alg "none" and no signature.
func unsignedToken(tb testing.TB, claims jwt.MapClaims) string {
	tb.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		tb.Fatalf("encode claims: %v", err)
	}
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc.EncodeToString(payload) + "."
}

func testViewerCannotClaim(t *testing.T, nb NewBackend) {
	s := startServer(t, nb)
	tm := newTeam()
	h := s.escalate(t, tm.user(domain.RoleEngineer), uuid.New())
	viewer := tm.user(domain.RoleViewer)
	// Whatever the ids, as the endpoint the API replaces checked the role
	// first.
	for _, path := range []string{
		actionPath(h.SessionID, h.ID, "claim"),
		actionPath(uuid.New(), uuid.New(), "claim"),
		"/ai-sessions/not-a-uuid/handoffs/" + h.ID.String() + "/claim",
		"/ai-sessions/" + h.SessionID.String() + "/handoffs/not-a-uuid/claim",
	} {
		s.expectError(t, as(t, viewer, http.MethodPost, path, ""), http.StatusForbidden, "Engineer or admin access required")
	}
	s.expectNoNewEvents(t, 1)
}

func testSessionNotFound(t *testing.T, nb NewBackend) {
	s := startServer(t, nb)
	tm := newTeam()
	alice, mallory := tm.user(domain.RoleEngineer), tm.user(domain.RoleOwner)
	h := s.create(t, alice, uuid.New(), `{"intent":"park"}`)
	cases := []struct {
		name string
		r    request
	}{
		{"CreateByNonHolder", as(t, mallory, http.MethodPost, createPath(h.SessionID), `{"intent":"escalate"}`)},
		{"WithdrawByNonHolder", as(t, mallory, http.MethodPost, actionPath(h.SessionID, h.ID, "withdraw"), "")},
		{"WithdrawOnUnknownSession", as(t, alice, http.MethodPost, actionPath(uuid.New(), h.ID, "withdraw"), "")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s.expectError(t, tc.r, http.StatusNotFound, "Session not found")
		})
	}
	s.expectNoNewEvents(t, 1)
}

func testHandoffNotFound(t *testing.T, nb NewBackend) {
	s := startServer(t, nb)
	tm, other := newTeam(), newTeam()
	alice, bob := tm.user(domain.RoleEngineer), tm.user(domain.RoleEngineer)
	h := s.escalate(t, alice, uuid.New())
	otherSession := s.escalate(t, tm.user(domain.RoleEngineer), uuid.New())
	foreign := s.escalate(t, other.user(domain.RoleEngineer), h.SessionID) // same session id, other account
	cases := []struct {
		name string
		r    request
	}{
		{"UnknownHandoff", as(t, bob, http.MethodPost, actionPath(h.SessionID, uuid.New(), "claim"), "")},
		{"OtherSessionsHandoff", as(t, bob, http.MethodPost, actionPath(otherSession.SessionID, h.ID, "claim"), "")},
		{"ThroughUnknownSession", as(t, bob, http.MethodPost, actionPath(uuid.New(), h.ID, "claim"), "")},
		{"OtherAccountsHandoff", as(t, bob, http.MethodPost, actionPath(foreign.SessionID, foreign.ID, "claim"), "")},
		{"OwnAccountHandoffByOtherAccount", as(t, other.user(domain.RoleOwner), http.MethodPost, actionPath(otherSession.SessionID, otherSession.ID, "claim"), "")},
		{"WithdrawUnknownHandoff", as(t, alice, http.MethodPost, actionPath(h.SessionID, uuid.New(), "withdraw"), "")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s.expectError(t, tc.r, http.StatusNotFound, "Handoff not found")
		})
	}
	s.expectNoNewEvents(t, 3)
	if hist := s.history(t, alice, h.SessionID); len(hist) != 1 || hist[0].Status != "open" {
		t.Fatalf("history after rejected claims = %+v", hist)
	}
}

func testNilUUID(t *testing.T, nb NewBackend) {
	s := startServer(t, nb)
	tm := newTeam()
	alice, bob := tm.user(domain.RoleEngineer), tm.user(domain.RoleAdmin)
	h := s.escalate(t, alice, uuid.New())
	const nilSession, nilHandoff = "session_id must not be the nil UUID", "handoff_id must not be the nil UUID"
	cases := []struct {
		name   string
		r      request
		detail string
	}{
		{"Create", as(t, alice, http.MethodPost, createPath(uuid.Nil), `{"intent":"escalate"}`), nilSession},
		{"History", as(t, alice, http.MethodGet, historyPath(uuid.Nil), ""), nilSession},
		{"ClaimNilSession", as(t, bob, http.MethodPost, actionPath(uuid.Nil, h.ID, "claim"), ""), nilSession},
		{"ClaimNilHandoff", as(t, bob, http.MethodPost, actionPath(h.SessionID, uuid.Nil, "claim"), ""), nilHandoff},
		{"WithdrawNilSession", as(t, alice, http.MethodPost, actionPath(uuid.Nil, h.ID, "withdraw"), ""), nilSession},
		{"WithdrawNilHandoff", as(t, alice, http.MethodPost, actionPath(h.SessionID, uuid.Nil, "withdraw"), ""), nilHandoff},
		{"OtherSpelling", as(t, alice, http.MethodPost, "/ai-sessions/urn:uuid:"+uuid.Nil.String()+"/handoff", `{"intent":"park"}`), nilSession},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s.expectError(t, tc.r, http.StatusUnprocessableEntity, tc.detail)
		})
	}
	// A viewer's claim is refused for its role before its ids are read.
	s.expectError(t, as(t, tm.user(domain.RoleViewer), http.MethodPost, actionPath(uuid.Nil, uuid.Nil, "claim"), ""),
		http.StatusForbidden, domain.MsgClaimRoleNeeded)
	s.expectNoNewEvents(t, 1)
	if q := s.queue(t, bob); len(q) != 1 || q[0].ID != h.ID {
		t.Fatalf("queue after nil ids = %+v, want [%s]", q, h.ID)
	}
}

// testMalformedUUID checks that an id in a path that is not a UUID is 422
// naming the parameter on every route, as the service the API replaces
// answered, and appends nothing.
func testMalformedUUID(t *testing.T, nb NewBackend) {
	s := startServer(t, nb)
	tm := newTeam()
	alice, bob := tm.user(domain.RoleEngineer), tm.user(domain.RoleAdmin)
	h := s.escalate(t, alice, uuid.New())
	const badSession, badHandoff = "session_id must be a UUID", "handoff_id must be a UUID"
	cases := []struct {
		name   string
		r      request
		detail string
	}{
		{"Create", as(t, alice, http.MethodPost, "/ai-sessions/not-a-uuid/handoff", `{"intent":"park"}`), badSession},
		{"History", as(t, alice, http.MethodGet, "/ai-sessions/not-a-uuid/handoffs", ""), badSession},
		{"HistoryPage", as(t, alice, http.MethodGet, "/ai-sessions/123/handoffs?limit=5", ""), badSession},
		{"SessionEvents", as(t, bob, http.MethodGet, "/ai-sessions/not-a-uuid/events", ""), badSession},
		{"ClaimBadSession", as(t, bob, http.MethodPost, "/ai-sessions/123/handoffs/"+h.ID.String()+"/claim", ""), badSession},
		{"ClaimBadHandoff", as(t, bob, http.MethodPost, historyPath(h.SessionID)+"/123/claim", ""), badHandoff},
		{"WithdrawBadSession", as(t, alice, http.MethodPost, "/ai-sessions/x/handoffs/"+h.ID.String()+"/withdraw", ""), badSession},
		{"WithdrawBadHandoff", as(t, alice, http.MethodPost, historyPath(h.SessionID)+"/x/withdraw", ""), badHandoff},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s.expectError(t, tc.r, http.StatusUnprocessableEntity, tc.detail)
		})
	}
	s.expectNoNewEvents(t, 1)
}

// testContentType checks that a POST with a body that is not declared as
// JSON is 415 and appends nothing, while a claim or withdrawal without a
// body needs no Content-Type.
func testContentType(t *testing.T, nb NewBackend) {
	s := startServer(t, nb)
	tm := newTeam()
	alice, bob := tm.user(domain.RoleEngineer), tm.user(domain.RoleAdmin)
	h := s.escalate(t, alice, uuid.New())
	const want = "Content-Type must be application/json"
	for _, r := range []request{
		as(t, alice, http.MethodPost, createPath(uuid.New()), `{"intent":"park"}`).with("Content-Type", "text/plain"),
		as(t, alice, http.MethodPost, createPath(uuid.New()), `intent=park`).with("Content-Type", "application/x-www-form-urlencoded"),
		as(t, alice, http.MethodPost, createPath(uuid.New()), `{"intent":"park"}`).with("Content-Type", "application/json;;"),
		as(t, bob, http.MethodPost, actionPath(h.SessionID, h.ID, "claim"), `{}`).with("Content-Type", "text/plain"),
		as(t, alice, http.MethodPost, actionPath(h.SessionID, h.ID, "withdraw"), `x`).with("Content-Type", "text/plain"),
		as(t, alice, http.MethodPost, createPath(uuid.New()), `{"intent":"park"}`).with("Content-Type", "text/plain").with("Idempotency-Key", "k1"),
	} {
		s.expectError(t, r, http.StatusUnsupportedMediaType, want)
	}
	s.expectNoNewEvents(t, 1)
	s.create(t, alice, uuid.New(), `{"intent":"park"}`) // send declares JSON
	s.do(t, as(t, alice, http.MethodPost, createPath(uuid.New()), `{"intent":"park"}`).with("Content-Type", "application/json; charset=utf-8"), http.StatusCreated)
	if claimed := s.claim(t, bob, h); claimed.Status != "claimed" { // no body, no Content-Type
		t.Fatalf("claimed = %+v", claimed)
	}
}

// testUUIDSpellings checks that every spelling of a session id that
// uuid.Parse accepts names the one canonical session stream.
func testUUIDSpellings(t *testing.T, nb NewBackend) {
	s := startServer(t, nb)
	tm := newTeam()
	alice, bob := tm.user(domain.RoleEngineer), tm.user(domain.RoleAdmin)
	session := uuid.New()
	canonical := session.String()
	upper, braces, urn := strings.ToUpper(canonical), "%7B"+canonical+"%7D", "urn:uuid:"+canonical
	path := func(spelling, rest string) string { return "/ai-sessions/" + spelling + rest }

	h := decode[handoff](t, s.do(t, as(t, alice, http.MethodPost, path(upper, "/handoff"), `{"intent":"escalate"}`), http.StatusCreated))
	if h.SessionID != session {
		t.Fatalf("session_id = %s, want %s", h.SessionID, session)
	}
	for _, spelling := range []string{canonical, upper, braces, urn} {
		hist := decode[[]handoff](t, s.do(t, as(t, bob, http.MethodGet, path(spelling, "/handoffs"), ""), http.StatusOK))
		if len(hist) != 1 || hist[0].ID != h.ID {
			t.Fatalf("history through %s = %+v, want [%s]", spelling, hist, h.ID)
		}
	}
	claimPath := path(braces, "/handoffs/"+strings.ToUpper(h.ID.String())+"/claim")
	claimed := decode[handoff](t, s.do(t, as(t, bob, http.MethodPost, claimPath, ""), http.StatusOK))
	if claimed.ID != h.ID || claimed.SessionID != session {
		t.Fatalf("claimed = %+v", claimed)
	}
	parked := decode[handoff](t, s.do(t, as(t, bob, http.MethodPost, path(urn, "/handoff"), `{"intent":"park"}`), http.StatusCreated))
	s.do(t, as(t, bob, http.MethodPost, path(upper, "/handoffs/urn:uuid:"+parked.ID.String()+"/withdraw"), ""), http.StatusOK)

	events := s.events(t)
	want := []string{domain.TypeHandoffEscalated, domain.TypeHandoffClaimed, domain.TypeHandoffParked, domain.TypeHandoffWithdrawn}
	if got := types(events); !slices.Equal(got, want) {
		t.Fatalf("log = %v, want %v", got, want)
	}
	for _, e := range events {
		if e.Stream != events[0].Stream {
			t.Fatalf("events in streams %s and %s, want one stream", events[0].Stream, e.Stream)
		}
	}
	if got := len(s.stream(t, tm.account, session)); got != len(want) {
		t.Fatalf("canonical stream has %d events, want %d", got, len(want))
	}
}

func testConflicts(t *testing.T, nb NewBackend) {
	s := startServer(t, nb)
	tm := newTeam()
	alice, bob, carol := tm.user(domain.RoleEngineer), tm.user(domain.RoleEngineer), tm.user(domain.RoleAdmin)
	h := s.escalate(t, alice, uuid.New())

	s.expectError(t, as(t, alice, http.MethodPost, createPath(h.SessionID), `{"intent":"park"}`),
		http.StatusConflict, "Session already has an open handoff")

	claimed := s.claim(t, bob, h)
	for _, who := range []domain.Actor{carol, bob} {
		res := s.do(t, as(t, who, http.MethodPost, actionPath(h.SessionID, h.ID, "claim"), ""), http.StatusConflict)
		got := decode[claimedConflict](t, res)
		want := claimedConflict{Detail: "Handoff already claimed", ClaimedBy: bob.UserID, ClaimedAt: *claimed.ClaimedAt}
		if !got.ClaimedAt.Equal(want.ClaimedAt) || got.Detail != want.Detail || got.ClaimedBy != want.ClaimedBy {
			t.Fatalf("conflict body = %+v, want %+v", got, want)
		}
	}

	parked := s.create(t, bob, h.SessionID, `{"intent":"park"}`)
	s.do(t, as(t, bob, http.MethodPost, actionPath(h.SessionID, parked.ID, "withdraw"), ""), http.StatusOK)
	s.expectError(t, as(t, carol, http.MethodPost, actionPath(h.SessionID, parked.ID, "claim"), ""),
		http.StatusConflict, "Handoff already withdrawn")
	s.expectError(t, as(t, bob, http.MethodPost, actionPath(h.SessionID, parked.ID, "withdraw"), ""),
		http.StatusConflict, "Handoff already withdrawn")
	s.expectNoNewEvents(t, 4)
}

func testInvalidBodies(t *testing.T, nb NewBackend) {
	s := startServer(t, nb)
	alice := newTeam().user(domain.RoleEngineer)
	cases := []struct {
		name, body string
		status     int
		detail     string
	}{
		{"Empty", ``, 400, "Request body must be a JSON object"},
		{"Malformed", `{"intent": "park",`, 400, "Request body must be a JSON object"},
		{"SyntaxError", `{"intent" "park"}`, 400, "Request body must be a JSON object: malformed JSON at byte 11"},
		{"Array", `[{"intent":"park"}]`, 400, "Request body must be a JSON object"},
		{"Null", `null`, 400, "Request body must be a JSON object"},
		{"TrailingData", `{"intent":"park"} {}`, 400, "Request body must be a JSON object, with nothing after it"},
		{"UnknownField", `{"intent":"park","assignee":"bob"}`, 422, `unknown field "assignee"`},
		{"MissingIntent", `{"engineer_notes":"x"}`, 422, "intent must be one of park, escalate"},
		{"NullIntent", `{"intent":null}`, 422, "intent must be one of park, escalate"},
		{"BadIntent", `{"intent":"close"}`, 422, "intent must be one of park, escalate"},
		{"IntentNotString", `{"intent":1}`, 422, "intent must be a string"},
		{"BadPriority", `{"intent":"park","priority":"asap"}`, 422, "priority must be one of low, normal, high, urgent"},
		{"PriorityNotString", `{"intent":"park","priority":["high"]}`, 422, "priority must be a string"},
		{"NotesNotString", `{"intent":"park","engineer_notes":{"a":1}}`, 422, "engineer_notes must be a string"},
		{"NotesTooLong", `{"intent":"park","engineer_notes":"` + strings.Repeat("x", domain.MaxNotesLength+1) + `"}`, 422,
			"engineer_notes must be valid text of at most 10000 bytes, without NUL characters"},
		{"NotesWithNUL", `{"intent":"park","engineer_notes":"a\u0000b"}`, 422,
			"engineer_notes must be valid text of at most 10000 bytes, without NUL characters"},
		{"NotesBadUTF8", "{\"intent\":\"park\",\"engineer_notes\":\"caf\xe9\"}", 422, "engineer_notes must be valid UTF-8 text"},
		{"NotesLoneSurrogate", `{"intent":"park","engineer_notes":"a\ud800b"}`, 422, "engineer_notes must be valid UTF-8 text"},
		{"NotesLowSurrogateFirst", `{"intent":"park","engineer_notes":"\udc00\ud800"}`, 422, "engineer_notes must be valid UTF-8 text"},
		{"NotesHighSurrogateAtEnd", `{"intent":"park","engineer_notes":"\ud83d"}`, 422, "engineer_notes must be valid UTF-8 text"},
		{"IntentBadUTF8", "{\"intent\":\"park\xff\"}", 422, "intent must be valid UTF-8 text"},
		{"TooLarge", `{"intent":"park","engineer_notes":"` + strings.Repeat("x", 70<<10) + `"}`, 413,
			"Request body must be at most 65536 bytes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s.expectError(t, as(t, alice, http.MethodPost, createPath(uuid.New()), tc.body), tc.status, tc.detail)
		})
	}
	s.expectNoNewEvents(t, 0)
}

func testHistoryScoped(t *testing.T, nb NewBackend) {
	s := startServer(t, nb)
	tm := newTeam()
	h := s.escalate(t, tm.user(domain.RoleEngineer), uuid.New())
	outsider := newTeam().user(domain.RoleOwner)
	for _, path := range []string{historyPath(h.SessionID), historyPath(uuid.New())} {
		res := s.do(t, as(t, outsider, http.MethodGet, path, ""), http.StatusOK)
		if got := strings.TrimSpace(string(res.body)); got != "[]" {
			t.Fatalf("GET %s by another account = %s, want []", path, got)
		}
	}
	// Any team of the same account sees it.
	if hist := s.history(t, team{account: tm.account, id: uuid.New()}.user(domain.RoleViewer), h.SessionID); len(hist) != 1 {
		t.Fatalf("history for another team of the account = %+v", hist)
	}
}

func testRouting(t *testing.T, nb NewBackend) {
	s := startServer(t, nb)
	alice := newTeam().user(domain.RoleEngineer)
	res := s.do(t, as(t, alice, http.MethodGet, "/ai-sessions/queue", ""), http.StatusOK)
	if got := strings.TrimSpace(string(res.body)); got != "[]" {
		t.Fatalf("empty queue = %s, want []", got)
	}
	s.expectError(t, as(t, alice, http.MethodPost, "/ai-sessions/queue", ""), http.StatusMethodNotAllowed, "Method Not Allowed")
	s.expectError(t, as(t, alice, http.MethodDelete, historyPath(uuid.New()), ""), http.StatusMethodNotAllowed, "Method Not Allowed")
	s.expectError(t, request{method: http.MethodGet, path: "/nowhere"}, http.StatusNotFound, "Not Found")
	s.expectError(t, as(t, alice, http.MethodGet, "/ai-sessions/"+uuid.NewString(), ""), http.StatusNotFound, "Not Found")
	// "queue" in a session's place is an id that is not a UUID.
	s.expectError(t, as(t, alice, http.MethodPost, "/ai-sessions/queue/handoff", `{"intent":"park"}`), http.StatusUnprocessableEntity, "session_id must be a UUID")
}

func testProbes(t *testing.T, nb NewBackend) {
	type readyBody struct {
		Detail string            `json:"detail"`
		Status string            `json:"status"`
		Checks map[string]string `json:"checks"`
	}
	healthy := startServer(t, nb)
	if got := strings.TrimSpace(string(healthy.do(t, request{method: http.MethodGet, path: "/healthz"}, http.StatusOK).body)); got != `{"status":"ok"}` {
		t.Fatalf("/healthz = %s", got)
	}
	ready := decode[readyBody](t, healthy.do(t, request{method: http.MethodGet, path: "/readyz"}, http.StatusOK))
	if ready.Status != "ok" || len(ready.Checks) == 0 {
		t.Fatalf("/readyz = %+v", ready)
	}
	for name, result := range ready.Checks {
		if result != "ok" {
			t.Fatalf("check %s = %s", name, result)
		}
	}

	broken := func(context.Context) error { return errors.New("connection refused") }
	degraded := startServer(t, nb, httpapi.Check{Name: "relay", Func: broken, Degrading: true})
	got := decode[readyBody](t, degraded.do(t, request{method: http.MethodGet, path: "/readyz"}, http.StatusOK))
	if got.Status != "degraded" || got.Checks["relay"] != "failing" || got.Detail != "" {
		t.Fatalf("/readyz with a degrading failure = %+v", got)
	}

	down := startServer(t, nb, httpapi.Check{Name: "relay", Func: broken, Degrading: true}, httpapi.Check{Name: "broker", Func: broken})
	got = decode[readyBody](t, down.do(t, request{method: http.MethodGet, path: "/readyz"}, http.StatusServiceUnavailable))
	if got.Status != "unavailable" || got.Detail != "Not ready: broker failing" || got.Checks["relay"] != "failing" {
		t.Fatalf("/readyz with a failing check = %+v", got)
	}
	if !strings.Contains(down.logs.String(), "connection refused") {
		t.Fatalf("the failing check's error was not logged: %s", down.logs.String())
	}
}

func testRequestIDs(t *testing.T, nb NewBackend) {
	s := startServer(t, nb)
	tm := newTeam()
	alice := tm.user(domain.RoleEngineer)

	given := as(t, alice, http.MethodPost, createPath(uuid.New()), `{"intent":"park"}`).
		with("X-Request-ID", "req-42").with("X-Correlation-ID", "ticket-7")
	res := s.do(t, given, http.StatusCreated)
	h := decode[handoff](t, res)
	if got := res.header.Get("X-Request-ID"); got != "req-42" {
		t.Fatalf("X-Request-ID = %q, want the client's", got)
	}
	// The client's ids are kept as its claim; the request, causation and
	// correlation ids are the server's.
	meta := s.stream(t, tm.account, h.SessionID)[0].Metadata
	if meta.ClientRequestID != "req-42" || meta.ClientCorrelationID != "ticket-7" ||
		meta.ActorID != alice.UserID.String() || meta.Role != "engineer" {
		t.Fatalf("metadata = %+v", meta)
	}
	if _, err := ulid.ParseStrict(meta.RequestID); err != nil || meta.CausationID != meta.RequestID || meta.CorrelationID != meta.RequestID {
		t.Fatalf("metadata = %+v, want the server's ULID as request, causation and correlation id", meta)
	}
	if logs := s.logs.String(); !strings.Contains(logs, "request_id="+meta.RequestID) || !strings.Contains(logs, "client_request_id=req-42") {
		t.Fatalf("request not logged with the server's and the client's ids: %s", logs)
	}

	made := as(t, alice, http.MethodPost, createPath(uuid.New()), `{"intent":"park"}`).
		with("X-Request-ID", "has spaces").with("X-Correlation-ID", strings.Repeat("c", 129))
	res = s.do(t, made, http.StatusCreated)
	h = decode[handoff](t, res)
	id := res.header.Get("X-Request-ID")
	if _, err := ulid.ParseStrict(id); err != nil {
		t.Fatalf("made X-Request-ID %q is not a ULID: %v", id, err)
	}
	meta = s.stream(t, tm.account, h.SessionID)[0].Metadata
	if meta.RequestID != id || meta.CorrelationID != id || meta.ClientRequestID != "" || meta.ClientCorrelationID != "" {
		t.Fatalf("metadata = %+v, want request and correlation id %s and no client ids", meta, id)
	}
	if logs := s.logs.String(); !strings.Contains(logs, "request_id="+id) || !strings.Contains(logs, "status=201") {
		t.Fatalf("request not logged with its id and status: %s", logs)
	}
}

// withKey adds an Idempotency-Key to a request.
func withKey(r request, key string) request { return r.with("Idempotency-Key", key) }

// keyHash is how the API identifies a request for its Idempotency-Key: the
// SHA-256 of the account, method, path and body.
func keyHash(account uuid.UUID, method, path, body string) string {
	sum := sha256.Sum256([]byte(account.String() + " " + method + " " + path + "\n" + body))
	return hex.EncodeToString(sum[:])
}

func testIdempotentRetry(t *testing.T, nb NewBackend) {
	s := startServer(t, nb)
	tm := newTeam()
	alice, bob, carol := tm.user(domain.RoleEngineer), tm.user(domain.RoleEngineer), tm.user(domain.RoleEngineer)
	session := uuid.New()

	// Each request is sent twice; the retry must get the first response.
	steps := []struct {
		name   string
		r      request
		status int
	}{
		{"Create", withKey(as(t, alice, http.MethodPost, createPath(session), `{"intent":"escalate"}`), "k-1"), http.StatusCreated},
		{"SameKeyOtherUser", withKey(as(t, bob, http.MethodPost, createPath(uuid.New()), `{"intent":"park"}`), "k-1"), http.StatusCreated},
		{"RejectedCreate", withKey(as(t, bob, http.MethodPost, createPath(session), `{"intent":"park"}`), "k-2"), http.StatusNotFound},
	}
	for _, st := range steps {
		first := s.do(t, st.r, st.status)
		before := len(s.events(t))
		again := s.do(t, st.r.with("X-Request-ID", "retry"), st.status)
		if string(again.body) != string(first.body) || again.header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("%s: retry = %s (replayed %q), want %s", st.name, again.body, again.header.Get("Idempotent-Replayed"), first.body)
		}
		s.expectNoNewEvents(t, before)
	}

	h := s.history(t, alice, session)[0]
	claim := withKey(as(t, bob, http.MethodPost, actionPath(session, h.ID, "claim"), ""), "claim-1")
	first := s.do(t, claim, http.StatusOK)
	if again := s.do(t, claim, http.StatusOK); string(again.body) != string(first.body) {
		t.Fatalf("retried claim = %s, want %s", again.body, first.body)
	}
	lost := withKey(as(t, carol, http.MethodPost, actionPath(session, h.ID, "claim"), ""), "claim-1")
	first = s.do(t, lost, http.StatusConflict)
	if again := s.do(t, lost, http.StatusConflict); string(again.body) != string(first.body) {
		t.Fatalf("retried lost claim = %s, want %s", again.body, first.body)
	}
	want := []string{domain.TypeHandoffEscalated, domain.TypeHandoffClaimed}
	if got := types(s.stream(t, tm.account, session)); !slices.Equal(got, want) {
		t.Fatalf("stream = %v, want %v", got, want)
	}
}

// testIdempotencyKeysPerAccount sends the same request with the same key
// as one user id in two accounts: the second account must run it, not get
// the first account's stored response.
func testIdempotencyKeysPerAccount(t *testing.T, nb NewBackend) {
	s := startServer(t, nb)
	inA := newTeam().user(domain.RoleEngineer)
	inB := newTeam().user(domain.RoleEngineer)
	inB.UserID = inA.UserID
	session := uuid.New()
	body := `{"intent":"escalate","engineer_notes":"account A's notes"}`
	first := s.do(t, withKey(as(t, inA, http.MethodPost, createPath(session), body), "k"), http.StatusCreated)
	second := s.do(t, withKey(as(t, inB, http.MethodPost, createPath(session), body), "k"), http.StatusCreated)
	if second.header.Get("Idempotent-Replayed") != "" || string(second.body) == string(first.body) {
		t.Fatalf("account B got account A's response %s (replayed %q)", second.body, second.header.Get("Idempotent-Replayed"))
	}
	for _, actor := range []domain.Actor{inA, inB} {
		if got := types(s.stream(t, actor.AccountID, session)); len(got) != 1 {
			t.Fatalf("stream of account %s = %v, want its one escalation", actor.AccountID, got)
		}
	}
	again := s.do(t, withKey(as(t, inB, http.MethodPost, createPath(session), body), "k"), http.StatusCreated)
	if string(again.body) != string(second.body) || again.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("account B's retry = %s, want its own response %s again", again.body, second.body)
	}
}

// testIdempotentRequestsAtOnce sends the same escalate with the same key
// many times at once, and then a claim the same way. A command stores its
// answer in the transaction of its events, so the requests that lose the
// key to the first answer as it did: every one gets the same answer, one
// of them not replayed, and the session holds one escalation and one
// claim.
func testIdempotentRequestsAtOnce(t *testing.T, nb NewBackend) {
	s := startServer(t, nb)
	tm := newTeam()
	alice, bob := tm.user(domain.RoleEngineer), tm.user(domain.RoleAdmin)
	session := uuid.New()
	atOnce := func(r request, want int) response {
		t.Helper()
		const n = 8
		results := make([]response, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
				defer cancel()
				results[i], errs[i] = s.send(ctx, r)
			})
		}
		wg.Wait()
		ran := 0
		for i, res := range results {
			if errs[i] != nil {
				t.Fatalf("request %d: %v", i, errs[i])
			}
			if res.status != want || string(res.body) != string(results[0].body) {
				t.Fatalf("request %d: status %d body %s, want %d and the same answer as request 0 (%s)", i, res.status, res.body, want, results[0].body)
			}
			if res.header.Get("Idempotent-Replayed") == "" {
				ran++
			}
		}
		if ran != 1 {
			t.Fatalf("%d of %d requests ran, want 1 and the others replayed", ran, n)
		}
		return results[0]
	}
	created := decode[handoff](t, atOnce(withKey(as(t, alice, http.MethodPost, createPath(session), `{"intent":"escalate"}`), "at-once"), http.StatusCreated))
	atOnce(withKey(as(t, bob, http.MethodPost, actionPath(session, created.ID, "claim"), ""), "claim-at-once"), http.StatusOK)
	want := []string{domain.TypeHandoffEscalated, domain.TypeHandoffClaimed}
	if got := types(s.stream(t, tm.account, session)); !slices.Equal(got, want) {
		t.Fatalf("stream = %v, want %v", got, want)
	}
}

func testIdempotencyKeyMisuse(t *testing.T, nb NewBackend) {
	s := startServer(t, nb)
	alice := newTeam().user(domain.RoleEngineer)
	session := uuid.New()
	s.do(t, withKey(as(t, alice, http.MethodPost, createPath(session), `{"intent":"park"}`), "k"), http.StatusCreated)

	const reused = "Idempotency-Key reused with a different request"
	s.expectError(t, withKey(as(t, alice, http.MethodPost, createPath(session), `{"intent":"escalate"}`), "k"), http.StatusUnprocessableEntity, reused)
	s.expectError(t, withKey(as(t, alice, http.MethodPost, createPath(uuid.New()), `{"intent":"park"}`), "k"), http.StatusUnprocessableEntity, reused)
	const badKey = "Idempotency-Key must be 1 to 255 printable ASCII characters"
	for _, key := range []string{strings.Repeat("k", 256), "", "caf\u00e9", "k\xff", "tab\tkey"} {
		s.expectError(t, withKey(as(t, alice, http.MethodPost, createPath(uuid.New()), `{"intent":"park"}`), key), http.StatusBadRequest, badKey)
	}
	s.expectNoNewEvents(t, 1)

	// A key pending without an answer, its first request still running:
	// the same request is told to wait, another one that the key is taken.
	path, body := createPath(uuid.New()), `{"intent":"park"}`
	s.Backend.PendKey(t, idempotency.Owner{Account: alice.AccountID, User: alice.UserID}, "running", keyHash(alice.AccountID, http.MethodPost, path, body))
	s.expectError(t, withKey(as(t, alice, http.MethodPost, path, body), "running"),
		http.StatusConflict, "A request with this Idempotency-Key is in progress")
	s.expectError(t, withKey(as(t, alice, http.MethodPost, path, `{"intent":"escalate"}`), "running"),
		http.StatusUnprocessableEntity, reused)
	s.expectNoNewEvents(t, 1)
	// 255 bytes is long enough.
	s.do(t, withKey(as(t, alice, http.MethodPost, createPath(uuid.New()), `{"intent":"park"}`), strings.Repeat("k", 255)), http.StatusCreated)
}

func testInternalErrorReleasesKey(t *testing.T, nb NewBackend) {
	s := startServer(t, nb)
	alice := newTeam().user(domain.RoleEngineer)
	r := withKey(as(t, alice, http.MethodPost, createPath(uuid.New()), `{"intent":"escalate"}`), "k")

	restore := s.Backend.FailAppends(t)
	s.expectError(t, r, http.StatusInternalServerError, "Internal server error")
	s.expectError(t, r, http.StatusInternalServerError, "Internal server error")
	restore()
	if logs := s.logs.String(); !strings.Contains(logs, "internal error") {
		t.Fatalf("internal error not logged: %s", logs)
	}
	s.expectNoNewEvents(t, 0)

	res := s.do(t, r, http.StatusCreated)
	if res.header.Get("Idempotent-Replayed") != "" {
		t.Fatal("the retry after a 5xx was a replay")
	}
	s.expectNoNewEvents(t, 1)
}
