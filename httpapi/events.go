package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
)

// EventLog is what the audit routes read of the event log.
type EventLog interface {
	// ReadStream returns a stream's events in version order.
	ReadStream(ctx context.Context, stream string) ([]eventstore.Event, error)
	// ReadAccount returns up to limit events of an account after a
	// position, in position order, never skipping one that commits late.
	ReadAccount(ctx context.Context, account uuid.UUID, after int64, limit int) ([]eventstore.Event, error)
}

// The audit routes answer events as their envelopes: eventstore.Event's
// JSON form, the one the relay publishes on NATS, with the metadata that
// says who gave the command, from where, in answer to what.

// Page sizes of GET /events.
const (
	defaultEventPage = 100
	maxEventPage     = 1000
)

// exportChunk is how many events an export reads and writes at a time:
// the most it holds in memory.
const exportChunk = 500

// mimeNDJSON asks GET /events for an export, one envelope a line.
const mimeNDJSON = "application/x-ndjson"

// mayAudit lets through the roles that may read the event log: auditor,
// admin and owner; the others get 403.
func mayAudit(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if !actorOf(c).Role.CanAudit() {
			return domain.Errorf(domain.EFORBIDDEN, domain.MsgAuditRoleNeeded)
		}
		return next(c)
	}
}

// sessionEvents answers GET /ai-sessions/:session_id/events: the session's
// events in stream order; [] for a session of another account or none.
func (s *server) sessionEvents(c echo.Context) error {
	session, err := pathID(c, "session_id")
	if err != nil {
		return err
	}
	events, err := s.events.ReadStream(c.Request().Context(), eventcodec.StreamName(actorOf(c).AccountID, session))
	if err != nil {
		return err
	}
	if events == nil {
		events = []eventstore.Event{} // [], not null
	}
	return c.JSON(http.StatusOK, events)
}

// accountEvents answers GET /events: a page of the caller's account's
// events in global order after a position, or with Accept:
// application/x-ndjson all of them, as an export.
func (s *server) accountEvents(c echo.Context) error {
	after, err := queryInt(c, "after", 0, 0, math.MaxInt64, "after must be an integer position, 0 or more")
	if err != nil {
		return err
	}
	limit64, err := queryInt(c, "limit", defaultEventPage, 1, maxEventPage, "limit must be an integer from 1 to "+strconv.Itoa(maxEventPage))
	if err != nil {
		return err
	}
	limit := int(limit64)
	account := actorOf(c).AccountID
	if strings.Contains(c.Request().Header.Get(echo.HeaderAccept), mimeNDJSON) {
		return s.exportEvents(c, account, after)
	}
	events, err := s.events.ReadAccount(c.Request().Context(), account, after, limit+1)
	if err != nil {
		return err
	}
	if len(events) > limit {
		events = events[:limit]
		next := strconv.FormatInt(events[limit-1].Position, 10)
		c.Response().Header().Set("Link", "</events?after="+next+"&limit="+strconv.Itoa(limit)+`>; rel="next"`)
	}
	if events == nil {
		events = []eventstore.Event{}
	}
	return c.JSON(http.StatusOK, events)
}

// exportEvents streams every event of the account after a position, one
// envelope a line, a chunk at a time: it holds one chunk in memory, flushes
// each, and gives the connection a new write deadline (the server's write
// timeout) before each, so that a long export is not cut. It ends at a
// chunk that comes back short: the log as it stood when that chunk was
// read. A failure before the first line is an error answer; after it, the
// connection is cut, so that the client cannot take a part for the whole.
func (s *server) exportEvents(c echo.Context, account uuid.UUID, after int64) error {
	ctx := c.Request().Context()
	events, err := s.events.ReadAccount(ctx, account, after, exportChunk)
	if err != nil {
		return err
	}
	res := c.Response()
	rc := http.NewResponseController(res)
	res.Header().Set(echo.HeaderContentType, mimeNDJSON)
	res.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(res)
	for {
		if err := s.extendWriteDeadline(rc); err != nil {
			return s.abortExport(c, err)
		}
		for _, e := range events {
			if err := enc.Encode(e); err != nil {
				return s.abortExport(c, err)
			}
		}
		if err := rc.Flush(); err != nil {
			return s.abortExport(c, err)
		}
		if len(events) < exportChunk {
			return nil
		}
		if events, err = s.events.ReadAccount(ctx, account, events[len(events)-1].Position, exportChunk); err != nil {
			return s.abortExport(c, err)
		}
	}
}

// extendWriteDeadline gives the connection s.writeTimeout more to write;
// nothing when it has none, or when the writer cannot have one.
func (s *server) extendWriteDeadline(rc *http.ResponseController) error {
	if s.writeTimeout <= 0 {
		return nil
	}
	if err := rc.SetWriteDeadline(time.Now().Add(s.writeTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}

// abortExport ends an export whose answer has begun: it logs why and
// cuts the connection (http.ErrAbortHandler), so that the client sees an
// incomplete answer rather than a short export that looks whole. It never
// returns.
func (s *server) abortExport(c echo.Context, err error) error {
	ctx := c.Request().Context()
	if ctx.Err() != nil {
		s.log.InfoContext(ctx, "export ended: client went away", "err", err, "request_id", requestIDOf(c))
	} else {
		s.log.ErrorContext(ctx, "export cut short", "err", err, "request_id", requestIDOf(c))
	}
	panic(http.ErrAbortHandler)
}

// queryInt reads an integer query parameter from min to max: def when
// absent, a 422 with detail when repeated, not an integer or out of range.
func queryInt(c echo.Context, name string, def, min, max int64, detail string) (int64, error) {
	values, ok := c.QueryParams()[name]
	if !ok {
		return def, nil
	}
	n, err := strconv.ParseInt(values[0], 10, 64)
	if err != nil || len(values) != 1 || n < min || n > max {
		return 0, domain.Errorf(domain.EINVALID, "%s", detail)
	}
	return n, nil
}
