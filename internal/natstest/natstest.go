// Package natstest runs a real NATS server with JetStream inside a test
// binary. Each test gets its own server on a random port with its own
// temporary store directory; the server can be stopped and started again on
// the same port and store, so tests can take NATS away and bring it back.
package natstest

import (
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

const (
	readyTimeout  = 10 * time.Second
	startAttempts = 20
	retryWait     = 50 * time.Millisecond
)

// Server is an in-process NATS server with JetStream on.
type Server struct {
	mu   sync.Mutex
	srv  *server.Server // nil while stopped
	port int
	dir  string
}

// Start starts a server for tb on a random port, with JetStream storing in
// a temporary directory. The server is shut down when tb has finished.
func Start(tb testing.TB) *Server {
	tb.Helper()
	s := &Server{port: server.RANDOM_PORT, dir: tb.TempDir()}
	s.start(tb)
	tb.Cleanup(s.Stop)
	return s
}

// URL returns the nats:// URL clients connect to. It stays the same across
// Stop and Restart.
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return "nats://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}

// Stop shuts the server down and waits until it has stopped; clients see
// the connection drop. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}

// Restart starts a stopped server again on the same port and store
// directory, so clients reconnect to it and JetStream recovers its streams.
// It stops the server first if it is running.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	s.Stop()
	s.start(tb)
}

// start starts the server, retrying while the port is not free yet.
func (s *Server) start(tb testing.TB) {
	tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		if err = s.tryStart(); err == nil {
			return
		}
		time.Sleep(retryWait) // the port may still be held by the last run
	}
	tb.Fatalf("natstest: %v", err)
}

// tryStart starts the server once; s.mu is held.
func (s *Server) tryStart() error {
	if s.port != server.RANDOM_PORT {
		// A server that cannot listen only says so after readyTimeout.
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)))
		if err != nil {
			return fmt.Errorf("port %d: %w", s.port, err)
		}
		l.Close()
	}
	opts := &server.Options{
		Host:      "127.0.0.1",
		Port:      s.port,
		JetStream: true,
		StoreDir:  s.dir,
		NoLog:     true,
		NoSigs:    true,
		// Small limits keep the server from sizing itself to the machine.
		JetStreamMaxMemory: 256 << 20,
		JetStreamMaxStore:  1 << 30,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("new server: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(readyTimeout) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return fmt.Errorf("server on port %d not ready within %v", s.port, readyTimeout)
	}
	s.srv = srv
	s.port = srv.Addr().(*net.TCPAddr).Port
	return nil
}
