package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/resolutionflow/ledgerd/commands"
	"github.com/resolutionflow/ledgerd/domain"
)

// statusOf is the only table from error code to HTTP status.
var statusOf = map[domain.Code]int{
	domain.EINVALID:      http.StatusUnprocessableEntity,
	domain.ENOTFOUND:     http.StatusNotFound,
	domain.ECONFLICT:     http.StatusConflict,
	domain.EFORBIDDEN:    http.StatusForbidden,
	domain.EUNAUTHORIZED: http.StatusUnauthorized,
	domain.EUNAVAILABLE:  http.StatusServiceUnavailable,
	domain.EINTERNAL:     http.StatusInternalServerError,
}

// retryAfter is the Retry-After, in seconds, of an answer that asks the
// client to try again: a busy session, or a service unavailable for a
// moment.
const retryAfter = "1"

// internalDetail is the only detail a client sees of an internal error.
const internalDetail = "Internal server error"

// statusClientClosedRequest is the status logged for a request whose
// client went away before it was answered (nginx's 499): the failure that
// follows is the client's leaving, not the server's fault.
const statusClientClosedRequest = 499

// errorBody is every error response.
type errorBody struct {
	Detail string `json:"detail"`
}

// claimedBody answers a claim of a handoff somebody else has claimed.
type claimedBody struct {
	Detail    string    `json:"detail"`
	ClaimedBy uuid.UUID `json:"claimed_by"`
	ClaimedAt time.Time `json:"claimed_at"`
}

// handleError is echo's HTTPErrorHandler: it writes the response for an
// error returned by a handler or middleware, and logs internal errors
// (and, at WARN, those that make the service unavailable for a moment).
func (s *server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	status, body := s.errorResponse(err, c)
	switch {
	case status == http.StatusUnauthorized:
		c.Response().Header().Set(echo.HeaderWWWAuthenticate, "Bearer")
	case errors.Is(err, commands.ErrBusy), domain.ErrorCode(err) == domain.EUNAVAILABLE:
		c.Response().Header().Set(echo.HeaderRetryAfter, retryAfter)
	}
	var werr error
	if c.Request().Method == http.MethodHead {
		werr = c.NoContent(status)
	} else {
		werr = c.JSON(status, body)
	}
	if werr != nil {
		s.log.WarnContext(c.Request().Context(), "write error response", "err", werr, "request_id", requestIDOf(c))
	}
}

// errorResponse returns the status and body for err. Echo's own errors
// (unknown route, wrong method, malformed or too large body) carry their
// status; the ledger's carry a code looked up in statusOf.
func (s *server) errorResponse(err error, c echo.Context) (int, any) {
	status, detail := http.StatusInternalServerError, internalDetail
	var he *echo.HTTPError
	var claimed *domain.ClaimedError
	switch {
	case errors.As(err, &he):
		status, detail = he.Code, httpErrorDetail(he)
	case errors.As(err, &claimed):
		return http.StatusConflict, claimedBody{Detail: claimed.Error(), ClaimedBy: claimed.ClaimedBy, ClaimedAt: claimed.ClaimedAt.UTC()}
	default:
		if st, ok := statusOf[domain.ErrorCode(err)]; ok {
			status, detail = st, domain.ErrorMessage(err)
		}
	}
	ctx := c.Request().Context()
	switch {
	case status >= http.StatusInternalServerError && errors.Is(ctx.Err(), context.Canceled):
		s.log.InfoContext(ctx, "client closed request",
			"err", err, "method", c.Request().Method, "path", c.Request().URL.Path, "request_id", requestIDOf(c))
		return statusClientClosedRequest, errorBody{Detail: "Client closed request"}
	case domain.ErrorCode(err) == domain.EUNAVAILABLE:
		s.log.WarnContext(ctx, "service unavailable",
			"err", err, "method", c.Request().Method, "path", c.Request().URL.Path, "request_id", requestIDOf(c))
		return status, errorBody{Detail: detail}
	case status == http.StatusUnauthorized:
		s.log.InfoContext(ctx, "request refused: not authenticated",
			"reason", err.Error(), "method", c.Request().Method, "path", c.Request().URL.Path, "request_id", requestIDOf(c))
	case status >= http.StatusInternalServerError:
		s.log.ErrorContext(ctx, "internal error",
			"err", err, "method", c.Request().Method, "path", c.Request().URL.Path, "request_id", requestIDOf(c))
		return status, errorBody{Detail: internalDetail}
	}
	return status, errorBody{Detail: detail}
}

func httpErrorDetail(he *echo.HTTPError) string {
	if msg, ok := he.Message.(string); ok && msg != "" {
		return msg
	}
	if he.Message != nil {
		return fmt.Sprint(he.Message)
	}
	return http.StatusText(he.Code)
}

// badRequest is a request the server cannot read at all (malformed JSON);
// requests it can read but that break a rule are domain.EINVALID (422).
func badRequest(detail string) error {
	return echo.NewHTTPError(http.StatusBadRequest, detail)
}
