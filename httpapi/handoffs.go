package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/resolutionflow/ledgerd/asof"
	"github.com/resolutionflow/ledgerd/commands"
	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/idempotency"
	"github.com/resolutionflow/ledgerd/projections"
)

// HandoffJSON is a handoff on the wire, as the REST API and `ledgerd
// replay` show it. Times are RFC 3339 in UTC; the claim fields are null
// until the handoff is claimed. A handoff whose notes were erased
// (POST /ai-sessions/{session_id}/erase) has engineer_notes null and
// notes_erased true; notes_erased is absent otherwise.
type HandoffJSON struct {
	ID            uuid.UUID  `json:"id"`
	SessionID     uuid.UUID  `json:"session_id"`
	Intent        string     `json:"intent"`
	EngineerNotes *string    `json:"engineer_notes"`
	NotesErased   bool       `json:"notes_erased,omitempty"`
	Priority      string     `json:"priority"`
	Status        string     `json:"status"`
	CreatedBy     uuid.UUID  `json:"created_by"`
	CreatedAt     time.Time  `json:"created_at"`
	ClaimedBy     *uuid.UUID `json:"claimed_by"`
	ClaimedAt     *time.Time `json:"claimed_at"`
}

func toJSON(h domain.Handoff) HandoffJSON {
	out := HandoffJSON{
		ID:          h.ID,
		SessionID:   h.SessionID,
		Intent:      string(h.Intent),
		NotesErased: h.NotesErased,
		Priority:    string(h.Priority),
		Status:      string(h.Status),
		CreatedBy:   h.CreatedBy,
		CreatedAt:   h.CreatedAt.UTC(),
	}
	if !h.NotesErased {
		notes := h.Notes
		out.EngineerNotes = &notes
	}
	if h.ClaimedBy != uuid.Nil {
		by, at := h.ClaimedBy, h.ClaimedAt.UTC()
		out.ClaimedBy, out.ClaimedAt = &by, &at
	}
	return out
}

// HandoffsJSON returns the wire form of a list of handoffs, in their order.
func HandoffsJSON(hs []domain.Handoff) []HandoffJSON {
	out := make([]HandoffJSON, len(hs)) // never nil: an empty list is [], not null
	for i, h := range hs {
		out[i] = toJSON(h)
	}
	return out
}

// pathID parses the path parameter param in any spelling uuid.Parse
// accepts (upper case, braces, urn:uuid:), so that every spelling names
// the same canonical id. An id that is not a UUID is 422 naming the
// parameter, as the service the API replaces answered; so is the nil UUID:
// it is nobody's id, and the read models store it as NULL.
func pathID(c echo.Context, param string) (uuid.UUID, error) {
	id, err := uuid.Parse(c.Param(param))
	switch {
	case err != nil:
		return uuid.Nil, domain.Errorf(domain.EINVALID, "%s must be a UUID", param)
	case id == uuid.Nil:
		return uuid.Nil, domain.Errorf(domain.EINVALID, "%s must not be the nil UUID", param)
	}
	return id, nil
}

// queue answers GET /ai-sessions/queue: a page of the open handoffs of
// the caller's account and team; for an auditor, of every team of the
// account. With as_of, the handoffs that were open at that instant,
// folded from the account's events.
func (s *server) queue(c echo.Context) error {
	actor := actorOf(c)
	limit, err := pageLimit(c)
	if err != nil {
		return err
	}
	at, err := asOf(c)
	if err != nil {
		return err
	}
	kind, team := queueList, actor.TeamID
	if actor.Role == domain.RoleAuditor {
		kind, team = accountQueueList, uuid.Nil // every team
	}
	scope := [2]uuid.UUID{actor.AccountID, team}
	after, err := s.pageCursor(c, kind, scope)
	if err != nil {
		return err
	}
	ctx, page := c.Request().Context(), projections.Page{Limit: limit + 1, After: after}
	var hs []domain.Handoff
	switch {
	case at.past:
		hs, err = asof.Queue(ctx, s.events, actor.AccountID, team, at.at, page)
	case kind == accountQueueList:
		hs, err = s.queries.AccountQueue(ctx, actor.AccountID, page)
	default:
		hs, err = s.queries.Queue(ctx, actor.AccountID, actor.TeamID, page)
	}
	if err != nil {
		return err
	}
	return s.writePage(c, at.query("/ai-sessions/queue"), kind, scope, limit, hs, projections.QueueCursor)
}

// history answers GET /ai-sessions/:session_id/handoffs: a page of the
// session's handoffs, newest first; [] for a session of another account or
// none at all. With as_of, the handoffs as they stood at that instant,
// folded from the session's events.
func (s *server) history(c echo.Context) error {
	limit, err := pageLimit(c)
	if err != nil {
		return err
	}
	at, err := asOf(c)
	if err != nil {
		return err
	}
	session, err := pathID(c, "session_id")
	if err != nil {
		return err
	}
	account := actorOf(c).AccountID
	scope := [2]uuid.UUID{account, session}
	after, err := s.pageCursor(c, historyList, scope)
	if err != nil {
		return err
	}
	page := projections.Page{Limit: limit + 1, After: after}
	var hs []domain.Handoff
	if at.past {
		hs, err = asof.History(c.Request().Context(), s.events, account, session, at.at, page)
	} else {
		hs, err = s.queries.History(c.Request().Context(), account, session, page)
	}
	if err != nil {
		return err
	}
	return s.writePage(c, at.query("/ai-sessions/"+session.String()+"/handoffs"), historyList, scope, limit, hs, projections.HistoryCursor)
}

// createHandoff answers POST /ai-sessions/:session_id/handoff: park or
// escalate.
func (s *server) createHandoff(c echo.Context) error {
	session, err := pathID(c, "session_id")
	if err != nil {
		return err
	}
	req, err := decodeCreate(c)
	if err != nil {
		return err
	}
	return s.execute(c, http.StatusCreated, session, domain.CreateHandoff{
		Actor:     actorOf(c),
		HandoffID: uuid.New(),
		Intent:    req.intent,
		Notes:     req.notes,
		Priority:  req.priority,
		At:        s.cmds.Now(),
	})
}

// claimHandoff answers POST .../handoffs/:handoff_id/claim ("Pick Up").
func (s *server) claimHandoff(c echo.Context) error {
	actor := actorOf(c)
	// The role comes first, before the ids, as in the endpoint the API
	// replaces: a viewer gets 403 even for ids that name nothing.
	if !actor.Role.CanClaim() {
		return domain.Errorf(domain.EFORBIDDEN, domain.MsgClaimRoleNeeded)
	}
	session, handoff, err := sessionAndHandoff(c)
	if err != nil {
		return err
	}
	return s.execute(c, http.StatusOK, session, domain.ClaimHandoff{Actor: actor, HandoffID: handoff, At: s.cmds.Now()})
}

// withdrawHandoff answers POST .../handoffs/:handoff_id/withdraw.
func (s *server) withdrawHandoff(c echo.Context) error {
	session, handoff, err := sessionAndHandoff(c)
	if err != nil {
		return err
	}
	return s.execute(c, http.StatusOK, session, domain.WithdrawHandoff{Actor: actorOf(c), HandoffID: handoff, At: s.cmds.Now()})
}

// eraseResponse answers an erasure.
type eraseResponse struct {
	SessionID   uuid.UUID `json:"session_id"`
	NotesErased bool      `json:"notes_erased"`
}

// eraseSession answers POST /ai-sessions/:session_id/erase: an owner or
// admin erases the session's personal data (commands.Handler.Erase), and
// the stored Idempotency-Key responses of the session with it. Erasing
// again is 200 too, and changes nothing.
func (s *server) eraseSession(c echo.Context) error {
	actor := actorOf(c)
	// The role first, as for a claim: others get 403 whatever the ids.
	if !actor.Role.CanErase() {
		return domain.Errorf(domain.EFORBIDDEN, domain.MsgEraseRoleNeeded)
	}
	session, err := pathID(c, "session_id")
	if err != nil {
		return err
	}
	body, err := readBody(c)
	if err != nil {
		return err
	}
	fields, err := decodeObject(body)
	if err != nil {
		return err
	}
	for _, name := range slices.Sorted(maps.Keys(fields)) {
		if name != "reason" {
			return domain.Errorf(domain.EINVALID, "unknown field %q", name)
		}
	}
	var reason string
	if err := stringField(fields, "reason", &reason); err != nil {
		return err
	}
	ctx := c.Request().Context()
	if _, err := s.cmds.Erase(ctx, actor, session, reason, traceOf(c)); err != nil {
		return err
	}
	// The erasure has happened: its copies go even if the client left.
	if _, err := s.idem.DeleteSession(context.WithoutCancel(ctx), actor.AccountID, session); err != nil {
		return fmt.Errorf("erase session %s: %w", session, err)
	}
	return c.JSON(http.StatusOK, eraseResponse{SessionID: session, NotesErased: true})
}

// sessionAndHandoff parses the ids of the handoff routes.
func sessionAndHandoff(c echo.Context) (uuid.UUID, uuid.UUID, error) {
	session, err := pathID(c, "session_id")
	if err != nil {
		return uuid.Nil, uuid.Nil, err
	}
	handoff, err := pathID(c, "handoff_id")
	if err != nil {
		return uuid.Nil, uuid.Nil, err
	}
	return session, handoff, nil
}

// execute runs a command and answers with the handoff it touched. A
// request with a new Idempotency-Key stores that answer in the same
// transaction as the command's events, and sends the very bytes it stored.
func (s *server) execute(c echo.Context, status int, session uuid.UUID, cmd domain.Command) error {
	k := keyedOf(c)
	if k == nil {
		res, err := s.cmds.Execute(c.Request().Context(), actorOf(c), session, cmd, traceOf(c))
		if err != nil {
			return err
		}
		return c.JSON(status, toJSON(res.Handoff))
	}
	var body []byte
	answer := func(res commands.Result) (eventstore.Answer, error) {
		b, err := json.Marshal(toJSON(res.Handoff))
		if err != nil {
			return eventstore.Answer{}, fmt.Errorf("encode answer: %w", err)
		}
		body = append(b, '\n')
		return idempotency.Answer(k.owner, k.key, k.hash, status, body), nil
	}
	if _, err := s.cmds.Execute(c.Request().Context(), actorOf(c), session, cmd, traceOf(c), commands.WithAnswer(answer)); err != nil {
		return err
	}
	k.stored = true
	return c.Blob(status, echo.MIMEApplicationJSON, body)
}

// createRequest is a checked create body.
type createRequest struct {
	intent   domain.Intent
	notes    string
	priority domain.Priority
}

// createFields are the fields a create body may have.
var createFields = []string{"intent", "engineer_notes", "priority"}

// decodeCreate reads a create body (see parseCreate).
func decodeCreate(c echo.Context) (createRequest, error) {
	body, err := readBody(c)
	if err != nil {
		return createRequest{}, err
	}
	return parseCreate(body)
}

// parseCreate parses a create body. A body that is not one JSON object is
// 400; an object with an unknown field, a field of the wrong type or a bad
// value is 422 with a detail naming the field. A null field counts as
// absent; priority defaults to normal.
func parseCreate(body []byte) (createRequest, error) {
	fields, err := decodeObject(body)
	if err != nil {
		return createRequest{}, err
	}
	for _, name := range slices.Sorted(maps.Keys(fields)) {
		if !slices.Contains(createFields, name) {
			return createRequest{}, domain.Errorf(domain.EINVALID, "unknown field %q", name)
		}
	}
	var intent, notes, priority string
	if err := stringField(fields, "intent", &intent); err != nil {
		return createRequest{}, err
	}
	if err := stringField(fields, "engineer_notes", &notes); err != nil {
		return createRequest{}, err
	}
	if err := stringField(fields, "priority", &priority); err != nil {
		return createRequest{}, err
	}
	req := createRequest{notes: notes}
	if req.intent, err = domain.ParseIntent(intent); err != nil {
		return createRequest{}, err
	}
	if req.priority, err = domain.ParsePriority(priority); err != nil {
		return createRequest{}, err
	}
	return req, nil
}

// decodeObject parses a body holding exactly one JSON object.
func decodeObject(body []byte) (map[string]json.RawMessage, error) {
	const notObject = "Request body must be a JSON object"
	dec := json.NewDecoder(bytes.NewReader(body))
	var fields map[string]json.RawMessage
	err := dec.Decode(&fields)
	var syntax *json.SyntaxError
	switch {
	case errors.As(err, &syntax):
		return nil, badRequest(notObject + ": malformed JSON at byte " + strconv.FormatInt(syntax.Offset, 10))
	case err != nil || fields == nil:
		return nil, badRequest(notObject)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, badRequest(notObject + ", with nothing after it")
	}
	return fields, nil
}

// stringField sets *dst to the named field when it is present and not
// null; any other JSON type is 422, and so is a string that is not valid
// UTF-8 text, which encoding/json would change without a word.
func stringField(fields map[string]json.RawMessage, name string, dst *string) error {
	raw, ok := fields[name]
	if !ok || string(raw) == "null" {
		return nil
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		return domain.Errorf(domain.EINVALID, "%s must be a string", name)
	}
	if !validText(raw) {
		return domain.Errorf(domain.EINVALID, "%s must be valid UTF-8 text", name)
	}
	return nil
}

// validText reports whether raw, a valid JSON string, holds valid UTF-8
// text: encoding/json replaces invalid bytes, and \u escapes of unpaired
// UTF-16 surrogates, with U+FFFD.
func validText(raw []byte) bool {
	if !utf8.Valid(raw) {
		return false
	}
	// In a valid JSON string, each backslash starts an escape, and \u is
	// followed by four hex digits.
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' {
			continue
		}
		i++
		if raw[i] != 'u' {
			continue
		}
		r := hexRune(raw[i+1 : i+5])
		i += 4
		if !utf16.IsSurrogate(r) {
			continue
		}
		// Only a pair of escaped surrogates makes a character.
		if i+6 >= len(raw) || raw[i+1] != '\\' || raw[i+2] != 'u' || utf16.DecodeRune(r, hexRune(raw[i+3:i+7])) == utf8.RuneError {
			return false
		}
		i += 6
	}
	return true
}

// hexRune is the rune of four hex digits.
func hexRune(digits []byte) rune {
	n, _ := strconv.ParseUint(string(digits), 16, 16) // valid JSON: four hex digits
	return rune(n)
}
