// Package httpapi is the ledger's REST interface: the handoff routes of the
// endpoints it replaces (create, history, claim, withdraw, queue), the
// audit routes that read the event log, health and readiness probes, the
// Prometheus metrics, its OpenAPI document (openapi.json, served at
// /openapi.json), bearer-token authentication, request ids and client
// addresses, request logs and metrics, and Idempotency-Key handling, on
// echo.
//
// Handlers return errors; one error handler turns every error into a JSON
// body {"detail": "..."} with the status that the table in errors.go gives
// the error's domain code.
package httpapi

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/resolutionflow/ledgerd/commands"
	"github.com/resolutionflow/ledgerd/idempotency"
	"github.com/resolutionflow/ledgerd/metrics"
	"github.com/resolutionflow/ledgerd/projections"
)

// DefaultMaxBodyBytes bounds request bodies when Config.MaxBodyBytes is 0.
const DefaultMaxBodyBytes = 64 << 10

// Config is what the API needs.
type Config struct {
	// Commands runs park, escalate, claim and withdraw.
	Commands *commands.Handler
	// Queries reads the queue and the history.
	Queries projections.Queries
	// Events reads the event log for the audit routes and the queue
	// stream.
	Events EventLog
	// Tail tells the queue stream where the log ends and wakes it at
	// appends made in this process; appends made elsewhere it finds by
	// polling.
	Tail LogTail
	// Closing, when not nil, is closed when the server begins to shut
	// down: the open queue streams end then, so that they do not hold the
	// shutdown up.
	Closing <-chan struct{}
	// Idempotency keeps the responses of POSTs sent with an
	// Idempotency-Key.
	Idempotency idempotency.Store
	// JWTSecret verifies the HS256 bearer tokens.
	JWTSecret []byte
	// JWTMaxTTL refuses tokens whose exp is further ahead than this;
	// DefaultJWTMaxTTL when 0.
	JWTMaxTTL time.Duration
	// JWTIssuer, when not empty, is the iss every token must carry.
	JWTIssuer string
	// JWTAudience, when not empty, must be one of every token's aud.
	JWTAudience string
	// Checks are run by /readyz.
	Checks []Check
	// Logger receives request logs and internal errors; slog.Default()
	// when nil.
	Logger *slog.Logger
	// MaxBodyBytes bounds request bodies; DefaultMaxBodyBytes when 0.
	MaxBodyBytes int64
	// TrustedProxies are the networks whose X-Forwarded-For is believed:
	// a command's client address is the last address of the chain that
	// is not one of them. None by default: the peer's address.
	TrustedProxies []*net.IPNet
	// WriteTimeout is the server's write timeout; an export gives its
	// connection this much more before each chunk it writes. None when 0.
	WriteTimeout time.Duration
	// Audit, when not nil, serves the /audit routes.
	Audit *Audit
	// Metrics, when not nil, counts the requests and the idempotency
	// replays.
	Metrics *metrics.Metrics
	// ServeMetrics serves Metrics at GET /metrics, without a token.
	ServeMetrics bool
}

// Check is one readiness probe of /readyz.
type Check struct {
	// Name identifies the check in the /readyz body.
	Name string
	// Func returns an error when the dependency is not usable.
	Func func(ctx context.Context) error
	// Degrading marks a check whose failure leaves the service able to
	// serve requests: /readyz then answers 200 with status "degraded"
	// instead of 503.
	Degrading bool
}

// server holds the dependencies of the handlers.
type server struct {
	cmds    *commands.Handler
	queries projections.Queries
	events  EventLog
	tail    LogTail
	closing <-chan struct{}
	idem    idempotency.Store
	// cursorKey signs page cursors (newCursorKey).
	cursorKey []byte
	tokens    *tokenVerifier
	checks    []Check
	audit     *Audit
	metrics   *metrics.Metrics
	log       *slog.Logger
	// writeTimeout is Config.WriteTimeout.
	writeTimeout time.Duration
}

// New returns the API's echo instance, ready to serve.
func New(cfg Config) (*echo.Echo, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &server{
		cmds:      cfg.Commands,
		queries:   cfg.Queries,
		events:    cfg.Events,
		tail:      cfg.Tail,
		closing:   cfg.Closing,
		idem:      cfg.Idempotency,
		cursorKey: newCursorKey(cfg.JWTSecret),
		tokens:    newTokenVerifier(cfg),
		checks:    cfg.Checks,
		audit:     cfg.Audit,
		metrics:   cfg.Metrics,
		log:       cfg.Logger,

		writeTimeout: cfg.WriteTimeout,
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	maxBody := cfg.MaxBodyBytes
	if maxBody == 0 {
		maxBody = DefaultMaxBodyBytes
	}

	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.handleError
	e.IPExtractor = clientIP(cfg.TrustedProxies)
	e.Use(requestID, s.logRequests, recoverPanics, limitBody(maxBody))

	e.GET("/healthz", healthz)
	e.GET("/readyz", s.readyz)
	if cfg.ServeMetrics {
		e.GET("/metrics", echo.WrapHandler(cfg.Metrics.Handler()))
	}
	e.GET("/openapi.json", openAPI)

	e.GET("/ai-sessions/queue", s.queue, s.authenticate)
	e.GET("/ai-sessions/queue/stream", s.queueStream, s.authenticate)
	e.GET("/ai-sessions/:session_id/handoffs", s.history, s.authenticate)
	e.GET("/ai-sessions/:session_id/events", s.sessionEvents, s.authenticate, mayAudit)
	e.GET("/events", s.accountEvents, s.authenticate, mayAudit)
	e.POST("/ai-sessions/:session_id/handoff", s.createHandoff, s.authenticate, mayCommand, requireJSON, s.idempotent)
	e.POST("/ai-sessions/:session_id/handoffs/:handoff_id/claim", s.claimHandoff, s.authenticate, mayCommand, requireJSON, s.idempotent)
	e.POST("/ai-sessions/:session_id/handoffs/:handoff_id/withdraw", s.withdrawHandoff, s.authenticate, mayCommand, requireJSON, s.idempotent)
	e.POST("/ai-sessions/:session_id/erase", s.eraseSession, s.authenticate, mayCommand, requireJSON, s.idempotent)
	if s.audit != nil {
		s.routeAudit(e)
	}
	return e, nil
}

func (cfg Config) validate() error {
	var errs []error
	if cfg.Commands == nil {
		errs = append(errs, errors.New("httpapi: Config.Commands is required"))
	}
	if cfg.Queries == nil {
		errs = append(errs, errors.New("httpapi: Config.Queries is required"))
	}
	if cfg.Events == nil {
		errs = append(errs, errors.New("httpapi: Config.Events is required"))
	}
	if cfg.Tail == nil {
		errs = append(errs, errors.New("httpapi: Config.Tail is required"))
	}
	if cfg.Idempotency == nil {
		errs = append(errs, errors.New("httpapi: Config.Idempotency is required"))
	}
	if len(cfg.JWTSecret) == 0 {
		errs = append(errs, errors.New("httpapi: Config.JWTSecret is required"))
	}
	if cfg.JWTMaxTTL < 0 {
		errs = append(errs, errors.New("httpapi: Config.JWTMaxTTL must not be negative"))
	}
	if cfg.WriteTimeout < 0 {
		errs = append(errs, errors.New("httpapi: Config.WriteTimeout must not be negative"))
	}
	if cfg.MaxBodyBytes < 0 {
		errs = append(errs, errors.New("httpapi: Config.MaxBodyBytes must not be negative"))
	}
	if cfg.ServeMetrics && cfg.Metrics == nil {
		errs = append(errs, errors.New("httpapi: Config.ServeMetrics needs Metrics"))
	}
	if a := cfg.Audit; a != nil && (a.Prover == nil || a.Verifier == "") {
		errs = append(errs, errors.New("httpapi: Config.Audit needs a Prover and a Verifier"))
	}
	for _, c := range cfg.Checks {
		if c.Name == "" || c.Func == nil {
			errs = append(errs, errors.New("httpapi: every Check needs a Name and a Func"))
			break
		}
	}
	return errors.Join(errs...)
}
