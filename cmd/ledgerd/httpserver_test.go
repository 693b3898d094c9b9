package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/internal/ledgertest"
)

// short is the limit a test exercises; long is one it must not meet.
const (
	short = 200 * time.Millisecond
	long  = time.Minute
)

// cutBound bounds how long a test waits for the server to cut a
// connection whose limit is short.
const cutBound = 10 * time.Second

// generousLimits are limits no test client meets unless it is meant to.
func generousLimits() httpLimits {
	return httpLimits{readTimeout: long, writeTimeout: long, idleTimeout: long, maxConns: 100}
}

// startHTTPServer serves handler with limits l, as serve builds its server,
// on a loopback port until the test ends.
func startHTTPServer(tb testing.TB, handler http.Handler, l httpLimits) (*httpServer, string) {
	tb.Helper()
	ln, err := l.listen("127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := newHTTPServer(handler, l, slog.New(slog.DiscardHandler))
	served := make(chan error, 1)
	go func() { served <- s.serve(ln) }()
	tb.Cleanup(func() {
		s.shutdown(time.Second)
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			tb.Errorf("serve: %v", err)
		}
	})
	return s, ln.Addr().String()
}

// noContent reads a request's body and answers 204.
var noContent = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	w.WriteHeader(http.StatusNoContent)
})

func dial(tb testing.TB, addr string) net.Conn {
	tb.Helper()
	conn, err := net.DialTimeout("tcp", addr, cutBound)
	if err != nil {
		tb.Fatalf("dial: %v", err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn
}

func send(tb testing.TB, conn net.Conn, raw string) {
	tb.Helper()
	if _, err := io.WriteString(conn, raw); err != nil {
		tb.Fatalf("send: %v", err)
	}
}

const getRequest = "GET / HTTP/1.1\r\nHost: ledgerd\r\n\r\n"

// roundTrip sends a GET on conn and reads its answer within limit.
func roundTrip(conn net.Conn, r *bufio.Reader, limit time.Duration) (int, error) {
	if _, err := io.WriteString(conn, getRequest); err != nil {
		return 0, err
	}
	return readStatus(conn, r, limit)
}

func readStatus(conn net.Conn, r *bufio.Reader, limit time.Duration) (int, error) {
	if err := conn.SetReadDeadline(time.Now().Add(limit)); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, err
}

// waitClosed fails tb unless the server closes conn within cutBound;
// whatever it sends before is read and dropped.
func waitClosed(tb testing.TB, conn net.Conn, why string) {
	tb.Helper()
	if err := conn.SetReadDeadline(time.Now().Add(cutBound)); err != nil {
		tb.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, conn); err != nil {
		tb.Fatalf("%s: the server kept the connection open for %v (%v)", why, cutBound, err)
	}
}

func TestHTTPServer_CutsASlowSender(t *testing.T) {
	for name, partial := range map[string]string{
		"Silent":         "",
		"PartialHeaders": "POST / HTTP/1.1\r\nHost: ledgerd\r\nContent-Le",
		"PartialBody":    "POST / HTTP/1.1\r\nHost: ledgerd\r\nContent-Length: 100\r\n\r\n{\"intent\":",
	} {
		t.Run(name, func(t *testing.T) {
			l := generousLimits()
			l.readTimeout = short
			s, addr := startHTTPServer(t, noContent, l)
			conn := dial(t, addr)
			send(t, conn, partial)
			waitClosed(t, conn, "a client that stopped sending")
			ledgertest.WaitUntil(t, cutBound, "the server forgets the connection", func() bool { return s.open.Load() == 0 })
		})
	}
}

func TestHTTPServer_ClosesIdleConnections(t *testing.T) {
	l := generousLimits()
	l.idleTimeout = short
	_, addr := startHTTPServer(t, noContent, l)
	conn := dial(t, addr)
	r := bufio.NewReader(conn)
	if status, err := roundTrip(conn, r, cutBound); err != nil || status != http.StatusNoContent {
		t.Fatalf("request = %d, %v; want 204", status, err)
	}
	waitClosed(t, conn, "an idle keep-alive connection")
}

// TestHTTPServer_CutsAClientThatDoesNotRead sends a request for a large
// answer and never reads it: the handler's writes must fail once the write
// timeout has passed, so that the answer does not stay in memory.
func TestHTTPServer_CutsAClientThatDoesNotRead(t *testing.T) {
	written := make(chan error, 1)
	large := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		chunk := []byte(strings.Repeat("x", 64<<10))
		for range 4096 { // 256 MiB, far more than the sockets' buffers hold
			if _, err := w.Write(chunk); err != nil {
				written <- err
				return
			}
		}
		written <- nil
	})
	l := generousLimits()
	l.writeTimeout = short
	s, addr := startHTTPServer(t, large, l)
	conn := dial(t, addr)
	send(t, conn, getRequest)
	select {
	case err := <-written:
		if err == nil {
			t.Fatal("the handler wrote 256 MiB to a client that reads nothing")
		}
	case <-time.After(cutBound):
		t.Fatalf("the handler still writes to a client that reads nothing after %v (write timeout %v)", cutBound, short)
	}
	ledgertest.WaitUntil(t, cutBound, "the server closes the connection", func() bool { return s.open.Load() == 0 })
}

func TestHTTPServer_CapsConnections(t *testing.T) {
	l := generousLimits()
	l.maxConns = 2
	_, addr := startHTTPServer(t, noContent, l)
	type client struct {
		conn net.Conn
		r    *bufio.Reader
	}
	var held []client
	for range l.maxConns {
		conn := dial(t, addr)
		c := client{conn, bufio.NewReader(conn)}
		if status, err := roundTrip(c.conn, c.r, cutBound); err != nil || status != http.StatusNoContent {
			t.Fatalf("request within the cap = %d, %v; want 204", status, err)
		}
		held = append(held, c)
	}

	extra := dial(t, addr)
	extraReader := bufio.NewReader(extra)
	status, err := roundTrip(extra, extraReader, 300*time.Millisecond)
	var netErr net.Error
	if !errors.As(err, &netErr) || !netErr.Timeout() {
		t.Fatalf("a connection beyond the cap of %d was served: %d, %v", l.maxConns, status, err)
	}
	if status, err := roundTrip(held[0].conn, held[0].r, cutBound); err != nil || status != http.StatusNoContent {
		t.Fatalf("a connection within the cap, while another waits = %d, %v; want 204", status, err)
	}

	held[1].conn.Close()
	if status, err := readStatus(extra, extraReader, cutBound); err != nil || status != http.StatusNoContent {
		t.Fatalf("the waiting connection, once another closed = %d, %v; want 204", status, err)
	}
}

func TestHTTPServer_RefusesLargeHeaders(t *testing.T) {
	_, addr := startHTTPServer(t, noContent, generousLimits())
	for size, want := range map[int]int{maxHeaderBytes / 2: http.StatusNoContent, 4 * maxHeaderBytes: http.StatusRequestHeaderFieldsTooLarge} {
		conn := dial(t, addr)
		send(t, conn, fmt.Sprintf("GET / HTTP/1.1\r\nHost: ledgerd\r\nX-Padding: %s\r\n\r\n", strings.Repeat("x", size)))
		// The server resets the connection after a 431, on the unread
		// headers: only the status counts.
		if status, err := readStatus(conn, bufio.NewReader(conn), cutBound); status != want {
			t.Errorf("a request with %d bytes of headers = %d, %v; want %d", size, status, err, want)
		}
	}
}

func TestHTTPFlags_RefuseUnboundedLimits(t *testing.T) {
	for _, args := range [][]string{
		{"--http-read-timeout", "0"},
		{"--http-write-timeout", "-1s"},
		{"--http-idle-timeout", "0s"},
		{"--http-max-conns", "0"},
	} {
		f := newFlags("serve")
		h := addHTTPFlags(f)
		if err := f.parse(args); err != nil {
			t.Fatalf("parse %q: %v", args, err)
		}
		if _, err := h.limits(); err == nil || !strings.Contains(err.Error(), args[0]) {
			t.Errorf("%q: limits() = %v, want an error naming the flag", args, err)
		}
	}
}

// silentClients opens connections to the service at base that send
// nothing, part of their headers, their headers and part of a body, or a
// request and then nothing: none ever completes a request.
func silentClients(tb testing.TB, base string) []net.Conn {
	tb.Helper()
	addr := strings.TrimPrefix(base, "http://")
	var silent []net.Conn
	for _, partial := range []string{
		"",
		"GET /ai-sessions/queue HTTP/1.1\r\nHost: ledgerd\r\nAuthor",
		fmt.Sprintf("POST /ai-sessions/%s/handoff HTTP/1.1\r\nHost: ledgerd\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"intent\":", uuid.New()),
	} {
		conn := dial(tb, addr)
		send(tb, conn, partial)
		silent = append(silent, conn)
	}
	idle := dial(tb, addr)
	send(tb, idle, "GET /healthz HTTP/1.1\r\nHost: ledgerd\r\n\r\n")
	if status, err := readStatus(idle, bufio.NewReader(idle), cutBound); err != nil || status != http.StatusOK {
		tb.Fatalf("GET /healthz = %d, %v", status, err)
	}
	return silent
}

// TestServe_StopsInTimeWithSilentClients stops the service while clients
// that send nothing more are connected: their read timeout cuts them, and
// the service stops cleanly well within --shutdown-timeout.
func TestServe_StopsInTimeWithSilentClients(t *testing.T) {
	const timeout = 5 * time.Second
	base, stop := startServe(t, "--shutdown-timeout", timeout.String(), "--http-read-timeout", "500ms", "--http-write-timeout", "1s")
	silentClients(t, base)
	start := time.Now()
	if err := stop(); err != nil {
		t.Fatalf("serve returned %v after SIGTERM, want nil", err)
	}
	if took := time.Since(start); took >= timeout {
		t.Fatalf("serve took %v to stop, not less than --shutdown-timeout %v", took, timeout)
	}
}

// TestServe_CutsConnectionsAtShutdownTimeout stops the service while
// silent clients are connected whose read timeout is longer than
// --shutdown-timeout: it closes their connections, logs how many, and
// stops cleanly within the timeout.
func TestServe_CutsConnectionsAtShutdownTimeout(t *testing.T) {
	const timeout = 3 * time.Second
	var logs ledgertest.Buffer
	base, stop := startServeLogging(t, &logs, "--shutdown-timeout", timeout.String(), "--http-read-timeout", "1m")
	silent := silentClients(t, base)
	start := time.Now()
	if err := stop(); err != nil {
		t.Fatalf("serve returned %v after SIGTERM, want nil", err)
	}
	took := time.Since(start)
	t.Logf("stopped in %v", took)
	if took >= timeout {
		t.Errorf("serve took %v to stop, not less than --shutdown-timeout %v", took, timeout)
	}
	// The idle connection closes at once; each silent one is closed by the
	// server by the time serve returns. Whether the one whose request the
	// server answered (401, body unread) is still open at the cut, or
	// already closed, depends on how far the server got with that body, so
	// the log's count is 2 or 3.
	for i, conn := range silent {
		if err := conn.SetReadDeadline(time.Now().Add(cutBound)); err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, conn); isTimeout(err) {
			t.Errorf("silent client %d: the server left its connection open after it stopped", i)
		}
	}
	cut := regexp.MustCompile(`"msg":"shutdown timeout: closed the connections still open","connections":([23]),`)
	if !cut.MatchString(logs.String()) {
		t.Errorf("log lacks %s:\n%s", cut, logs.String())
	}
}

// isTimeout reports whether err is a deadline passing.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestParseCIDRs(t *testing.T) {
	nets, err := parseCIDRs(" 10.0.0.0/8, 2001:db8::/32 ")
	if err != nil || len(nets) != 2 || nets[0].String() != "10.0.0.0/8" || nets[1].String() != "2001:db8::/32" {
		t.Fatalf("parseCIDRs = %v, %v", nets, err)
	}
	if nets, err := parseCIDRs(""); err != nil || nets != nil {
		t.Fatalf("parseCIDRs of nothing = %v, %v; want none", nets, err)
	}
	for _, bad := range []string{"10.0.0.1", "10.0.0.0/8,", "proxy.internal/8", "10.0.0.0/33"} {
		if _, err := parseCIDRs(bad); err == nil {
			t.Errorf("parseCIDRs(%q) accepted it", bad)
		}
	}
}
