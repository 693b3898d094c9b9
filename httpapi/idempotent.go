package httpapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/idempotency"
)

// Details of the Idempotency-Key answers.
const (
	msgKeyLength   = "Idempotency-Key must be 1 to 255 printable ASCII characters"
	msgKeyReused   = "Idempotency-Key reused with a different request"
	msgKeyInFlight = "A request with this Idempotency-Key is in progress"
)

// idempotent makes a POST with an Idempotency-Key run at most once per
// account, user and key: the first request reserves the key and stores its response; a
// retry of the same request gets that response again, with the header
// Idempotent-Replayed: true. The same key with another method, path or
// body is 422; the same request while the first still runs is 409. 5xx
// responses, answers that ask for a retry (Retry-After) and requests whose
// client went away are not stored, so a retry after one runs again. Must
// run after authenticate.
func (s *server) idempotent(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		values := c.Request().Header.Values(headerIdempotencyKey)
		if len(values) == 0 {
			return next(c)
		}
		key := values[0]
		if len(values) > 1 || !validKey(key) {
			return badRequest(msgKeyLength)
		}
		body, err := readBody(c)
		if err != nil {
			return err
		}
		c.Request().Body = io.NopCloser(bytes.NewReader(body))
		actor := actorOf(c)
		// The route's session, if it names one: an erasure of the session
		// deletes the response.
		session, _ := uuid.Parse(c.Param("session_id"))
		owner := idempotency.Owner{Account: actor.AccountID, User: actor.UserID, Session: session}
		hash := requestHash(actor.AccountID, c.Request().Method, c.Request().URL.Path, body)
		rec, reserved, err := s.idem.Reserve(c.Request().Context(), owner, key, hash)
		if err != nil {
			return err
		}
		if !reserved {
			return s.replay(c, rec, hash)
		}
		return s.runReserved(c, next, owner, key)
	}
}

// validKey accepts 1 to idempotency.MaxKeyLength printable ASCII
// characters, spaces included: the characters of a structured-field string.
func validKey(key string) bool { return asciiToken(key, idempotency.MaxKeyLength, true) }

// requestHash identifies a request for its Idempotency-Key: the account it
// acts in, its method, path and body.
func requestHash(account uuid.UUID, method, path string, body []byte) string {
	h := sha256.New()
	h.Write([]byte(account.String() + " " + method + " " + path + "\n"))
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

// replay answers a request whose key another request holds.
func (s *server) replay(c echo.Context, rec idempotency.Record, hash string) error {
	switch {
	case rec.RequestHash != hash:
		return domain.Errorf(domain.EINVALID, msgKeyReused)
	case rec.Pending():
		return domain.Errorf(domain.ECONFLICT, msgKeyInFlight)
	}
	c.Response().Header().Set(headerReplayed, "true")
	s.metrics.Replay()
	return c.Blob(rec.StatusCode, echo.MIMEApplicationJSON, rec.Response)
}

// runReserved runs the request that holds the key, writes its response
// (errors included) and stores it; on a 5xx, an answer with Retry-After, a
// failure to store or a panic it releases the key instead.
func (s *server) runReserved(c echo.Context, next echo.HandlerFunc, owner idempotency.Owner, key string) error {
	// The key must be stored or released even when the client is gone.
	ctx := context.WithoutCancel(c.Request().Context())
	stored := false
	defer func() {
		if stored {
			return
		}
		if err := s.idem.Release(ctx, owner, key); err != nil {
			s.log.ErrorContext(ctx, "release idempotency key", "err", err, "request_id", requestIDOf(c))
		}
	}()
	rec := &recorder{ResponseWriter: c.Response().Writer}
	c.Response().Writer = rec
	if err := next(c); err != nil {
		c.Error(err)
	}
	status := c.Response().Status
	if status >= http.StatusInternalServerError || status == statusClientClosedRequest ||
		c.Response().Header().Get(echo.HeaderRetryAfter) != "" {
		return nil
	}
	if err := s.idem.Complete(ctx, owner, key, status, rec.body.Bytes()); err != nil {
		s.log.ErrorContext(ctx, "store idempotent response", "err", err, "request_id", requestIDOf(c))
		return nil
	}
	stored = true
	return nil
}

// recorder keeps a copy of the response body it passes on.
type recorder struct {
	http.ResponseWriter
	body bytes.Buffer
}

func (r *recorder) Write(b []byte) (int, error) {
	r.body.Write(b)
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
