package pgtest

import (
	"errors"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Server is a PostgreSQL server of one test's own, which the test may stop
// and start again, on the same port and data directory, to see what clients
// do while the database is down. Unlike the shared server it is always
// started here (the binaries are found as for the shared one), never taken
// from LEDGER_TEST_DATABASE_URL, and needs no pgtest.Main.
type Server struct {
	mu           sync.Mutex
	srv          *server
	port         int
	templateOnce sync.Once
	templateErr  error
}

// StartServer initializes and starts a server for tb. It is stopped and its
// directory removed when tb has finished.
func StartServer(tb testing.TB) *Server {
	tb.Helper()
	bins, err := findBinaries()
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	// A commit is written to the operating system before it is
	// acknowledged, so that an immediate shutdown (Crash) loses nothing
	// acknowledged; fsync stays off unless the tests are durable, as the
	// machine itself does not crash.
	srv, err := startLocal(bins, "-c", "synchronous_commit=on")
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	port, err := strconv.Atoi(srv.admin.Port())
	if err != nil {
		_ = srv.stop()
		tb.Fatalf("pgtest: port of %s: %v", srv.admin.Host, err)
	}
	s := &Server{srv: srv, port: port}
	tb.Cleanup(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if err := srv.stop(); err != nil {
			tb.Errorf("pgtest: %v", err)
		}
	})
	return s
}

// NewDatabase returns the URL of a new database on the server, migrated as
// the shared server's are (see NewDatabase). The server must be running.
func (s *Server) NewDatabase(tb testing.TB) string {
	tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.templateOnce.Do(func() { s.templateErr = s.srv.createTemplate() })
	if s.templateErr != nil {
		tb.Fatalf("pgtest: %v", s.srv.withLog(s.templateErr))
	}
	return s.srv.newDatabase(tb, s.srv.template)
}

// Stop shuts the server down (a fast shutdown: open sessions are ended,
// clients see their connections drop) and waits until it has exited.
// Stopping a stopped server does nothing.
func (s *Server) Stop(tb testing.TB) {
	tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.srv.shutdown(); err != nil {
		tb.Fatalf("pgtest: %v", s.srv.withLog(err))
	}
}

// Crash stops the server with an immediate shutdown, as after a crash:
// sessions end at once and the next Start runs crash recovery. Crashing
// a stopped server does nothing.
func (s *Server) Crash(tb testing.TB) {
	tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.srv.shutdownWith(syscall.SIGQUIT); err != nil {
		tb.Fatalf("pgtest: %v", s.srv.withLog(err))
	}
}

// Start starts a stopped server again on its port and data directory and
// waits until it accepts connections. It fails tb if the server is
// running.
func (s *Server) Start(tb testing.TB) {
	tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv.cmd != nil {
		tb.Fatal("pgtest: Start of a running server")
	}
	// The port may be held for a moment by the server just stopped.
	deadline := time.Now().Add(readyTimeout)
	for {
		err := s.srv.launch(s.port)
		if err == nil {
			return
		}
		if !errors.Is(err, errPortTaken) || time.Now().After(deadline) {
			tb.Fatalf("pgtest: restart on port %d: %v", s.port, s.srv.withLog(err))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// LogPath returns the path of the server's log, which every run appends to.
func (s *Server) LogPath() string {
	return s.srv.logPath
}
