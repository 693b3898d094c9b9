package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/resolutionflow/ledgerd/audit"
	"github.com/resolutionflow/ledgerd/commands"
	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/httpapi"
	"github.com/resolutionflow/ledgerd/idempotency"
	"github.com/resolutionflow/ledgerd/internal/ledgertest"
	"github.com/resolutionflow/ledgerd/metrics"
	"github.com/resolutionflow/ledgerd/projections"
	"github.com/resolutionflow/ledgerd/shred"
)

// Backend is the storage a REST test runs on: a real event log, command
// handler, read model (kept by a running projector and read through
// projections.CaughtUp) and idempotency store, all on one fresh database.
type Backend struct {
	// Log is the event log as readers see it: opened by testKeyring.
	Log eventstore.Store
	// Stored is the log as stored, its personal data sealed.
	Stored eventstore.Store
	// FindText returns the tables of the database that hold text, in any
	// column.
	FindText func(tb testing.TB, text string) []string
	// Tail is the stored log's head and append signal, for the queue
	// stream.
	Tail        httpapi.LogTail
	Commands    *commands.Handler
	Queries     projections.Queries
	Idempotency idempotency.Store
	// PendKey stores owner's key without an answer for a request with
	// hash: a pending key, as a process of an earlier version reserved
	// one before running its request.
	PendKey func(tb testing.TB, owner idempotency.Owner, key, hash string)
	// Checks are the backend's readiness checks.
	Checks []httpapi.Check
	// FailAppends makes every append fail inside the database until the
	// returned function is called.
	FailAppends func(tb testing.TB) (restore func())
	// StopProjector stops the projector that keeps the read model.
	StopProjector func()
	// Audit keeps the Merkle tree over Log.
	Audit audit.Store
	// Metrics counts what Commands and the API do; the API serves it at
	// /metrics.
	Metrics *metrics.Metrics
}

// testReadWait bounds how long the tests' reads wait for the read model,
// unless a test says otherwise: long enough for a loaded machine.
const testReadWait = 15 * time.Second

// NewBackend makes a Backend for one test; it cleans up after the test.
type NewBackend func(tb testing.TB) Backend

// testAuditKey signs the tests' checkpoints.
var testAuditKey = mustAuditKey()

func mustAuditKey() *audit.Key {
	skey, _, err := audit.GenerateKey("ledgerd.test")
	if err != nil {
		panic(err)
	}
	k, err := audit.ParseKey(skey)
	if err != nil {
		panic(err)
	}
	return k
}

// testKeyring seals the personal data of the tests' events.
var testKeyring = mustKeyring()

func mustKeyring() *shred.Keyring {
	keys, err := shred.NewScratchKeyring()
	if err != nil {
		panic(err)
	}
	return keys
}

// testSecret signs the tokens of the tests.
var testSecret = []byte("test-secret-of-the-rest-suite-0123456789")

// apiServer is the API on a real HTTP server over a backend.
type apiServer struct {
	URL     string
	Backend Backend
	// echo is the API the server serves.
	echo   *echo.Echo
	client *http.Client
	logs   *ledgertest.Buffer
}

// startServer serves the API over nb's backend, with extra readiness checks.
func startServer(tb testing.TB, nb NewBackend, checks ...httpapi.Check) *apiServer {
	tb.Helper()
	return serveBackend(tb, nb(tb), func(cfg *httpapi.Config) { cfg.Checks = append(cfg.Checks, checks...) })
}

// startConfigured serves the API over nb's backend, with the configuration
// configure changes.
func startConfigured(tb testing.TB, nb NewBackend, configure func(*httpapi.Config)) *apiServer {
	tb.Helper()
	return serveBackend(tb, nb(tb), configure)
}

// serveBackend serves the API over b, with the configuration configure
// changes.
func serveBackend(tb testing.TB, b Backend, configure func(*httpapi.Config)) *apiServer {
	tb.Helper()
	logs := &ledgertest.Buffer{}
	cfg := httpapi.Config{
		Commands:    b.Commands,
		Queries:     b.Queries,
		Events:      b.Log,
		Tail:        b.Tail,
		Idempotency: b.Idempotency,
		JWTSecret:   testSecret,
		Checks:      b.Checks,
		Logger:      slog.New(slog.NewTextHandler(logs, nil)),
		Audit:       &httpapi.Audit{Prover: audit.NewProver(b.Audit), Verifier: testAuditKey.Verifier(), Stored: b.Stored},
		Metrics:     b.Metrics,

		ServeMetrics: b.Metrics != nil,
	}
	configure(&cfg)
	e, err := httpapi.New(cfg)
	if err != nil {
		tb.Fatalf("httpapi.New: %v", err)
	}
	// The server has the write timeout the API is told of, as serve's has.
	ts := httptest.NewUnstartedServer(e)
	ts.Config.WriteTimeout = cfg.WriteTimeout
	ts.Start()
	tb.Cleanup(ts.Close)
	transport := &http.Transport{MaxIdleConnsPerHost: 128}
	tb.Cleanup(transport.CloseIdleConnections)
	return &apiServer{URL: ts.URL, Backend: b, echo: e, client: &http.Client{Transport: transport}, logs: logs}
}

// team is an account and a team of it.
type team struct {
	account, id uuid.UUID
}

func newTeam() team { return team{account: uuid.New(), id: uuid.New()} }

// user returns a new user of the team with the given role.
func (t team) user(role domain.Role) domain.Actor {
	return domain.Actor{UserID: uuid.New(), AccountID: t.account, TeamID: t.id, Role: role}
}

func token(tb testing.TB, actor domain.Actor) string {
	tb.Helper()
	tok, err := httpapi.SignToken(testSecret, actor, time.Hour)
	if err != nil {
		tb.Fatalf("SignToken: %v", err)
	}
	return tok
}

// request is one HTTP request of a test.
type request struct {
	method, path, body string
	// auth is the whole Authorization header; none when empty.
	auth   string
	header http.Header
}

// as returns a request authenticated as actor.
func as(tb testing.TB, actor domain.Actor, method, path, body string) request {
	tb.Helper()
	return request{method: method, path: path, body: body, auth: "Bearer " + token(tb, actor)}
}

// with returns r with an extra header.
func (r request) with(name, value string) request {
	h := r.header.Clone()
	if h == nil {
		h = http.Header{}
	}
	h.Set(name, value)
	r.header = h
	return r
}

// response is what a request got.
type response struct {
	status int
	header http.Header
	body   []byte
}

// requestTimeout bounds a request of a test. It is set on the request's
// context rather than as http.Client.Timeout, which costs a goroutine per
// request and would weigh on the benchmark.
const requestTimeout = 30 * time.Second

// send makes a request, and checks it and its answer against the OpenAPI
// document (conforms); safe from any goroutine. A body is declared as JSON
// unless the request says otherwise.
func (s *apiServer) send(ctx context.Context, r request) (response, error) {
	req, err := http.NewRequestWithContext(ctx, r.method, s.URL+r.path, strings.NewReader(r.body))
	if err != nil {
		return response{}, fmt.Errorf("new request: %w", err)
	}
	if r.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for name, values := range r.header {
		req.Header[name] = values
	}
	if r.auth != "" {
		req.Header.Set("Authorization", r.auth)
	}
	res, err := s.client.Do(req)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: %w", r.method, r.path, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: read body: %w", r.method, r.path, err)
	}
	got := response{status: res.StatusCode, header: res.Header, body: body}
	return got, conforms(ctx, req, r.body, got)
}

// do makes a request and fails the test if it could not be made or its
// status is not want.
func (s *apiServer) do(tb testing.TB, r request, want int) response {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	res, err := s.send(ctx, r)
	if err != nil {
		tb.Fatal(err)
	}
	if res.status != want {
		tb.Fatalf("%s %s: status %d, want %d; body %s", r.method, r.path, res.status, want, res.body)
	}
	return res
}

// handoff is a handoff as a client reads it.
type handoff struct {
	ID            uuid.UUID  `json:"id"`
	SessionID     uuid.UUID  `json:"session_id"`
	Intent        string     `json:"intent"`
	EngineerNotes string     `json:"engineer_notes"`
	NotesErased   bool       `json:"notes_erased,omitempty"`
	Priority      string     `json:"priority"`
	Status        string     `json:"status"`
	CreatedBy     uuid.UUID  `json:"created_by"`
	CreatedAt     time.Time  `json:"created_at"`
	ClaimedBy     *uuid.UUID `json:"claimed_by"`
	ClaimedAt     *time.Time `json:"claimed_at"`
}

// sameHandoff compares handoffs by value, pointed-to fields included.
func sameHandoff(a, b handoff) bool {
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA == nil && errB == nil && bytes.Equal(ja, jb)
}

// claimedConflict is the 409 body of a lost claim.
type claimedConflict struct {
	Detail    string    `json:"detail"`
	ClaimedBy uuid.UUID `json:"claimed_by"`
	ClaimedAt time.Time `json:"claimed_at"`
}

// decodeStrict decodes a JSON body that has no field T lacks.
func decodeStrict[T any](body []byte) (T, error) {
	var v T
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return v, fmt.Errorf("decode %T from %s: %w", v, body, err)
	}
	return v, nil
}

func decode[T any](tb testing.TB, res response) T {
	tb.Helper()
	v, err := decodeStrict[T](res.body)
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

// detail returns the detail of an error body, failing unless the body is
// exactly {"detail": "..."}.
func detail(tb testing.TB, res response) string {
	tb.Helper()
	return decode[struct {
		Detail string `json:"detail"`
	}](tb, res).Detail
}

// expectError checks an error response's status and exact detail.
func (s *apiServer) expectError(tb testing.TB, r request, status int, want string) {
	tb.Helper()
	res := s.do(tb, r, status)
	if got := detail(tb, res); got != want {
		tb.Fatalf("%s %s: detail %q, want %q", r.method, r.path, got, want)
	}
}

func createPath(session uuid.UUID) string { return "/ai-sessions/" + session.String() + "/handoff" }

func historyPath(session uuid.UUID) string { return "/ai-sessions/" + session.String() + "/handoffs" }

func actionPath(session, handoff uuid.UUID, action string) string {
	return historyPath(session) + "/" + handoff.String() + "/" + action
}

// create makes actor park or escalate a session and returns the handoff.
func (s *apiServer) create(tb testing.TB, actor domain.Actor, session uuid.UUID, body string) handoff {
	tb.Helper()
	return decode[handoff](tb, s.do(tb, as(tb, actor, http.MethodPost, createPath(session), body), http.StatusCreated))
}

func (s *apiServer) escalate(tb testing.TB, actor domain.Actor, session uuid.UUID) handoff {
	tb.Helper()
	return s.create(tb, actor, session, `{"intent":"escalate","engineer_notes":"needs a senior","priority":"high"}`)
}

func (s *apiServer) claim(tb testing.TB, actor domain.Actor, h handoff) handoff {
	tb.Helper()
	return decode[handoff](tb, s.do(tb, as(tb, actor, http.MethodPost, actionPath(h.SessionID, h.ID, "claim"), ""), http.StatusOK))
}

func (s *apiServer) history(tb testing.TB, actor domain.Actor, session uuid.UUID) []handoff {
	tb.Helper()
	return decode[[]handoff](tb, s.do(tb, as(tb, actor, http.MethodGet, historyPath(session), ""), http.StatusOK))
}

func (s *apiServer) queue(tb testing.TB, actor domain.Actor) []handoff {
	tb.Helper()
	return decode[[]handoff](tb, s.do(tb, as(tb, actor, http.MethodGet, "/ai-sessions/queue", ""), http.StatusOK))
}

// events returns the whole log.
func (s *apiServer) events(tb testing.TB) []eventstore.Event {
	tb.Helper()
	var all []eventstore.Event
	for {
		var after int64
		if len(all) > 0 {
			after = all[len(all)-1].Position
		}
		batch, err := s.Backend.Log.ReadAll(context.Background(), after, 1000)
		if err != nil {
			tb.Fatalf("read the log: %v", err)
		}
		if len(batch) == 0 {
			return all
		}
		all = append(all, batch...)
	}
}

// stream returns the events of a session of an account.
func (s *apiServer) stream(tb testing.TB, account, session uuid.UUID) []eventstore.Event {
	tb.Helper()
	events, err := s.Backend.Log.ReadStream(context.Background(), eventcodec.StreamName(account, session))
	if err != nil {
		tb.Fatalf("read stream: %v", err)
	}
	return events
}

// types lists the types of events.
func types(events []eventstore.Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.Type
	}
	return out
}

// expectNoNewEvents fails when the log has more than before events.
func (s *apiServer) expectNoNewEvents(tb testing.TB, before int) {
	tb.Helper()
	if n := len(s.events(tb)); n != before {
		tb.Fatalf("log has %d events, want %d: a rejected request appended", n, before)
	}
}
