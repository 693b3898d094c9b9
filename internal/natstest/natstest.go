// Package natstest runs real NATS servers with JetStream inside a test
// binary. Each test gets its own server, or its own cluster of servers, on
// free ports with their own temporary store directories; a server can be
// stopped and started again on the same ports and store, so tests can take
// NATS, or one node of a cluster, away and bring it back.
package natstest

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	readyTimeout = 10 * time.Second
	// electionTimeout bounds WaitCurrent: after a stream's leader was
	// stopped, a cluster starved by the whole suite running beside it
	// took more than readyTimeout to elect and catch up (its Raft groups
	// missing heartbeats and electing again).
	electionTimeout = 45 * time.Second
	startAttempts   = 20
	retryWait       = 50 * time.Millisecond
)

// Server is an in-process NATS server with JetStream on.
type Server struct {
	mu   sync.Mutex
	srv  *server.Server // nil while stopped
	opts server.Options // Port is the chosen port after the first start
}

// Start starts a server for tb on a random port, with JetStream storing in
// a temporary directory. The server is shut down when tb has finished.
func Start(tb testing.TB) *Server {
	tb.Helper()
	s := &Server{opts: options(tb, server.RANDOM_PORT)}
	s.start(tb)
	tb.Cleanup(s.Stop)
	return s
}

// options are a server's options: JetStream on, storing in a temporary
// directory of tb, clients on port.
func options(tb testing.TB, port int) server.Options {
	return server.Options{
		Host:      "127.0.0.1",
		Port:      port,
		JetStream: true,
		StoreDir:  tb.TempDir(),
		NoLog:     true,
		NoSigs:    true,
		// Small limits keep the server from sizing itself to the machine.
		JetStreamMaxMemory: 256 << 20,
		JetStreamMaxStore:  1 << 30,
	}
}

// URL returns the nats:// URL clients connect to. It stays the same across
// Stop and Restart.
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return "nats://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(s.opts.Port))
}

// Stop shuts the server down and waits until it has stopped; clients see
// the connection drop, and in a cluster the server hands the leadership of
// its streams to another node first. Stopping a stopped server does
// nothing.
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

// Restart starts a stopped server again on the same ports and store
// directory, so clients reconnect to it and JetStream recovers its streams
// (in a cluster, the server rejoins it). It stops the server first if it
// is running.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	s.Stop()
	s.start(tb)
}

// start starts the server, retrying while its ports are not free yet.
func (s *Server) start(tb testing.TB) {
	tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		if err = s.tryStart(); err == nil {
			return
		}
		time.Sleep(retryWait) // a port may still be held by the last run
	}
	tb.Fatalf("natstest: %v", err)
}

// tryStart starts the server once; s.mu is held.
func (s *Server) tryStart() error {
	// A server that cannot listen only says so after readyTimeout.
	for _, port := range []int{s.opts.Port, s.opts.Cluster.Port} {
		if port == server.RANDOM_PORT || port == 0 {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			return fmt.Errorf("port %d: %w", port, err)
		}
		l.Close()
	}
	opts := s.opts // the server keeps and changes the options it is given
	srv, err := server.NewServer(&opts)
	if err != nil {
		return fmt.Errorf("new server: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(readyTimeout) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return fmt.Errorf("server on port %d not ready within %v", s.opts.Port, readyTimeout)
	}
	s.srv = srv
	s.opts.Port = srv.Addr().(*net.TCPAddr).Port
	return nil
}

// Cluster is a cluster of in-process NATS servers (nodes) with JetStream
// on, each with its own store directory, joined by routes on loopback.
type Cluster struct {
	Nodes []*Server
}

// StartCluster starts a cluster of n nodes for tb and waits until
// JetStream has elected its leader. The nodes are shut down when tb has
// finished.
func StartCluster(tb testing.TB, n int) *Cluster {
	tb.Helper()
	ports := freePorts(tb, 2*n) // n for clients, n for routes
	routes := make([]*url.URL, n)
	for i := range n {
		routes[i] = &url.URL{Scheme: "nats", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[n+i]))}
	}
	c := &Cluster{}
	for i := range n {
		s := &Server{opts: options(tb, ports[i])}
		s.opts.ServerName = "node-" + strconv.Itoa(i+1)
		s.opts.Cluster = server.ClusterOpts{Name: "ledger-test", Host: "127.0.0.1", Port: ports[n+i]}
		for j, r := range routes {
			if j != i {
				s.opts.Routes = append(s.opts.Routes, r)
			}
		}
		c.Nodes = append(c.Nodes, s)
		s.start(tb)
		tb.Cleanup(s.Stop)
	}
	c.WaitCurrent(tb, "")
	return c
}

// URL returns the URLs of every node, comma-separated, as NATS clients
// take them.
func (c *Cluster) URL() string {
	urls := make([]string, len(c.Nodes))
	for i, s := range c.Nodes {
		urls[i] = s.URL()
	}
	return strings.Join(urls, ",")
}

// account is the account of clients that do not authenticate, whose
// streams the helpers below look at.
const account = server.DEFAULT_GLOBAL_ACCOUNT

// WaitCurrent waits until JetStream has a leader and every node is current
// with it and, when stream is not empty, until the stream has a leader and
// every node's replica of it is current, failing tb after a bound.
func (c *Cluster) WaitCurrent(tb testing.TB, stream string) {
	tb.Helper()
	deadline := time.Now().Add(electionTimeout)
	for time.Now().Before(deadline) {
		metaLeader, streamLeader, current := false, stream == "", true
		for _, s := range c.Nodes {
			srv := s.server()
			if srv == nil {
				current = false
				break
			}
			metaLeader = metaLeader || srv.JetStreamIsLeader()
			current = current && srv.JetStreamIsCurrent()
			if stream != "" {
				streamLeader = streamLeader || srv.JetStreamIsStreamLeader(account, stream)
				current = current && srv.JetStreamIsStreamCurrent(account, stream)
			}
		}
		if metaLeader && streamLeader && current {
			return
		}
		time.Sleep(retryWait) // polling the elections
	}
	tb.Fatalf("natstest: the cluster's JetStream (stream %q) not current within %v", stream, electionTimeout)
}

// StreamLeader returns the node that leads the stream, nil if none does.
func (c *Cluster) StreamLeader(stream string) *Server {
	for _, s := range c.Nodes {
		if srv := s.server(); srv != nil && srv.JetStreamIsStreamLeader(account, stream) {
			return s
		}
	}
	return nil
}

// server returns the running server, nil while it is stopped.
func (s *Server) server() *server.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.srv
}

// freePorts returns n ports that were free on loopback a moment ago.
func freePorts(tb testing.TB, n int) []int {
	tb.Helper()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatalf("natstest: find a free port: %v", err)
		}
		defer l.Close() // held until all are chosen, so they differ
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports
}

// JetStream connects a test's own client to the NATS servers at url, with
// opts, and returns its JetStream context (js.Conn() is the connection).
// The connection closes when the test ends.
func JetStream(tb testing.TB, url string, opts ...nats.Option) jetstream.JetStream {
	tb.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		tb.Fatalf("connect to %s: %v", url, err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatalf("jetstream: %v", err)
	}
	return js
}
