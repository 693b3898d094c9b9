package httpapi_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/oklog/ulid/v2"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/internal/pgtest"
	"github.com/resolutionflow/ledgerd/internal/ratiobench"
	"github.com/resolutionflow/ledgerd/projections"
)

// Sizes of the escalate benchmark.
const (
	benchClients = 16
	// benchPoolSize gives each client a connection and leaves room for
	// the projector: its lease renewals, its reads and its writes.
	benchPoolSize = benchClients + 4
)

// benchTimeout bounds a benchmark connection's life.
const benchTimeout = 10 * time.Minute

// benchNotes are a typical escalation's notes.
const benchNotes = "customer VPN drops every 20 minutes; tried MTU 1400"

// benchBody is the escalate request of the benchmark.
const benchBody = `{"intent":"escalate","engineer_notes":"` + benchNotes + `","priority":"high"}`

// BenchmarkEscalate times a full REST escalate from 16 concurrent clients,
// over loopback HTTP, each request on a new session, on the PostgreSQL stack
// serve runs: event store, command handler, read model kept by the
// projector, idempotency store. It runs the escalate without and with an
// Idempotency-Key (a new key each time). On the same durable server, in
// slices alternating with the escalates, it times the baseline
// (ratiobench.PostgresBaseline, as BenchmarkAppend in eventstore/pgstore
// does): a plain single-row INSERT into a table with UNIQUE(stream,
// version), from 16 writers.
//
// Each slice of escalates ends when the read model has caught up with
// them, so the projector's work counts as theirs. baseline-ratio is the
// escalates' throughput over the baseline's (the target is at least 0.4,
// with a p99 under 25 ms).
func BenchmarkEscalate(b *testing.B) {
	baseline := ratiobench.PostgresBaseline(b, pgtest.NewPool(b, benchClients))
	s := startServer(b, func(tb testing.TB) Backend {
		tb.Helper()
		return postgresBackend(tb, postgresOptions{Pool: pgtest.NewPool(tb, benchPoolSize)})
	})
	tm := newTeam()
	auths := make([]string, benchClients)
	for i := range auths {
		auths[i] = "Bearer " + token(b, tm.user(domain.RoleEngineer))
	}
	for _, keyed := range []bool{false, true} {
		name := "escalate"
		if keyed {
			name += "-idempotent"
		}
		b.Run(fmt.Sprintf("%s/clients=%d", name, benchClients), func(b *testing.B) {
			conns := make([]*benchConn, benchClients)
			for i := range conns {
				conns[i] = s.dialBench(b)
			}
			ratiobench.Run(b, benchClients, baseline, func(_ context.Context, client int) error {
				var key string
				if keyed {
					key = ulid.Make().String()
				}
				return conns[client].post(createPath(uuid.New()), auths[client], key, benchBody, http.StatusCreated)
			}, func(ctx context.Context) error {
				// Reads wait for the projector to apply every committed
				// event; this one finds nothing once it has.
				_, err := s.Backend.Queries.History(ctx, tm.account, uuid.New(), projections.Page{Limit: projections.MaxPageSize})
				return err
			})
		})
	}
}

// benchConn is a benchmark client's keep-alive HTTP/1.1 connection. It
// writes each request in one piece and reads the response with
// http.ReadResponse. The clients share the machine's 2 cores with the
// server and PostgreSQL, and http.Client, with two goroutines per
// connection handing each request and response over, costs about as much
// CPU as the server it would be measuring.
type benchConn struct {
	conn net.Conn
	in   *bufio.Reader
	out  []byte
	host string
}

// dialBench opens a benchmark connection to the server, closed when the
// benchmark ends.
func (s *apiServer) dialBench(tb testing.TB) *benchConn {
	tb.Helper()
	host := strings.TrimPrefix(s.URL, "http://")
	conn, err := net.Dial("tcp", host)
	if err != nil {
		tb.Fatalf("dial %s: %v", host, err)
	}
	tb.Cleanup(func() { conn.Close() })
	if err := conn.SetDeadline(time.Now().Add(benchTimeout)); err != nil {
		tb.Fatal(err)
	}
	return &benchConn{conn: conn, in: bufio.NewReader(conn), host: host}
}

// post sends a JSON POST, with an Idempotency-Key unless key is empty, and
// returns an error unless the response has status want.
func (c *benchConn) post(path, auth, key, body string, want int) error {
	c.out = fmt.Appendf(c.out[:0], "POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n",
		path, c.host, auth, len(body))
	if key != "" {
		c.out = fmt.Appendf(c.out, "Idempotency-Key: %s\r\n", key)
	}
	c.out = append(append(c.out, "\r\n"...), body...)
	if _, err := c.conn.Write(c.out); err != nil {
		return fmt.Errorf("POST %s: %w", path, err)
	}
	res, err := http.ReadResponse(c.in, nil)
	if err != nil {
		return fmt.Errorf("POST %s: read response: %w", path, err)
	}
	got, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		return fmt.Errorf("POST %s: read body: %w", path, err)
	}
	if res.StatusCode != want {
		return fmt.Errorf("POST %s: status %d, want %d; body %s", path, res.StatusCode, want, got)
	}
	return nil
}
