package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/projections"
)

// LogTail is what the queue stream follows the log with: where its
// committed end is, and a wake-up at each append made in this process.
// Both stores are one.
type LogTail interface {
	// Head returns the position of the last committed event.
	Head(ctx context.Context) (int64, error)
	// Appended returns a channel closed at the next append made through
	// the store in this process.
	Appended() <-chan struct{}
}

// The queue stream (GET /ai-sessions/queue/stream) answers server-sent
// events (text/event-stream):
//
//   - ready, first: {"position": P}, the log's head when the stream began.
//     A client loads the queue after it (GET /ai-sessions/queue) and applies
//     the handoff events that follow, in order, to what it loaded; it may
//     apply one whose change the queue already shows: each gives a
//     handoff's whole state.
//   - handoff: {"position": P, "handoff": {...}}, a handoff of the caller's
//     queue (its team's; every team's for an auditor) as it stands after
//     the event at position P changed it: open, it belongs in the queue;
//     claimed or withdrawn, it leaves it.
//   - error: {"detail": "..."}, the last message, when the stream cannot go
//     on (the token expired, the database is down); the client connects
//     again.
//
// A comment line every streamHeartbeat keeps proxies from closing an idle
// stream. The stream starts at the head, never at a position the client
// names: after a reconnection the client loads the queue again, so a
// stream never replays an account's history.
const (
	// streamPoll is how often a stream looks for appends made by other
	// processes, which no wake-up signals: a change shows within it.
	streamPoll = 250 * time.Millisecond
	// streamHeartbeat is the longest a stream stays silent.
	streamHeartbeat = 15 * time.Second
	// streamBatch is how many events a stream reads at a time.
	streamBatch = 500
	// streamProbe is how many of a touched session's newest handoffs a
	// stream reads: its open handoff, if any, is the newest.
	streamProbe = 10
	// mimeEventStream is the media type of server-sent events.
	mimeEventStream = "text/event-stream"
)

// streamReady and streamHandoff are the data of the ready and handoff
// events.
type streamReady struct {
	Position int64 `json:"position"`
}

type streamHandoff struct {
	Position int64       `json:"position"`
	Handoff  HandoffJSON `json:"handoff"`
}

// queueStream answers GET /ai-sessions/queue/stream: the changes of the
// caller's queue as they are committed, as server-sent events, fed from
// the account's part of the log. It ends when the client goes, when the
// server shuts down, or, with an error event, when the caller's token
// expires or a read fails.
func (s *server) queueStream(c echo.Context) error {
	ctx := c.Request().Context()
	actor := actorOf(c)
	pos, err := s.tail.Head(ctx)
	if err != nil {
		return err
	}
	res := c.Response()
	res.Header().Set(echo.HeaderContentType, mimeEventStream)
	res.Header().Set(echo.HeaderCacheControl, "no-store")
	res.WriteHeader(http.StatusOK)
	out := &eventWriter{res: res, rc: http.NewResponseController(res), s: s}
	if err := out.send("ready", streamReady{Position: pos}); err != nil {
		return s.streamGone(c, err)
	}
	heartbeat := streamHeartbeat
	if s.writeTimeout > 0 && s.writeTimeout/2 < heartbeat {
		heartbeat = s.writeTimeout / 2
	}
	quiet := time.Now()
	auth := c.Request().Header.Get(echo.HeaderAuthorization)
	teams := sessionTeams{}
	for {
		wake := s.tail.Appended()
		if _, err := s.tokens.verify(auth); err != nil {
			return s.streamFail(c, out, err)
		}
		events, err := s.events.ReadAccount(ctx, actor.AccountID, pos, streamBatch)
		if err != nil {
			return s.streamFail(c, out, err)
		}
		if len(events) > 0 {
			changes, err := s.queueChanges(ctx, actor, teams, events)
			if err != nil {
				return s.streamFail(c, out, err)
			}
			for _, ch := range changes {
				if err := out.send("handoff", ch); err != nil {
					return s.streamGone(c, err)
				}
				quiet = time.Now()
			}
			pos = events[len(events)-1].Position
			if len(events) == streamBatch {
				continue
			}
		}
		if time.Since(quiet) >= heartbeat {
			if err := out.comment("keep-alive"); err != nil {
				return s.streamGone(c, err)
			}
			quiet = time.Now()
		}
		t := time.NewTimer(streamPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-s.closing:
			t.Stop()
			return nil
		case <-wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// sessionTeams remembers, for a stream, the team of each session's newest
// handoff, so that a stream skips the sessions of other teams without
// reading them. It holds at most maxSessionTeams sessions, and forgets
// them all when full.
type sessionTeams map[uuid.UUID]uuid.UUID

const maxSessionTeams = 10_000

func (m sessionTeams) learn(session, team uuid.UUID) {
	if len(m) >= maxSessionTeams {
		clear(m)
	}
	m[session] = team
}

// queueChanges returns what events, a batch of an account's events in
// position order, changed in actor's queue: for each session they touched,
// the handoffs they touched and its newest one (the only one that can be
// open), as the read models have them now, when they are of actor's team
// (of any team for an auditor). Each comes with the position of the last
// event of the batch that touched its session. A session whose newest
// handoff is known, from teams or from a park or escalation in the batch,
// to be another team's is skipped unread.
func (s *server) queueChanges(ctx context.Context, actor domain.Actor, teams sessionTeams, events []eventstore.Event) ([]streamHandoff, error) {
	type touch struct {
		last     int64
		handoffs map[uuid.UUID]bool
		// read is whether the session may hold a handoff of actor's
		// queue: a park or escalation of actor's team, or another event
		// of a session not known to be another team's.
		read bool
	}
	mine := func(team uuid.UUID) bool { return actor.Role == domain.RoleAuditor || team == actor.TeamID }
	var order []uuid.UUID
	touched := map[uuid.UUID]*touch{}
	for _, e := range events {
		_, session, err := eventcodec.ParseStreamName(e.Stream)
		if err != nil {
			continue // not a session's stream: no handoff of a queue
		}
		t := touched[session]
		if t == nil {
			t = &touch{handoffs: map[uuid.UUID]bool{}}
			touched[session] = t
			order = append(order, session)
		}
		t.last = e.Position
		var ref struct {
			HandoffID uuid.UUID `json:"handoff_id"`
			TeamID    uuid.UUID `json:"team_id"`
		}
		_ = json.Unmarshal(e.Data, &ref) // what it cannot tell, the read model does
		if ref.HandoffID != uuid.Nil {
			t.handoffs[ref.HandoffID] = true
		}
		if ref.TeamID != uuid.Nil { // a park or an escalation: the team of the session's newest handoff
			t.read = t.read || mine(ref.TeamID)
			teams.learn(session, ref.TeamID)
			continue
		}
		// A claim, a withdrawal or an erasure changes the session's newest
		// handoff, of the team last known.
		team, known := teams[session]
		t.read = t.read || !known || mine(team)
	}
	var out []streamHandoff
	for _, session := range order {
		t := touched[session]
		if !t.read {
			continue
		}
		hs, err := s.queries.History(ctx, actor.AccountID, session, projections.Page{Limit: streamProbe})
		if err != nil {
			return nil, err
		}
		if len(hs) > 0 {
			teams.learn(session, hs[0].TeamID)
		}
		// Oldest first, so that a client applying them in order ends with
		// the session's open handoff, if it has one.
		for i := len(hs) - 1; i >= 0; i-- {
			h := hs[i]
			if (i == 0 || t.handoffs[h.ID]) && (actor.Role == domain.RoleAuditor || h.TeamID == actor.TeamID) {
				out = append(out, streamHandoff{Position: t.last, Handoff: toJSON(h)})
			}
		}
	}
	return out, nil
}

// streamFail ends a stream that cannot go on with an error event whose
// data is the error's body, as any other answer would have it.
func (s *server) streamFail(c echo.Context, out *eventWriter, err error) error {
	if c.Request().Context().Err() != nil {
		return nil // the client went away
	}
	_, body := s.errorResponse(err, c)
	if err := out.send("error", body); err != nil {
		return s.streamGone(c, err)
	}
	return nil
}

// streamGone ends a stream the server could not write to: the client
// went away, or its connection broke.
func (s *server) streamGone(c echo.Context, err error) error {
	s.log.InfoContext(c.Request().Context(), "queue stream ended: could not write", "err", err, "request_id", requestIDOf(c))
	return nil
}

// eventWriter writes server-sent events, each flushed at once, giving
// the connection the server's write timeout anew before each.
type eventWriter struct {
	res *echo.Response
	rc  *http.ResponseController
	s   *server
}

// send writes an event whose data is v in JSON, on one line.
func (w *eventWriter) send(event string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s event: %w", event, err)
	}
	return w.write("event: " + event + "\ndata: " + string(data) + "\n\n")
}

// comment writes a comment line, which clients ignore.
func (w *eventWriter) comment(text string) error { return w.write(": " + text + "\n\n") }

func (w *eventWriter) write(text string) error {
	if err := w.s.extendWriteDeadline(w.rc); err != nil {
		return err
	}
	if _, err := w.res.Write([]byte(text)); err != nil {
		return err
	}
	if err := w.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}
