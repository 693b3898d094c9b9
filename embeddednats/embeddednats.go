// Package embeddednats runs the NATS server of the embedded mode inside the
// ledgerd process: JetStream on file storage under the data directory, and a
// client port on loopback so that `ledgerd tail` and the stock nats tool can
// subscribe. The relay connects to it in-process (InProcess), without a
// socket.
//
// The server refuses anonymous clients. It has two users, with passwords
// made at random on the first start and kept, each in a client URL
// (nats://user:password@host:port, rewritten when the address changes), in
// files of the data directory only the owner may read: User, the ledger's
// own, which alone may publish events (URLFile), and ReaderUser, which may
// only read (ReaderURLFile).
package embeddednats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// DefaultListen is where the embedded server listens unless told otherwise.
const DefaultListen = "127.0.0.1:4222"

// readyTimeout bounds how long Start waits for the server to accept
// clients.
const readyTimeout = 30 * time.Second

// readyPoll is how often Start looks whether the server is ready or failed.
const readyPoll = 20 * time.Millisecond

// Config configures the embedded server.
type Config struct {
	// DataDir is the directory of the client URL files (URLFile,
	// ReaderURLFile); JetStream stores its streams in its subdirectory
	// nats. Both are created (mode 0700) when missing. Required.
	DataDir string
	// Listen is the host:port clients connect to; DefaultListen when empty.
	// Port 0 picks a free port.
	Listen string
	// Logger receives the server's log; slog.Default() when nil. The
	// server's notices are logged at debug level.
	Logger *slog.Logger
}

// Server is a running embedded NATS server.
type Server struct {
	srv      *server.Server
	password string // User's
	shutdown func()
}

// Start starts the server and returns once it accepts clients. It fails
// when the store directory is in use by another running server, or when
// the address is taken: then the error wraps syscall.EADDRINUSE and says
// how to choose another address. ctx bounds the wait for the server to be
// ready.
func Start(ctx context.Context, cfg Config) (_ *Server, err error) {
	if cfg.DataDir == "" {
		return nil, errors.New("embedded NATS: no data directory")
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	logger := cfg.Logger.With("component", "embedded-nats")
	host, port, err := splitListen(cfg.Listen)
	if err != nil {
		return nil, err
	}
	if ip := net.ParseIP(host); (ip == nil && host != "localhost") || (ip != nil && !ip.IsLoopback()) {
		logger.WarnContext(ctx, "embedded NATS listens beyond loopback without TLS: its passwords cross the network in clear", "listen", cfg.Listen)
	}
	storeDir := filepath.Join(cfg.DataDir, "nats")
	if err := os.MkdirAll(storeDir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded NATS: create store directory: %w", err)
	}
	unlock, err := lockDir(storeDir)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: store directory %s: %w", storeDir, err)
	}
	defer func() {
		if err != nil {
			unlock()
		}
	}()
	if err := checkFree(cfg.Listen); err != nil {
		return nil, err
	}
	ledgerPass, err := password(cfg.DataDir, URLFile, User)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	readerPass, err := password(cfg.DataDir, ReaderURLFile, ReaderUser)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}

	srv, err := server.NewServer(&server.Options{
		ServerName: "ledgerd",
		Host:       host,
		Port:       port,
		Users:      users(ledgerPass, readerPass),
		JetStream:  true,
		StoreDir:   storeDir,
		// Every stored message is synced to disk before it is
		// acknowledged, as every commit of the SQLite file is: what the
		// relay saw acknowledged survives a power loss.
		SyncAlways: true,
		NoSigs:     true,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	log := &slogAdapter{logger: logger, fatal: make(chan string, 1)}
	srv.SetLoggerV2(log, false, false, false)
	go srv.Start()
	stop := func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
	if err := waitReady(ctx, srv, log.fatal, cfg.Listen); err != nil {
		stop()
		return nil, err
	}
	s := &Server{srv: srv, password: ledgerPass, shutdown: sync.OnceFunc(func() {
		stop()
		unlock()
	})}
	if err := errors.Join(
		writeClientURL(cfg.DataDir, URLFile, s.address(), User, ledgerPass),
		writeClientURL(cfg.DataDir, ReaderURLFile, s.address(), ReaderUser, readerPass),
	); err != nil {
		stop()
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	return s, nil
}

// splitListen parses host:port; port 0 becomes the server's "any free port".
func splitListen(listen string) (string, int, error) {
	host, portText, err := net.SplitHostPort(listen)
	if err != nil {
		return "", 0, fmt.Errorf("embedded NATS: listen address %q: %w", listen, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("embedded NATS: listen address %q: bad port", listen)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	return host, port, nil
}

// checkFree fails with a clear error when the address cannot be listened
// on; the server itself would only report it after readyTimeout.
func checkFree(listen string) error {
	ln, err := net.Listen("tcp", listen)
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("embedded NATS: listen %s: %w; set --nats-listen or LEDGER_NATS_LISTEN", listen, syscall.EADDRINUSE)
	}
	if err != nil {
		return fmt.Errorf("embedded NATS: %w", err)
	}
	return ln.Close()
}

// waitReady waits until srv accepts clients, reports a fatal error, or ctx
// or readyTimeout ends.
func waitReady(ctx context.Context, srv *server.Server, fatal <-chan string, listen string) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	for !srv.ReadyForConnections(readyPoll) {
		select {
		case msg := <-fatal:
			return fmt.Errorf("embedded NATS on %s: %s", listen, msg)
		case <-ctx.Done():
			return fmt.Errorf("embedded NATS on %s: not ready: %w", listen, ctx.Err())
		default:
		}
	}
	return nil
}

// ClientURL returns the nats:// URL clients connect to, with the port the
// server listens on and without credentials; the URL files hold it with
// them.
func (s *Server) ClientURL() string { return "nats://" + s.address() }

// address returns the host:port the server listens on.
func (s *Server) address() string {
	addr := s.srv.Addr().(*net.TCPAddr)
	return net.JoinHostPort(addr.IP.String(), strconv.Itoa(addr.Port))
}

// InProcess is the nats.Connect option that connects to this server inside
// the process, without a socket, as User.
func (s *Server) InProcess() nats.Option {
	return func(o *nats.Options) error {
		o.InProcessServer = s.srv
		o.User, o.Password = User, s.password
		return nil
	}
}

// Shutdown stops the server, waits until it has stopped, and frees the
// store directory. Later calls do nothing.
func (s *Server) Shutdown() { s.shutdown() }

// slogAdapter passes the server's log to slog. A fatal error is logged and
// handed to Start instead of ending the process.
type slogAdapter struct {
	logger *slog.Logger
	fatal  chan string
}

func (a *slogAdapter) Noticef(format string, v ...any) { a.logger.Debug(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Warnf(format string, v ...any)   { a.logger.Warn(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Errorf(format string, v ...any)  { a.logger.Error(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Debugf(format string, v ...any)  { a.logger.Debug(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Tracef(format string, v ...any)  { a.logger.Debug(fmt.Sprintf(format, v...)) }

func (a *slogAdapter) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	a.logger.Error(msg)
	select {
	case a.fatal <- msg:
	default:
	}
}
