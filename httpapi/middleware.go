package httpapi

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/oklog/ulid/v2"

	"github.com/resolutionflow/ledgerd/commands"
	"github.com/resolutionflow/ledgerd/domain"
)

// Headers the API reads or writes besides echo's.
const (
	headerCorrelationID  = "X-Correlation-ID"
	headerIdempotencyKey = "Idempotency-Key"
	headerReplayed       = "Idempotent-Replayed"
)

// Keys of the values middleware stores in the echo context.
const (
	ctxRequestID       = "ledgerd.request_id"
	ctxClientRequestID = "ledgerd.client_request_id"
	ctxActor           = "ledgerd.actor"
)

// maxTraceIDLength bounds the request and correlation ids taken from a
// client.
const maxTraceIDLength = 128

// requestID gives every request an id of the server's own, a ULID. The
// response's X-Request-ID echoes the client's X-Request-ID when it is a
// sane token, which is then kept as the client's claim, and is the
// server's id otherwise.
func requestID(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		id := ulid.Make().String()
		c.Set(ctxRequestID, id)
		echoed := id
		if client := c.Request().Header.Get(echo.HeaderXRequestID); validTraceID(client) {
			c.Set(ctxClientRequestID, client)
			echoed = client
		}
		c.Response().Header().Set(echo.HeaderXRequestID, echoed)
		return next(c)
	}
}

// validTraceID accepts 1 to maxTraceIDLength visible ASCII characters.
func validTraceID(id string) bool { return asciiToken(id, maxTraceIDLength, false) }

// asciiToken reports whether s has 1 to max characters, each a visible
// ASCII character ('!' to '~'), or a space when allowSpace is set.
func asciiToken(s string, max int, allowSpace bool) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := range len(s) {
		visible := s[i] >= '!' && s[i] <= '~'
		if !visible && !(allowSpace && s[i] == ' ') {
			return false
		}
	}
	return true
}

// requestIDOf is the server's id of the request.
func requestIDOf(c echo.Context) string {
	id, _ := c.Get(ctxRequestID).(string)
	return id
}

// clientRequestIDOf is the client's X-Request-ID, when it is a sane token.
func clientRequestIDOf(c echo.Context) string {
	id, _ := c.Get(ctxClientRequestID).(string)
	return id
}

// traceOf is the request's identity for the events a command appends: the
// server's request id, the ids the client gave, as its claim, and the
// address it came from (see clientIP).
func traceOf(c echo.Context) commands.Trace {
	t := commands.Trace{RequestID: requestIDOf(c), ClientRequestID: clientRequestIDOf(c), ClientIP: c.RealIP()}
	if cid := c.Request().Header.Get(headerCorrelationID); validTraceID(cid) {
		t.ClientCorrelationID = cid
	}
	return t
}

// clientIP returns how the server finds a request's client address: the
// peer's address, or, when the peer is one of the trusted proxies, the
// last address of X-Forwarded-For that is not one of them (echo's
// extractor, which reads the chain from the right). echo trusts loopback,
// link-local and private addresses unless told otherwise: here only the
// configured networks are trusted.
func clientIP(trusted []*net.IPNet) echo.IPExtractor {
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, n := range trusted {
		opts = append(opts, echo.TrustIPRange(n))
	}
	return echo.ExtractIPFromXFFHeader(opts...)
}

// logRequests writes the response of any error returned further down, so
// that the status it logs is the one sent, and logs and counts every
// request.
func (s *server) logRequests(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		if err := next(c); err != nil {
			c.Error(err)
		}
		req, res := c.Request(), c.Response()
		took := time.Since(start)
		s.metrics.Request(req.Method, routeOf(c), res.Status, took)
		attrs := []slog.Attr{
			slog.String("method", req.Method),
			slog.String("path", req.URL.Path),
			slog.Int("status", res.Status),
			slog.Duration("duration", took),
			slog.Int64("bytes", res.Size),
			slog.String("request_id", requestIDOf(c)),
		}
		if id := clientRequestIDOf(c); id != "" {
			attrs = append(attrs, slog.String("client_request_id", id))
		}
		if actor, ok := c.Get(ctxActor).(domain.Actor); ok {
			attrs = append(attrs, slog.String("user", actor.UserID.String()))
		}
		s.log.LogAttrs(req.Context(), slog.LevelInfo, "http request", attrs...)
		return nil
	}
}

// routeOf is the template of the route that c matched, such as
// /ai-sessions/:session_id/handoffs (for a path no route serves, echo
// gives the template of the nearest node of its tree, or none: then
// "unmatched"). A metric's label never holds a path, whose ids would
// multiply the series without bound.
func routeOf(c echo.Context) string {
	if route := c.Path(); route != "" {
		return route
	}
	return "unmatched"
}

// recoverPanics turns a panic in a handler into an internal error, with
// the stack in the error's text for the log.
func recoverPanics(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			r := recover()
			if r == nil {
				return
			}
			if r == http.ErrAbortHandler {
				panic(r)
			}
			err = fmt.Errorf("panic: %v\n%s", r, debug.Stack())
		}()
		return next(c)
	}
}

// limitBody rejects bodies larger than max bytes with 413, up front when
// the request declares its length and otherwise when the body is read
// (see readBody).
func limitBody(max int64) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			req := c.Request()
			if req.ContentLength > max {
				return tooLarge(max)
			}
			req.Body = http.MaxBytesReader(c.Response(), req.Body, max)
			return next(c)
		}
	}
}

// requireJSON refuses with 415 a request whose body is not declared as
// JSON: a body comes with Content-Type application/json (parameters such
// as charset allowed). A request without a body, such as a claim, needs no
// Content-Type.
func requireJSON(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		if req.ContentLength == 0 {
			return next(c)
		}
		media, _, err := mime.ParseMediaType(req.Header.Get(echo.HeaderContentType))
		if err != nil || media != echo.MIMEApplicationJSON {
			return echo.NewHTTPError(http.StatusUnsupportedMediaType, "Content-Type must be application/json")
		}
		return next(c)
	}
}

func tooLarge(max int64) error {
	return echo.NewHTTPError(http.StatusRequestEntityTooLarge, fmt.Sprintf("Request body must be at most %d bytes", max))
}

// readBody reads the whole request body, within the limit set by limitBody.
func readBody(c echo.Context) ([]byte, error) {
	body, err := io.ReadAll(c.Request().Body)
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return nil, tooLarge(tooBig.Limit)
	}
	if err != nil {
		return nil, badRequest("Could not read the request body")
	}
	return body, nil
}
