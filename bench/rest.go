package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/commands"
	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/httpapi"
	"github.com/resolutionflow/ledgerd/internal/alternate"
	"github.com/resolutionflow/ledgerd/projections"
)

// requestTimeout bounds each request of the REST figures.
const requestTimeout = 30 * time.Second

// api is the ledgerd the REST figures run against.
type api struct {
	host   string // host:port
	secret []byte
	// settle, when not nil, waits until the read models have caught up
	// with the log (in-process only).
	settle func(context.Context) error
}

// startAPI returns the REST API the figures use: the remote one, or one
// started in this process on the scratch ledger, with the projector that
// runs, stopped by the function returned.
func (r *runner) startAPI(ctx context.Context) (*api, func(), error) {
	if rem := r.cfg.REST; rem != nil {
		u, err := url.Parse(rem.URL)
		if err != nil || u.Scheme != "http" || u.Host == "" {
			return nil, nil, fmt.Errorf("REST URL %q: want http://host:port", rem.URL)
		}
		return &api{host: u.Host, secret: rem.JWTSecret}, func() {}, nil
	}
	secret := []byte(uuid.NewString() + uuid.NewString())
	h, err := httpapi.New(httpapi.Config{
		Commands:    commands.NewHandler(r.t.Log, nil, commands.WithKeyring(r.t.Keys)),
		Queries:     projections.CaughtUp(r.t.Views, r.t.Log, r.projector, 2*time.Second),
		Events:      r.t.Log,
		Tail:        r.t.Log,
		Idempotency: r.t.Idem,
		JWTSecret:   secret,
		Logger:      r.cfg.Logger,
	})
	if err != nil {
		return nil, nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: requestTimeout, IdleTimeout: time.Minute}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(ln)
	}()
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		srv.Close()
		<-served
	}
	settle := func(ctx context.Context) error {
		head, err := r.t.Log.Head(ctx)
		if err != nil {
			return err
		}
		return r.projector.WaitFor(ctx, head)
	}
	return &api{host: ln.Addr().String(), secret: secret, settle: settle}, stop, nil
}

// client is a keep-alive HTTP/1.1 connection that writes each request in
// one piece and reads the answer with http.ReadResponse: http.Client's
// two goroutines per connection would cost the machine about as much as
// the server they measure.
type client struct {
	conn net.Conn
	in   *bufio.Reader
	out  []byte
	host string
}

func (a *api) dial(ctx context.Context) (*client, error) {
	var d net.Dialer
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", a.host)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", a.host, err)
	}
	return &client{conn: conn, in: bufio.NewReader(conn), host: a.host}, nil
}

// post sends a POST with a JSON body (none when body is empty) and
// returns the status and the body of the answer.
func (c *client) post(path, token, body string) (int, []byte, error) {
	if err := c.conn.SetDeadline(time.Now().Add(requestTimeout)); err != nil {
		return 0, nil, err
	}
	c.out = fmt.Appendf(c.out[:0], "POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n", path, c.host, token, len(body))
	if body != "" {
		c.out = append(c.out, "Content-Type: application/json\r\n"...)
	}
	c.out = append(append(c.out, "\r\n"...), body...)
	if _, err := c.conn.Write(c.out); err != nil {
		return 0, nil, fmt.Errorf("POST %s: %w", path, err)
	}
	res, err := http.ReadResponse(c.in, nil)
	if err != nil {
		return 0, nil, fmt.Errorf("POST %s: read the answer: %w", path, err)
	}
	got, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	res.Body.Close()
	if err != nil {
		return 0, nil, fmt.Errorf("POST %s: read the body: %w", path, err)
	}
	return res.StatusCode, got, nil
}

func (c *client) close() { c.conn.Close() }

// dialAll opens n connections; on an error it closes those it opened.
func (a *api) dialAll(ctx context.Context, n int) ([]*client, error) {
	conns := make([]*client, 0, n)
	for range n {
		c, err := a.dial(ctx)
		if err != nil {
			closeAll(conns)
			return nil, err
		}
		conns = append(conns, c)
	}
	return conns, nil
}

func closeAll(conns []*client) {
	for _, c := range conns {
		c.close()
	}
}

const escalateBody = `{"intent": "escalate", "engineer_notes": "customer VPN drops every 20 minutes; tried MTU 1400", "priority": "high"}`

// escalate escalates a new session and returns the handoff's id.
func (c *client) escalate(token string, session uuid.UUID) (string, error) {
	status, body, err := c.post("/ai-sessions/"+session.String()+"/handoff", token, escalateBody)
	if err != nil {
		return "", err
	}
	if status != http.StatusCreated {
		return "", fmt.Errorf("escalate: status %d, want 201: %s", status, body)
	}
	var h struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(body, &h); err != nil || h.ID == "" {
		return "", fmt.Errorf("escalate: no handoff id in %s", body)
	}
	return h.ID, nil
}

func claimPath(session uuid.UUID, handoff string) string {
	return "/ai-sessions/" + session.String() + "/handoffs/" + handoff + "/claim"
}

// tokenTTL is how long the benchmark's tokens live.
const tokenTTL = time.Hour

// engineers returns n tokens of distinct engineers of one team.
func (a *api) engineers(tn tenant, n int) ([]string, error) {
	tokens := make([]string, n)
	for i := range tokens {
		var err error
		tokens[i], err = httpapi.SignToken(a.secret, domain.Actor{UserID: uuid.New(), AccountID: tn.account, TeamID: tn.team, Role: domain.RoleEngineer}, tokenTTL)
		if err != nil {
			return nil, err
		}
	}
	return tokens, nil
}

// rest measures REST escalate then claim from each number of clients, and
// the claim race.
func (r *runner) rest(ctx context.Context) error {
	a, stop, err := r.startAPI(ctx)
	if err != nil {
		return err
	}
	defer stop()
	for _, clients := range r.cfg.Clients {
		if err := r.escalateClaim(ctx, a, clients); err != nil {
			return fmt.Errorf("REST escalate and claim, %d clients: %w", clients, err)
		}
	}
	if err := r.claimRace(ctx, a); err != nil {
		return fmt.Errorf("claim race: %w", err)
	}
	return nil
}

// escalateClaim measures, from clients connections, an escalation of a new
// session followed by its claim by another engineer, against the baseline
// insert from as many writers.
func (r *runner) escalateClaim(ctx context.Context, a *api, clients int) error {
	r.p.start(fmt.Sprintf("REST escalate and claim, %d clients", clients))
	tn := newTenant()
	holders, err := a.engineers(tn, clients)
	if err != nil {
		return err
	}
	claimers, err := a.engineers(tn, clients)
	if err != nil {
		return err
	}
	conns, err := a.dialAll(ctx, clients)
	if err != nil {
		return err
	}
	defer closeAll(conns)
	escalates := make([][]time.Duration, clients)
	claims := make([][]time.Duration, clients)
	op := func(_ context.Context, w int) error {
		c, session := conns[w], uuid.New()
		start := time.Now()
		handoff, err := c.escalate(holders[w], session)
		if err != nil {
			return err
		}
		escalated := time.Now()
		status, body, err := c.post(claimPath(session, handoff), claimers[w], "")
		if err != nil {
			return err
		}
		if status != http.StatusOK {
			return fmt.Errorf("claim: status %d, want 200: %s", status, body)
		}
		escalates[w] = append(escalates[w], escalated.Sub(start))
		claims[w] = append(claims[w], time.Since(escalated))
		return nil
	}
	res, err := alternate.Run(ctx, alternate.Config{Workers: clients, Duration: r.cfg.Duration}, r.baselineOp(), op, a.settle)
	if err != nil {
		return err
	}
	head := r.head(ctx)
	label := "clients=" + strconv.Itoa(clients)
	f := Figure{Name: "rest_escalate_claim", Case: label, Unit: "escalate+claim", Baseline: baselineInsert, LogEvents: head}
	f.alternated(res)
	r.add(f)
	for _, part := range []struct {
		name string
		lat  [][]time.Duration
	}{{"rest_escalate", escalates}, {"rest_claim", claims}} {
		lat := concatSorted(part.lat)
		p := Figure{Name: part.name, Case: label, Unit: "requests", Calls: len(lat), Rate: rate(len(lat), res.OpTime), LogEvents: head}
		p.latencies(lat)
		r.add(p)
	}
	return nil
}

func concatSorted(parts [][]time.Duration) []time.Duration {
	var all []time.Duration
	for _, p := range parts {
		all = append(all, p...)
	}
	sortDurations(all)
	return all
}

// ErrRace is matched (errors.Is) by the error of a claim race whose round
// did not have exactly one winner.
var ErrRace = errors.New("a claim race did not have exactly one winner")

// claimRace runs RaceRounds rounds in which Claimers engineers claim the
// same new escalation at once: each round must have exactly one 200 and
// 409 for the others. Its latency is the time from the start of a round to
// its last answer.
func (r *runner) claimRace(ctx context.Context, a *api) error {
	r.p.start(fmt.Sprintf("claim race, %d claimers", r.cfg.Claimers))
	tn := newTenant()
	holder, err := a.engineers(tn, 1)
	if err != nil {
		return err
	}
	claimers, err := a.engineers(tn, r.cfg.Claimers)
	if err != nil {
		return err
	}
	conns, err := a.dialAll(ctx, r.cfg.Claimers+1)
	if err != nil {
		return err
	}
	defer closeAll(conns)
	var rounds, each []time.Duration
	start := time.Now()
	for round := range r.cfg.RaceRounds {
		if err := ctx.Err(); err != nil {
			return err
		}
		session := uuid.New()
		handoff, err := conns[0].escalate(holder[0], session)
		if err != nil {
			return err
		}
		if a.settle != nil {
			if err := a.settle(ctx); err != nil {
				return err
			}
		}
		statuses := make([]int, r.cfg.Claimers)
		took := make([]time.Duration, r.cfg.Claimers)
		errs := make([]error, r.cfg.Claimers)
		var ready, done sync.WaitGroup
		release := make(chan struct{})
		for i := range r.cfg.Claimers {
			ready.Add(1)
			done.Go(func() {
				ready.Done()
				<-release
				t := time.Now()
				statuses[i], _, errs[i] = conns[i+1].post(claimPath(session, handoff), claimers[i], "")
				took[i] = time.Since(t)
			})
		}
		ready.Wait()
		t := time.Now()
		close(release)
		done.Wait()
		rounds = append(rounds, time.Since(t))
		each = append(each, took...)
		if err := errors.Join(errs...); err != nil {
			return err
		}
		won, lost := 0, 0
		for _, s := range statuses {
			switch s {
			case http.StatusOK:
				won++
			case http.StatusConflict:
				lost++
			}
		}
		if won != 1 || lost != r.cfg.Claimers-1 {
			return fmt.Errorf("%w: round %d: %d won (200), %d lost (409), of %d", ErrRace, round, won, lost, r.cfg.Claimers)
		}
	}
	took := time.Since(start)
	sortDurations(rounds)
	sortDurations(each)
	head := r.head(ctx)
	label := "claimers=" + strconv.Itoa(r.cfg.Claimers)
	f := Figure{Name: "claim_race", Case: label + " (round: first claim sent to last answer)", Unit: "rounds", Calls: len(rounds), Rate: rate(len(rounds), took), LogEvents: head}
	f.latencies(rounds)
	r.add(f)
	c := Figure{Name: "claim_race_claim", Case: label + " (each claim)", Unit: "claims", Calls: len(each), Rate: rate(len(each), took), LogEvents: head}
	c.latencies(each)
	r.add(c)
	return nil
}
