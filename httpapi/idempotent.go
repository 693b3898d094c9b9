package httpapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/idempotency"
)

// Details of the Idempotency-Key answers.
const (
	msgKeyLength   = "Idempotency-Key must be 1 to 255 printable ASCII characters"
	msgKeyReused   = "Idempotency-Key reused with a different request"
	msgKeyInFlight = "A request with this Idempotency-Key is in progress"
)

// idempotent makes a POST with an Idempotency-Key run at most once per
// account, user and key: the first request runs and its answer is stored
// with the key; a retry of the same request gets that answer again, with
// the header Idempotent-Replayed: true. The same key with another method,
// path or body is 422; the same request while the key is pending
// (idempotency.Record.Pending) is 409. A command stores its answer in the
// same transaction as its events (see execute); another answer is stored
// after the handler ran. Either store fails when another request with the
// key stored its answer first, and the request then answers with that
// one. 5xx responses, answers that ask for a retry (Retry-After) and
// requests whose client went away are not stored, so a retry after one
// runs again. Must run after authenticate.
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
		k := &keyed{
			owner: idempotency.Owner{Account: actor.AccountID, User: actor.UserID, Session: session},
			key:   key,
			hash:  requestHash(actor.AccountID, c.Request().Method, c.Request().URL.Path, body),
		}
		rec, found, err := s.idem.Lookup(c.Request().Context(), k.owner, key)
		if err != nil {
			return err
		}
		if found {
			return s.replay(c, rec, k.hash)
		}
		return s.runKeyed(c, next, k)
	}
}

// keyed is a request with an Idempotency-Key that no request holds yet.
type keyed struct {
	owner idempotency.Owner
	key   string
	hash  string
	// stored is set by a command that stored its answer with its events.
	stored bool
}

// ctxKeyed holds a request's *keyed for the handlers.
const ctxKeyed = "ledgerd.keyed"

// keyedOf returns the request's *keyed, nil for a request without a new
// Idempotency-Key.
func keyedOf(c echo.Context) *keyed {
	k, _ := c.Get(ctxKeyed).(*keyed)
	return k
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

// runKeyed runs a request whose key no request holds. Its response is
// held back until its answer is stored, so that a request that lost the
// key to another one answers as that one did instead.
func (s *server) runKeyed(c echo.Context, next echo.HandlerFunc, k *keyed) error {
	// The answer must be stored even when the client is gone.
	ctx := context.WithoutCancel(c.Request().Context())
	res := c.Response()
	held := &heldResponse{ResponseWriter: res.Writer}
	res.Writer = held
	c.Set(ctxKeyed, k)
	err := next(c)
	if errors.Is(err, eventstore.ErrAnswerTaken) {
		// Another request with the key committed its command first;
		// this one appended nothing.
		res.Writer = held.ResponseWriter
		return s.replayTaken(c, ctx, k)
	}
	if err != nil {
		c.Error(err)
	}
	res.Writer = held.ResponseWriter
	status := res.Status
	storable := status < http.StatusInternalServerError && status != statusClientClosedRequest &&
		res.Header().Get(echo.HeaderRetryAfter) == ""
	if !k.stored && storable {
		rec, saved, err := s.idem.Save(ctx, k.owner, k.key, k.hash, status, held.body.Bytes())
		switch {
		case err != nil:
			s.log.ErrorContext(ctx, "store idempotent response", "err", err, "request_id", requestIDOf(c))
		case !saved:
			res.Committed, res.Size = false, 0
			return s.replay(c, rec, k.hash)
		}
	}
	held.ResponseWriter.WriteHeader(status)
	_, err = held.ResponseWriter.Write(held.body.Bytes())
	return err
}

// replayTaken answers a request whose command found its key taken by
// another request.
func (s *server) replayTaken(c echo.Context, ctx context.Context, k *keyed) error {
	c.Response().Committed, c.Response().Size = false, 0
	rec, found, err := s.idem.Lookup(ctx, k.owner, k.key)
	if err != nil {
		return err
	}
	if !found {
		return domain.Errorf(domain.ECONFLICT, msgKeyInFlight)
	}
	return s.replay(c, rec, k.hash)
}

// heldResponse holds a response back: the headers go to the real writer's
// map, the status and body wait in it until runKeyed writes them.
type heldResponse struct {
	http.ResponseWriter
	body bytes.Buffer
}

func (r *heldResponse) WriteHeader(int) {}

func (r *heldResponse) Write(b []byte) (int, error) { return r.body.Write(b) }

// Unwrap lets http.ResponseController reach the connection's writer.
func (r *heldResponse) Unwrap() http.ResponseWriter { return r.ResponseWriter }
