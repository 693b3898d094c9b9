package faultsuite

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/httpapi"
)

// Kinds of request the load sends.
const (
	kindEscalate = "escalate" // a new session's first escalation: 201
	kindClaim    = "claim"    // the claim of that handoff: 200
	kindReclaim  = "reclaim"  // a second claim of it: 409 once the first is acknowledged
	kindBadBody  = "bad-body" // an escalation with an unknown priority: 422
	kindHistory  = "history"  // the session's history: 200, holding the handoff
	kindQueue    = "queue"    // the team's queue: 200
)

// request is one request the load sent and what came of it.
type request struct {
	id      string // its X-Request-ID, which its event's metadata keeps
	kind    string
	target  *proc
	session uuid.UUID
	// handoff is the handoff a claim names, or the one an escalation's
	// answer or a history must hold.
	handoff uuid.UUID
	// claimAcked says, for a reclaim, whether the claim before it was
	// acknowledged.
	claimAcked bool
	start, end time.Time
	status     int // 0 when no answer came
	retryAfter string
	// sawHandoff says whether a history answered held the handoff.
	sawHandoff bool
	err        error
}

// command reports whether the request asks for a change.
func (r *request) command() bool {
	return r.kind == kindEscalate || r.kind == kindClaim || r.kind == kindReclaim || r.kind == kindBadBody
}

func isRead(r *request) bool { return r.kind == kindHistory || r.kind == kindQueue }

// acked reports whether the request was answered with a 2xx.
func (r *request) acked() bool { return r.status >= 200 && r.status < 300 }

// eventType is the type of the event an acknowledged command appends.
func (r *request) eventType() string {
	if r.kind == kindEscalate {
		return "HandoffEscalated"
	}
	return "HandoffClaimed"
}

func (r *request) String() string {
	return fmt.Sprintf("%s %s to ledgerd %s at %s (%v): status %d, err %v",
		r.kind, r.id, r.target.name, r.start.Format("15:04:05.000"), r.end.Sub(r.start).Round(time.Millisecond), r.status, r.err)
}

// load is a set of client goroutines sending requests to the cluster's
// healthy processes until stopped.
type load struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	reqs   []*request
	// acks counts the acknowledged commands.
	acks atomic.Int64
}

// startLoad starts clients goroutines, each in an account and team of its
// own, cycling through escalate, history, claim, reclaim on new sessions,
// with a refused escalation and a queue read now and then.
func (c *cluster) startLoad(tb testing.TB, clients int, clientTimeout time.Duration) *load {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel}
	for range clients {
		cl, err := newClient(c, clientTimeout)
		if err != nil {
			tb.Fatal(err)
		}
		l.wg.Go(func() { cl.run(ctx, l) })
	}
	return l
}

// stop stops the clients, waits for their last requests, and returns every
// request sent.
func (l *load) stop() []*request {
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.reqs
}

// snapshot returns the requests sent so far.
func (l *load) snapshot() []*request {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.reqs)
}

func (l *load) record(r *request) {
	l.mu.Lock()
	l.reqs = append(l.reqs, r)
	l.mu.Unlock()
	if r.command() && r.acked() {
		l.acks.Add(1)
	}
}

// client is one load goroutine's users and connection.
type client struct {
	c                        *cluster
	http                     *http.Client
	holder, claimer, another string // bearer tokens of three engineers
	rnd                      *rand.Rand
}

func newClient(c *cluster, timeout time.Duration) (*client, error) {
	account, team := uuid.New(), uuid.New()
	tokens := make([]string, 3)
	for i := range tokens {
		actor := domain.Actor{UserID: uuid.New(), AccountID: account, TeamID: team, Role: domain.RoleEngineer}
		tok, err := httpapi.SignToken([]byte(jwtSecret), actor, time.Hour)
		if err != nil {
			return nil, fmt.Errorf("sign token: %w", err)
		}
		tokens[i] = tok
	}
	return &client{
		c:      c,
		http:   &http.Client{Timeout: timeout, Transport: &http.Transport{MaxIdleConnsPerHost: 2}},
		holder: tokens[0], claimer: tokens[1], another: tokens[2],
		rnd: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
	}, nil
}

// pause is the time between two cycles of a client, which keeps the load
// small.
const pause = 20 * time.Millisecond

func (cl *client) run(ctx context.Context, l *load) {
	defer cl.http.CloseIdleConnections()
	for cycle := 0; ctx.Err() == nil; cycle++ {
		cl.cycle(ctx, l, cycle)
		select {
		case <-ctx.Done():
		case <-time.After(pause):
		}
	}
}

// cycle escalates a new session, reads its history, claims the handoff
// and claims it again, stopping at the first step without an answer or
// with an unexpected one.
func (cl *client) cycle(ctx context.Context, l *load, cycle int) {
	session := uuid.New()
	if cycle%3 == 0 {
		l.record(cl.send(ctx, &request{kind: kindBadBody, session: uuid.New()}, cl.holder))
		l.record(cl.send(ctx, &request{kind: kindQueue}, cl.claimer))
	}
	esc := cl.send(ctx, &request{kind: kindEscalate, session: session}, cl.holder)
	l.record(esc)
	if esc.status != http.StatusCreated {
		return
	}
	l.record(cl.send(ctx, &request{kind: kindHistory, session: session, handoff: esc.handoff}, cl.holder))
	claim := cl.send(ctx, &request{kind: kindClaim, session: session, handoff: esc.handoff}, cl.claimer)
	l.record(claim)
	if claim.status == 0 {
		return
	}
	l.record(cl.send(ctx, &request{kind: kindReclaim, session: session, handoff: esc.handoff, claimAcked: claim.acked()}, cl.another))
}

// send sends r with the bearer token to a random healthy process and
// fills in the outcome. r.target is nil when no process is healthy.
func (cl *client) send(ctx context.Context, r *request, token string) *request {
	r.id = uuid.NewString()
	targets := cl.c.targets()
	r.start = time.Now()
	if len(targets) == 0 {
		r.target = &proc{name: "(none)"}
		r.err = fmt.Errorf("no healthy process")
		r.end = time.Now()
		return r
	}
	r.target = targets[cl.rnd.IntN(len(targets))]
	method, path, body := http.MethodPost, "", ""
	switch r.kind {
	case kindEscalate:
		path, body = fmt.Sprintf("/ai-sessions/%s/handoff", r.session), `{"intent":"escalate","engineer_notes":"fault suite","priority":"high"}`
	case kindBadBody:
		path, body = fmt.Sprintf("/ai-sessions/%s/handoff", r.session), `{"intent":"escalate","priority":"whenever"}`
	case kindClaim, kindReclaim:
		path = fmt.Sprintf("/ai-sessions/%s/handoffs/%s/claim", r.session, r.handoff)
	case kindHistory:
		method, path = http.MethodGet, fmt.Sprintf("/ai-sessions/%s/handoffs", r.session)
	case kindQueue:
		method, path = http.MethodGet, "/ai-sessions/queue"
	}
	// The request is not bound to ctx: a stopped load lets its last
	// request finish, so that its outcome is known.
	req, err := http.NewRequestWithContext(context.WithoutCancel(ctx), method, r.target.base+path, strings.NewReader(body))
	if err != nil {
		r.err = err
		return r
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Request-ID", r.id)
	resp, err := cl.http.Do(req)
	if err != nil {
		r.err, r.end = err, time.Now()
		return r
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	r.end = time.Now()
	r.status, r.retryAfter = resp.StatusCode, resp.Header.Get("Retry-After")
	if err != nil {
		r.err = fmt.Errorf("read the answer: %w", err)
		return r
	}
	r.err = r.parse(raw)
	return r
}

// handoffJSON is the part of a handoff's JSON the suite reads.
type handoffJSON struct {
	ID uuid.UUID `json:"id"`
}

// parse reads what the suite needs from a 2xx answer's body.
func (r *request) parse(raw []byte) error {
	if !r.acked() {
		return nil
	}
	switch r.kind {
	case kindEscalate:
		var h handoffJSON
		if err := json.Unmarshal(raw, &h); err != nil {
			return fmt.Errorf("answer %q: %w", raw, err)
		}
		r.handoff = h.ID
	case kindHistory:
		var hs []handoffJSON
		if err := json.Unmarshal(raw, &hs); err != nil {
			return fmt.Errorf("answer %q: %w", raw, err)
		}
		for _, h := range hs {
			r.sawHandoff = r.sawHandoff || h.ID == r.handoff
		}
	}
	return nil
}
