package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/netutil"
)

// Defaults of the REST API's connection limits. A request, headers and a
// body of at most 64 KiB, arrives well within the read timeout even on a
// slow link. The write timeout runs from the end of a request's headers to
// the end of its answer, so it covers reading the body, the handler
// (a read waits at most a few seconds for the read models) and writing the
// answer. The idle timeout is longer than the 60 seconds load balancers
// commonly keep an idle connection, so that a balancer never sends a
// request on a connection the server is closing.
const (
	defaultHTTPReadTimeout  = 15 * time.Second
	defaultHTTPWriteTimeout = 30 * time.Second
	defaultHTTPIdleTimeout  = 90 * time.Second
	defaultHTTPMaxConns     = 4096
)

// httpFlags configure how the REST API treats its clients' connections.
type httpFlags struct {
	readTimeout  *time.Duration
	writeTimeout *time.Duration
	idleTimeout  *time.Duration
	maxConns     *int
}

func addHTTPFlags(f *flags) httpFlags {
	return httpFlags{
		readTimeout:  f.duration("http-read-timeout", "LEDGER_HTTP_READ_TIMEOUT", defaultHTTPReadTimeout, "longest a client may take to send a request, headers and body"),
		writeTimeout: f.duration("http-write-timeout", "LEDGER_HTTP_WRITE_TIMEOUT", defaultHTTPWriteTimeout, "longest from the end of a request's headers to the end of its answer"),
		idleTimeout:  f.duration("http-idle-timeout", "LEDGER_HTTP_IDLE_TIMEOUT", defaultHTTPIdleTimeout, "how long an idle keep-alive connection stays open"),
		maxConns:     f.int("http-max-conns", "LEDGER_HTTP_MAX_CONNS", defaultHTTPMaxConns, "most client connections open at once; further clients wait to be accepted"),
	}
}

// httpLimits bound what one client connection may hold of the server.
type httpLimits struct {
	readTimeout  time.Duration
	writeTimeout time.Duration
	idleTimeout  time.Duration
	maxConns     int
}

// limits returns the flags' limits, refusing any that is not positive:
// every wait has a bound.
func (h httpFlags) limits() (httpLimits, error) {
	l := httpLimits{readTimeout: *h.readTimeout, writeTimeout: *h.writeTimeout, idleTimeout: *h.idleTimeout, maxConns: *h.maxConns}
	for _, d := range []struct {
		flag  string
		value time.Duration
	}{{"--http-read-timeout", l.readTimeout}, {"--http-write-timeout", l.writeTimeout}, {"--http-idle-timeout", l.idleTimeout}} {
		if d.value <= 0 {
			return httpLimits{}, fmt.Errorf("%s must be positive, got %v", d.flag, d.value)
		}
	}
	if l.maxConns < 1 {
		return httpLimits{}, fmt.Errorf("--http-max-conns must be at least 1, got %d", l.maxConns)
	}
	return l, nil
}

// listen listens on addr and accepts at most l.maxConns connections at
// once: a further client waits, in the system's queue of connections to
// accept, until one of them closes.
func (l httpLimits) listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for HTTP on %s: %w", addr, err)
	}
	return netutil.LimitListener(ln, l.maxConns), nil
}

// maxHeaderBytes bounds a request's headers, a bearer token included;
// larger ones get 431. 32 KiB is what nginx accepts by default. With the
// body limit and --http-max-conns, it bounds the memory clients can make
// the server hold.
const maxHeaderBytes = 32 << 10

// drainShare is the share of the shutdown timeout that requests in flight
// get to finish, in tenths; the rest is for stopping the background work
// and closing the stores.
const drainShare = 9

// httpServer is the REST API's server: it bounds how long a client may
// take to send a request, to take its answer and to keep an idle
// connection, and it stops within a bound however its clients behave.
type httpServer struct {
	srv *http.Server
	// open counts the connections open, for the log of a shutdown that
	// had to cut some.
	open atomic.Int64
	// cancelRequests cancels the context of every request.
	cancelRequests context.CancelFunc
	logger         *slog.Logger
}

// newHTTPServer returns the server of handler with the limits l; serve
// runs it on a listener from l.listen.
func newHTTPServer(handler http.Handler, l httpLimits, logger *slog.Logger) *httpServer {
	base, cancel := context.WithCancel(context.Background())
	s := &httpServer{cancelRequests: cancel, logger: logger}
	s.srv = &http.Server{
		Handler: handler,
		// ReadTimeout bounds the headers and the body; the headers'
		// own timeout, left zero, is the same.
		ReadTimeout:    l.readTimeout,
		WriteTimeout:   l.writeTimeout,
		IdleTimeout:    l.idleTimeout,
		MaxHeaderBytes: maxHeaderBytes,
		BaseContext:    func(net.Listener) context.Context { return base },
		ConnState:      s.track,
		ErrorLog:       slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	return s
}

func (s *httpServer) track(_ net.Conn, state http.ConnState) {
	switch state {
	case http.StateNew:
		s.open.Add(1)
	case http.StateHijacked, http.StateClosed:
		s.open.Add(-1)
	}
}

// serve serves connections from ln until shutdown; it returns
// http.ErrServerClosed then.
func (s *httpServer) serve(ln net.Listener) error { return s.srv.Serve(ln) }

// shutdown stops the server within timeout. It stops accepting, closes the
// idle connections, and gives the requests in flight nine tenths of
// timeout to finish; then it closes the connections still open, cancels
// their requests and logs how many it cut. A client that is slow to send
// or to read is not the server's failure: shutdown reports none.
func (s *httpServer) shutdown(timeout time.Duration) {
	defer s.cancelRequests()
	drain := timeout * drainShare / 10
	ctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		// Every connection has closed; an error is the listener's.
		if err != nil {
			s.logger.Warn("shut down HTTP: close the listener", "err", err)
		}
		return
	}
	open := s.open.Load()
	// Shutdown has closed the listener: Close's error is that of closing
	// it again.
	_ = s.srv.Close()
	s.logger.Warn("shutdown timeout: closed the connections still open", "connections", open, "drain", drain.String())
}

// parseCIDRs parses a comma-separated list of CIDRs, such as
// "10.0.0.0/8, 2001:db8::/32"; none for an empty list.
func parseCIDRs(list string) ([]*net.IPNet, error) {
	if strings.TrimSpace(list) == "" {
		return nil, nil
	}
	var nets []*net.IPNet
	for item := range strings.SplitSeq(list, ",") {
		item = strings.TrimSpace(item)
		_, n, err := net.ParseCIDR(item)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR such as 10.0.0.0/8 or 2001:db8::/32", item)
		}
		nets = append(nets, n)
	}
	return nets, nil
}
