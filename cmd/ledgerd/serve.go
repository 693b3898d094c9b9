package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/resolutionflow/ledgerd/audit"
	"github.com/resolutionflow/ledgerd/audit/natswitness"
	"github.com/resolutionflow/ledgerd/commands"
	"github.com/resolutionflow/ledgerd/embeddednats"
	"github.com/resolutionflow/ledgerd/httpapi"
	"github.com/resolutionflow/ledgerd/idempotency"
	"github.com/resolutionflow/ledgerd/metrics"
	"github.com/resolutionflow/ledgerd/projections"
	"github.com/resolutionflow/ledgerd/relay"
)

// storageFlags choose and configure the backend: PostgreSQL when a
// database URL is given, the embedded SQLite file in the data directory
// otherwise.
type storageFlags struct {
	databaseURL valueOrFile
	maxConns    *int
	dataDir     *string
}

// addStorageFlags adds the flags of a command that opens the store.
func addStorageFlags(f *flags) storageFlags {
	s := addStoreLocationFlags(f)
	s.maxConns = f.int("database-max-conns", "LEDGER_DATABASE_MAX_CONNS", 32, "PostgreSQL connection pool size")
	return s
}

// addStoreLocationFlags adds the flags that say which store a command is
// about, for one that needs to know the mode or the data directory but
// opens no database connection (it has no pool to size).
func addStoreLocationFlags(f *flags) storageFlags {
	return storageFlags{
		databaseURL: f.valueOrFile("database-url", "DATABASE_URL", "PostgreSQL URL; when empty, the embedded store in --data-dir is used"),
		dataDir:     f.string("data-dir", "LEDGER_DATA_DIR", defaultDataDir, "directory of the embedded mode's data"),
	}
}

// defaultDataDir is the embedded mode's data directory unless told
// otherwise.
const defaultDataDir = "./ledger-data"

// embedded reports whether the backend is the embedded SQLite store.
func (s storageFlags) embedded() bool { return !s.databaseURL.given() }

// requireLedger refuses, in the embedded mode, a --data-dir that holds no
// ledger, which opening would make empty: for the commands that read one.
func (s storageFlags) requireLedger() error {
	if !s.embedded() {
		return nil
	}
	if _, err := os.Stat(filepath.Join(*s.dataDir, sqliteFile)); err != nil {
		return usageErrorf("no ledger in --data-dir %s: %v", *s.dataDir, err)
	}
	return nil
}

// openLedger opens a ledger that exists already (requireLedger), for the
// commands that read or change one.
func (s storageFlags) openLedger(ctx context.Context, logger *slog.Logger) (*backend, error) {
	if err := s.requireLedger(); err != nil {
		return nil, err
	}
	return s.open(ctx, logger)
}

func (s storageFlags) open(ctx context.Context, logger *slog.Logger) (*backend, error) {
	if s.embedded() {
		return openSQLite(ctx, *s.dataDir, logger)
	}
	url, err := s.databaseURL.get()
	if err != nil {
		return nil, err
	}
	return openPostgres(ctx, url, *s.maxConns, logger)
}

// addSecretFlags adds --jwt-secret and --jwt-secret-file.
func addSecretFlags(f *flags) valueOrFile {
	return f.valueOrFile("jwt-secret", "LEDGER_JWT_SECRET", "HS256 secret that signs bearer tokens, at least 32 bytes (embedded mode: the one kept in --data-dir when empty)")
}

// givenSecret returns the token-signing secret given by jwt, or "" when
// none is.
func givenSecret(jwt valueOrFile) (string, error) {
	if !jwt.given() {
		return "", nil
	}
	secret, err := jwt.get()
	if err != nil {
		return "", err
	}
	if err := checkSecretLength(secret, jwt.source()); err != nil {
		return "", err
	}
	return secret, nil
}

// secret returns the token-signing secret: the flag's or its file's, or in
// the embedded mode the one kept in the data directory (made on first
// use, which generated reports).
func (s storageFlags) secret(jwt valueOrFile) (secret string, generated bool, err error) {
	switch secret, err := givenSecret(jwt); {
	case err != nil || secret != "":
		return secret, false, err
	case s.embedded():
		return loadOrCreateSecret(*s.dataDir)
	}
	return "", false, errors.New("--jwt-secret-file (LEDGER_JWT_SECRET_FILE) or --jwt-secret (LEDGER_JWT_SECRET) is required with PostgreSQL")
}

// serve runs the service until ctx ends: it reads its configuration,
// builds the application and runs it.
func serve(ctx context.Context, args []string, stderr io.Writer, logger *slog.Logger) error {
	cfg, err := parseServe(args)
	if err != nil {
		return err
	}
	a, err := buildApp(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer a.close()
	return a.run(ctx, stderr)
}

// serveConfig is serve's configuration, from its flags, checked.
type serveConfig struct {
	storage                     storageFlags
	addr, metricsAddr           string
	jwt                         valueOrFile
	jwtMaxTTL                   time.Duration
	jwtIssuer, jwtAudience      string
	nats                        natsFlags
	grace, readWait, stallAfter time.Duration
	limits                      httpLimits
	proxies                     []*net.IPNet
	auditKeyFile, masterKeyFile string
}

// parseServe reads serve's flags and checks them.
func parseServe(args []string) (serveConfig, error) {
	f := newFlags("serve")
	storage := addStorageFlags(f)
	addr := f.string("http-addr", "LEDGER_HTTP_ADDR", ":8080", "address the REST API listens on")
	secretFlag := addSecretFlags(f)
	jwtMaxTTL := f.duration("jwt-max-ttl", "LEDGER_JWT_MAX_TTL", httpapi.DefaultJWTMaxTTL, "refuse tokens whose exp is further ahead than this")
	jwtIssuer := f.string("jwt-issuer", "LEDGER_JWT_ISSUER", "", "when set, the iss claim every token must carry")
	jwtAudience := f.string("jwt-audience", "LEDGER_JWT_AUDIENCE", "", "when set, a value the aud claim of every token must hold")
	natsFlags := addNATSFlags(f)
	grace := f.duration("shutdown-timeout", "LEDGER_SHUTDOWN_TIMEOUT", defaultShutdownTimeout, "longest a stop on SIGTERM takes; in-flight requests get nine tenths of it to finish")
	readWait := f.duration("read-wait-timeout", "LEDGER_READ_WAIT_TIMEOUT", defaultReadWaitTimeout, "how long a read waits for the read models to catch up before it answers 503")
	stallAfter := f.duration("stall-after", "LEDGER_STALL_AFTER", defaultStallAfter, "how long the projector's or the relay's checkpoint may stand still behind the log's head before /readyz reports it stalled")
	httpFlags := addHTTPFlags(f)
	trustedProxies := f.string("trusted-proxies", "LEDGER_TRUSTED_PROXIES", "", "comma-separated CIDRs of the proxies whose X-Forwarded-For gives a command's client address; none by default")
	auditKeyFile := addAuditKeyFlag(f)
	masterKeyFile := addMasterKeyFlag(f)
	metricsAddr := f.string("metrics-addr", "LEDGER_METRICS_ADDR", "", "when set, the address /metrics is served on instead of the API's")
	if err := f.parse(args); err != nil {
		return serveConfig{}, err
	}
	cfg := serveConfig{
		storage: storage, addr: *addr, metricsAddr: *metricsAddr, jwt: secretFlag,
		jwtMaxTTL: *jwtMaxTTL, jwtIssuer: *jwtIssuer, jwtAudience: *jwtAudience,
		nats: natsFlags, grace: *grace, readWait: *readWait, stallAfter: *stallAfter,
		auditKeyFile: *auditKeyFile, masterKeyFile: *masterKeyFile,
	}
	if err := checkAddr("http-addr", "LEDGER_HTTP_ADDR", cfg.addr); err != nil {
		return cfg, err
	}
	if err := checkAddr("nats-listen", "LEDGER_NATS_LISTEN", *natsFlags.listen); err != nil {
		return cfg, err
	}
	if cfg.metricsAddr != "" {
		if err := checkAddr("metrics-addr", "LEDGER_METRICS_ADDR", cfg.metricsAddr); err != nil {
			return cfg, err
		}
	}
	var err error
	if cfg.proxies, err = parseCIDRs(*trustedProxies); err != nil {
		return cfg, fmt.Errorf("--trusted-proxies: %w", err)
	}
	if cfg.readWait <= 0 {
		return cfg, fmt.Errorf("--read-wait-timeout must be positive, got %s", cfg.readWait)
	}
	if cfg.stallAfter <= 0 {
		return cfg, fmt.Errorf("--stall-after must be positive, got %s", cfg.stallAfter)
	}
	if cfg.limits, err = httpFlags.limits(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// app is the running service's parts: the store, the listeners, the
// NATS connection, the background workers and the API.
type app struct {
	cfg             serveConfig
	logger          *slog.Logger
	secretGenerated bool
	ln, metricsLn   net.Listener
	target          natsTarget
	api             http.Handler
	metrics         *metrics.Metrics
	workers         []func(context.Context) error
	// closing is closed when the HTTP server begins to shut down, which
	// ends the queue streams.
	closing chan struct{}
	// closers undo the building, last first.
	closers []func()
}

// close releases what buildApp took, in the reverse order.
func (a *app) close() {
	for i := len(a.closers) - 1; i >= 0; i-- {
		a.closers[i]()
	}
}

// buildApp opens the store, the listeners and NATS, and builds the
// workers and the API, not started. On an error, what it took is
// released.
func buildApp(ctx context.Context, cfg serveConfig, logger *slog.Logger) (_ *app, err error) {
	a := &app{cfg: cfg, logger: logger, closing: make(chan struct{})}
	defer func() {
		if err != nil {
			a.close()
		}
	}()
	secret, generated, err := cfg.storage.secret(cfg.jwt)
	if err != nil {
		return nil, err
	}
	a.secretGenerated = generated
	auditKey, err := cfg.storage.auditKey(cfg.auditKeyFile)
	if err != nil {
		return nil, err
	}
	relayCfg, err := cfg.nats.config()
	if err != nil {
		return nil, err
	}
	if err := cfg.nats.checkMode(!cfg.storage.embedded()); err != nil {
		return nil, err
	}
	b, keys, err := cfg.storage.openKeyed(ctx, cfg.masterKeyFile, logger)
	if err != nil {
		return nil, err
	}
	a.closers = append(a.closers, b.close)
	if a.ln, err = cfg.limits.listen(cfg.addr); err != nil {
		return nil, err
	}
	a.closers = append(a.closers, func() { a.ln.Close() })
	if b.pool != nil && *cfg.nats.url == "" {
		release, err := holdEmbeddedNATSLock(ctx, b.pool)
		if err != nil {
			return nil, err
		}
		a.closers = append(a.closers, release)
	}
	if a.target, err = cfg.nats.target(ctx, *cfg.storage.dataDir, logger); err != nil {
		return nil, err
	}
	a.closers = append(a.closers, a.target.stop)
	r, nc, relayCheck, err := startRelay(a.target, relayCfg, b, logger)
	if err != nil {
		return nil, err
	}
	a.closers = append(a.closers, nc.Close)
	if a.metrics, err = newMetrics(b, r); err != nil {
		return nil, err
	}
	if cfg.metricsAddr != "" {
		if a.metricsLn, err = cfg.limits.listen(cfg.metricsAddr); err != nil {
			return nil, fmt.Errorf("--metrics-addr: %w", err)
		}
		a.closers = append(a.closers, func() { a.metricsLn.Close() })
	}

	projector := projections.NewProjector(b.events, b.views, b.locker, b.events.Appended, logger)
	api, err := httpapi.New(httpapi.Config{
		Commands:    commands.NewHandler(b.events, nil, commands.WithMetrics(a.metrics), commands.WithKeyring(keys)),
		Queries:     projections.CaughtUp(b.views, b.events, projector, cfg.readWait),
		Events:      b.events,
		Tail:        b.events,
		Closing:     a.closing,
		Idempotency: b.idem,
		JWTSecret:   []byte(secret),
		JWTMaxTTL:   cfg.jwtMaxTTL,
		JWTIssuer:   cfg.jwtIssuer,
		JWTAudience: cfg.jwtAudience,
		Checks: append(b.checks, relayCheck,
			httpapi.SkippedEventsCheck(b.views, projections.HandoffsProjector),
			httpapi.StallCheck("projector", projections.NewStallWatch(b.views, b.events, projections.HandoffsProjector, cfg.stallAfter)),
			httpapi.StallCheck("relay", projections.NewStallWatch(b.views, b.events, relay.Name, cfg.stallAfter))),
		Logger: logger,

		TrustedProxies: cfg.proxies,
		WriteTimeout:   cfg.limits.writeTimeout,
		Audit:          &httpapi.Audit{Prover: audit.NewProver(b.audit), Verifier: auditKey.Verifier(), Stored: b.raw},
		Metrics:        a.metrics,
		ServeMetrics:   a.metricsLn == nil,
	})
	if err != nil {
		return nil, err
	}
	a.api = withConsole(api)

	witness, err := natswitness.New(nc, natswitness.DefaultStream, relayCfg.Storage, relayCfg.Replicas)
	if err != nil {
		return nil, err
	}
	sealer := audit.NewSealer(audit.EventLeaves{Log: b.raw}, b.audit, auditKey, b.locker, b.events.Appended, witness, logger, audit.SealerConfig{})
	sweeps := func(ctx context.Context) error {
		return idempotency.RunSweeps(ctx, b.idem, idempotency.SweepInterval, logger)
	}
	a.workers = []func(context.Context) error{projector.Run, r.Run, sweeps, sealer.Run}
	return a, nil
}

// run starts the workers and serves the API (and the metrics, on their
// own address) until ctx ends, then shuts down within the grace period:
// in-flight requests finish, the workers stop.
func (a *app) run(ctx context.Context, stderr io.Writer) error {
	cfg, logger := a.cfg, a.logger
	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	var running sync.WaitGroup
	for _, work := range a.workers {
		running.Go(func() {
			if err := work(workCtx); err != nil {
				logger.Error("background worker stopped", "err", err)
			}
		})
	}
	defer func() {
		stopWork()
		running.Wait()
	}()

	srv := newHTTPServer(a.api, cfg.limits, logger)
	srv.srv.RegisterOnShutdown(func() { close(a.closing) })
	served := make(chan error, 2)
	go func() { served <- srv.serve(a.ln) }()
	metricsAt := a.ln.Addr().String()
	if a.metricsLn != nil {
		metricsSrv := newHTTPServer(metricsHandler(a.metrics), cfg.limits, logger)
		go func() { served <- metricsSrv.serve(a.metricsLn) }()
		defer metricsSrv.shutdown(cfg.grace)
		metricsAt = a.metricsLn.Addr().String()
	}
	started := []any{"http", a.ln.Addr().String(), "metrics", metricsAt, "nats", redact(a.target.url), "embedded_store", cfg.storage.embedded()}
	if cfg.storage.embedded() || a.target.embedded {
		dir, err := filepath.Abs(*cfg.storage.dataDir)
		if err != nil {
			return fmt.Errorf("data directory: %w", err)
		}
		started = append(started, "data_dir", dir, "jwt_secret_generated", a.secretGenerated)
	}
	logger.Info("ledgerd serving", started...)
	if isTerminal(stderr) {
		printStartup(stderr, a.ln.Addr(), a.target, cfg.storage, cfg.jwt)
	}

	select {
	case err := <-served:
		return fmt.Errorf("serve HTTP: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down: finishing in-flight requests", "timeout", cfg.grace.String())
	srv.shutdown(cfg.grace)
	logger.Info("ledgerd stopped")
	return nil
}

// defaultShutdownTimeout is the longest a stop on SIGTERM takes unless
// --shutdown-timeout says otherwise.
const defaultShutdownTimeout = 30 * time.Second

// defaultReadWaitTimeout is how long a read waits for the read models to
// reflect the log unless --read-wait-timeout says otherwise.
const defaultReadWaitTimeout = 2 * time.Second

// defaultStallAfter is how long a checkpoint may stand still behind the
// log's head before /readyz reports it, unless --stall-after says
// otherwise: well above a busy projector's or relay's pauses between
// batches, and above the few seconds a takeover of its leadership takes.
const defaultStallAfter = 15 * time.Second

// isTerminal reports whether w is a terminal, where a person reads; there
// the startup lines go with the JSON logs, which a log collector reads
// alone otherwise.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	info, err := f.Stat()
	return err == nil && info.Mode()&os.ModeCharDevice != 0
}

// printStartup tells a person, in a few lines, where everything is.
func printStartup(w io.Writer, api net.Addr, target natsTarget, storage storageFlags, jwt valueOrFile) {
	host := api.String()
	if tcp, ok := api.(*net.TCPAddr); ok && tcp.IP.IsUnspecified() {
		host = net.JoinHostPort("localhost", fmt.Sprint(tcp.Port))
	}
	data := "PostgreSQL"
	secretFile := *jwt.file
	if secretFile == "" {
		secretFile = "/path/to/jwt-secret"
	}
	tokenCmd := "ledgerd token --jwt-secret-file " + secretFile + " --role engineer"
	if storage.embedded() {
		data = *storage.dataDir + " (SQLite, JetStream, token secret)"
		tokenCmd = "ledgerd token --data-dir " + *storage.dataDir + " --role engineer"
	}
	nats := redact(target.url)
	if target.embedded {
		nats += " (embedded, JetStream; credentials in " + filepath.Join(*storage.dataDir, embeddednats.URLFile) + ")"
	}
	fmt.Fprintf(w, "ledgerd is running\n  API:   http://%s\n  NATS:  %s\n  data:  %s\n  token: %s\n", host, nats, data, tokenCmd)
}
