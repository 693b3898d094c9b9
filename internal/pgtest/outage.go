package pgtest

import (
	"bytes"
	"context"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// Outage cuts the database at url off, as a stopped or restarting server
// would: it refuses new connections to it (ALTER DATABASE ... ALLOW_CONNECTIONS
// false, which connecting clients see as a failed connection attempt) and
// terminates every connection it has (pg_terminate_backend, which their
// clients see as SQLSTATE 57P01, admin_shutdown, or a closed connection).
// The returned function, which the test's cleanup also calls, lets
// connections in again.
func Outage(tb testing.TB, databaseURL string) (end func()) {
	tb.Helper()
	s := sharedServer(tb)
	u, err := url.Parse(databaseURL)
	if err != nil {
		tb.Fatalf("pgtest: parse %s: %v", redacted(databaseURL), err)
	}
	dbName := strings.TrimPrefix(u.Path, "/")
	name := quote(dbName)
	ctx, cancel := context.WithTimeout(tb.Context(), time.Minute)
	defer cancel()
	if _, err := s.db.ExecContext(ctx, "ALTER DATABASE "+name+" ALLOW_CONNECTIONS false"); err != nil {
		tb.Fatalf("pgtest: refuse connections: %v", err)
	}
	var once sync.Once
	end = func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if _, err := s.db.ExecContext(ctx, "ALTER DATABASE "+name+" ALLOW_CONNECTIONS true"); err != nil {
				tb.Errorf("pgtest: allow connections again: %v", err)
			}
		})
	}
	tb.Cleanup(end)
	// A session that was starting as connections were refused may have
	// got in; terminate until none is left. Each termination waits for
	// its backend to exit.
	for {
		var left int
		err := s.db.QueryRowContext(ctx, `SELECT count(*) FILTER (WHERE NOT pg_terminate_backend(pid, 10000))
FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, dbName).Scan(&left)
		if err != nil {
			tb.Fatalf("pgtest: terminate connections: %v", err)
		}
		var alive bool
		err = s.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid())`, dbName).Scan(&alive)
		if err != nil {
			tb.Fatalf("pgtest: list connections: %v", err)
		}
		if left == 0 && !alive {
			break
		}
		if ctx.Err() != nil {
			tb.Fatalf("pgtest: connections to %s still open after a minute", dbName)
		}
	}
	return end
}

// Proxy passes connections to the server of a database through, and can
// break one right after the server has run a statement, so that a client
// sees its statement fail although it committed.
type Proxy struct {
	// URL is the database's URL through the proxy.
	URL string

	mu     sync.Mutex
	marker []byte // see CutAfter
}

// markerTail bounds a CutAfter marker: the bytes of a read kept to find a
// marker that spans two reads.
const markerTail = 256

// NewProxy starts a proxy to the database at databaseURL; it stops when
// the test ends.
func NewProxy(tb testing.TB, databaseURL string) *Proxy {
	tb.Helper()
	u, err := url.Parse(databaseURL)
	if err != nil {
		tb.Fatalf("pgtest: parse %s: %v", redacted(databaseURL), err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("pgtest: proxy: %v", err)
	}
	target := u.Host
	u.Host = ln.Addr().String()
	p := &Proxy{URL: u.String()}
	var conns sync.WaitGroup
	tb.Cleanup(func() {
		ln.Close()
		conns.Wait()
	})
	go func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Go(func() { p.serve(client, target) })
		}
	}()
	return p
}

// CutAfter arms the proxy: the next time a client sends bytes holding
// marker (such as a statement's parameter, at most markerTail bytes long), the server's answer to them is
// dropped and both sides of that connection are closed. PostgreSQL answers
// a statement outside a transaction block only after it has committed it
// (its replies are flushed at the end of the statement's Sync), so the
// statement has committed when its client sees the connection break.
func (p *Proxy) CutAfter(marker []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.marker = bytes.Clone(marker)
}

// takeMarker returns the armed marker if seen holds it, and disarms the
// proxy.
func (p *Proxy) takeMarker(seen []byte) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.marker == nil || !bytes.Contains(seen, p.marker) {
		return false
	}
	p.marker = nil
	return true
}

// serve passes one client connection through until either side closes it
// or an armed cut breaks it.
func (p *Proxy) serve(client net.Conn, target string) {
	defer client.Close()
	server, err := net.DialTimeout("tcp", target, 10*time.Second)
	if err != nil {
		return
	}
	defer server.Close()
	cut := make(chan struct{})
	var cutOnce sync.Once
	go func() {
		// Client to server, watching for the armed marker. seen keeps the
		// tail of the previous read, so a marker split across reads is
		// found too.
		var seen []byte
		buf := make([]byte, 32<<10)
		for {
			n, err := client.Read(buf)
			if n > 0 {
				seen = append(seen, buf[:n]...)
				if p.takeMarker(seen) {
					cutOnce.Do(func() { close(cut) })
				}
				seen = seen[max(0, len(seen)-markerTail):]
				if _, werr := server.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		server.Close()
	}()
	// Server to client: after a cut, the server's next answer is dropped
	// and the client's connection closed.
	buf := make([]byte, 32<<10)
	for {
		n, err := server.Read(buf)
		if n > 0 {
			select {
			case <-cut:
				return
			default:
			}
			if _, werr := client.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
