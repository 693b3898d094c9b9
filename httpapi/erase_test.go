package httpapi_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/idempotency"
)

func erasePath(session uuid.UUID) string { return "/ai-sessions/" + session.String() + "/erase" }

// rawHandoffs decodes a list of handoffs as JSON objects, to see null and
// absent fields as they are.
func rawHandoffs(tb testing.TB, res response) []map[string]any {
	tb.Helper()
	var out []map[string]any
	if err := json.Unmarshal(res.body, &out); err != nil {
		tb.Fatalf("decode %s: %v", res.body, err)
	}
	return out
}

// assertErased checks that every handoff of list shows its notes erased,
// and that none holds secret.
func assertErased(tb testing.TB, what string, list []map[string]any, secret string) {
	tb.Helper()
	if len(list) == 0 {
		tb.Fatalf("%s: no handoffs", what)
	}
	for _, h := range list {
		if notes, ok := h["engineer_notes"]; !ok || notes != nil || h["notes_erased"] != true {
			tb.Fatalf("%s: handoff %v, want engineer_notes null and notes_erased true", what, h)
		}
	}
	if b, _ := json.Marshal(list); strings.Contains(string(b), secret) {
		tb.Fatalf("%s shows the erased notes: %s", what, b)
	}
}

// testErase erases a session's personal data: only an owner or admin of
// its account may (others 403, another account 404); afterwards the REST
// lists, their as_of answers, the event routes and receipts' envelopes
// show the notes as erased and no client address, the stored
// Idempotency-Key responses of the session are gone, no table of the
// database holds the notes' text, the log's hash chain still checks, and
// another session keeps its notes. Erasing again changes nothing; the
// session's next handoff gets a new key and shows its notes.
func testErase(t *testing.T, nb NewBackend) {
	s := startServer(t, nb)
	tm, other := newTeam(), newTeam()
	engineer, owner, admin := tm.user(domain.RoleEngineer), tm.user(domain.RoleOwner), tm.user(domain.RoleAdmin)
	session, kept := uuid.New(), uuid.New()
	const secret = "Jane Roe, jane.roe@example.com, host vpn-7.example.net"
	create := as(t, engineer, http.MethodPost, createPath(session), `{"intent": "escalate", "engineer_notes": "`+secret+`"}`).with("Idempotency-Key", "erase-me")
	first := decode[handoff](t, s.do(t, create, http.StatusCreated))
	if first.EngineerNotes != secret {
		t.Fatalf("created %+v, want the notes in plaintext", first)
	}
	s.do(t, as(t, admin, http.MethodPost, actionPath(session, first.ID, "claim"), "").with("Idempotency-Key", "claim-it"), http.StatusOK)
	// Another session, its notes kept: sent with an Idempotency-Key, so
	// that a stored answer holds them too.
	const keptNotes = "keep these notes"
	keptCreate := as(t, engineer, http.MethodPost, createPath(kept), `{"intent": "park", "engineer_notes": "`+keptNotes+`"}`).with("Idempotency-Key", "keep-me")
	keptFirst := s.do(t, keptCreate, http.StatusCreated)
	beforeErase := time.Now()
	stored, err := s.Backend.Stored.ReadStream(t.Context(), eventcodec.StreamName(tm.account, session))
	if err != nil || len(stored) != 2 || stored[0].DataKey == nil {
		t.Fatalf("stored stream = %+v, %v; want 2 events with a data key", stored, err)
	}
	if raw := string(stored[0].Data) + string(stored[0].RawMetadata) + string(stored[1].RawMetadata); strings.Contains(raw, secret) || strings.Contains(raw, "127.0.0.1") {
		t.Fatalf("the stored events hold personal data in plaintext: %s", raw)
	}
	firstKey := stored[0].DataKey.ID

	reason := `{"reason": "GDPR art. 17 request #42"}`
	for _, role := range []domain.Role{domain.RoleViewer, domain.RoleEngineer} {
		s.expectError(t, as(t, tm.user(role), http.MethodPost, erasePath(session), reason), http.StatusForbidden, domain.MsgEraseRoleNeeded)
	}
	s.expectError(t, as(t, tm.user(domain.RoleAuditor), http.MethodPost, erasePath(session), reason), http.StatusForbidden, domain.MsgReadOnlyRole)
	for _, role := range []domain.Role{domain.RoleOwner, domain.RoleAdmin} {
		s.expectError(t, as(t, other.user(role), http.MethodPost, erasePath(session), reason), http.StatusNotFound, domain.MsgSessionNotFound)
	}
	s.expectError(t, as(t, owner, http.MethodPost, erasePath(uuid.New()), reason), http.StatusNotFound, domain.MsgSessionNotFound)
	s.expectError(t, as(t, owner, http.MethodPost, erasePath(session), `{}`), http.StatusUnprocessableEntity, "reason must be non-empty text of at most 1000 bytes, without NUL characters")
	s.expectError(t, as(t, owner, http.MethodPost, erasePath(session), `{"reason": "x", "notes": 1}`), http.StatusUnprocessableEntity, `unknown field "notes"`)
	if got := len(s.stream(t, tm.account, session)); got != 2 {
		t.Fatalf("refused erasures appended: %d events, want 2", got)
	}

	erased := decode[map[string]any](t, s.do(t, as(t, owner, http.MethodPost, erasePath(session), reason), http.StatusOK))
	if erased["session_id"] != session.String() || erased["notes_erased"] != true {
		t.Fatalf("erase answered %v", erased)
	}

	assertErased(t, "the history", rawHandoffs(t, s.do(t, as(t, engineer, http.MethodGet, historyPath(session), ""), http.StatusOK)), secret)
	assertErased(t, "the history as of before the erasure",
		rawHandoffs(t, s.do(t, as(t, engineer, http.MethodGet, asOfPath(historyPath(session), beforeErase), ""), http.StatusOK)), secret)
	events := s.do(t, as(t, tm.user(domain.RoleAuditor), http.MethodGet, eventsPath(session), ""), http.StatusOK)
	if strings.Contains(string(events.body), secret) || strings.Contains(string(events.body), "client_ip") {
		t.Fatalf("the session's events still show personal data: %s", events.body)
	}
	envelopes := decode[[]eventstore.Event](t, events)
	if got := types(envelopes); strings.Join(got, ",") != "HandoffEscalated,HandoffClaimed,SessionDataErased" {
		t.Fatalf("the session's events are %v", got)
	}
	var data map[string]any
	if err := json.Unmarshal(envelopes[0].Data, &data); err != nil || data["engineer_notes"] != nil || data["notes_erased"] != true {
		t.Fatalf("the erased handoff's event data = %s, want engineer_notes null and notes_erased true", envelopes[0].Data)
	}
	var erasure map[string]any
	if err := json.Unmarshal(envelopes[2].Data, &erasure); err != nil || erasure["reason"] != "GDPR art. 17 request #42" ||
		erasure["erased_by"] != owner.UserID.String() || erasure["role"] != "owner" {
		t.Fatalf("SessionDataErased data = %s", envelopes[2].Data)
	}
	for _, key := range []string{"erase-me", "claim-it"} {
		user := engineer
		if key == "claim-it" {
			user = admin
		}
		owner := idempotency.Owner{Account: tm.account, User: user.UserID}
		if rec, found, err := s.Backend.Idempotency.Lookup(t.Context(), owner, key); err != nil || found {
			t.Fatalf("the stored response of Idempotency-Key %q is still there: %+v, %v", key, rec, err)
		}
	}
	// The scan finds what is there in plaintext: the erasure's reason, in
	// the log.
	if where := s.Backend.FindText(t, "GDPR art. 17 request #42"); len(where) == 0 {
		t.Fatal("the scan of the database does not find the erasure's reason in the log")
	}
	if where := s.Backend.FindText(t, secret); len(where) > 0 {
		t.Fatalf("the database still holds the erased notes, in %v", where)
	}
	// Another session's notes are in no table in plaintext either (the
	// events, the read model and the stored answer hold them sealed), and
	// every view shows them as before.
	if where := s.Backend.FindText(t, keptNotes); len(where) > 0 {
		t.Fatalf("the database holds a session's notes in plaintext, in %v", where)
	}
	if h := s.history(t, engineer, kept); len(h) != 1 || h[0].EngineerNotes != keptNotes || h[0].NotesErased {
		t.Fatalf("another session's history = %+v, want its notes", h)
	}
	if q := s.queue(t, engineer); !slices.ContainsFunc(q, func(h handoff) bool { return h.SessionID == kept && h.EngineerNotes == keptNotes }) {
		t.Fatalf("the queue = %+v, want another session's handoff with its notes", q)
	}
	replayed := s.do(t, keptCreate, http.StatusCreated)
	if replayed.header.Get("Idempotent-Replayed") != "true" || !bytes.Equal(replayed.body, keptFirst.body) {
		t.Fatalf("the replay of another session's create answered %s (%v), want the first answer %s", replayed.body, replayed.header, keptFirst.body)
	}
	checkChain(t, s.Backend.Stored, tm.account, session)

	// Again: nothing more is appended.
	s.do(t, as(t, admin, http.MethodPost, erasePath(session), reason), http.StatusOK)
	if got := len(s.stream(t, tm.account, session)); got != 3 {
		t.Fatalf("erasing again appended: %d events, want 3", got)
	}

	// The session goes on, under a new key.
	next := s.create(t, admin, session, `{"intent": "park", "engineer_notes": "new notes"}`)
	if next.EngineerNotes != "new notes" {
		t.Fatalf("a handoff after the erasure = %+v, want its notes", next)
	}
	list := rawHandoffs(t, s.do(t, as(t, engineer, http.MethodGet, historyPath(session), ""), http.StatusOK))
	if len(list) != 2 || list[0]["engineer_notes"] != "new notes" || list[0]["notes_erased"] != nil {
		t.Fatalf("history after a new handoff = %v", list)
	}
	assertErased(t, "the erased handoff", list[1:], secret)
	stored, err = s.Backend.Stored.ReadStream(t.Context(), eventcodec.StreamName(tm.account, session))
	if err != nil || len(stored) != 4 || stored[3].DataKey == nil || stored[3].DataKey.ID == firstKey {
		t.Fatalf("after a new handoff the session's key is %+v (the erased one was %s), %v", stored[len(stored)-1].DataKey, firstKey, err)
	}
	checkChain(t, s.Backend.Stored, tm.account, session)
	// Erasing now destroys the new key, and erases the new notes.
	s.do(t, as(t, owner, http.MethodPost, erasePath(session), reason), http.StatusOK)
	assertErased(t, "the history after a second erasure", rawHandoffs(t, s.do(t, as(t, engineer, http.MethodGet, historyPath(session), ""), http.StatusOK)), "new notes")
}

// checkChain checks the hash chain of a session's stored events.
func checkChain(tb testing.TB, log eventstore.Store, account, session uuid.UUID) {
	tb.Helper()
	events, err := log.ReadStream(context.Background(), eventcodec.StreamName(account, session))
	if err != nil {
		tb.Fatal(err)
	}
	var prev eventstore.Hash
	for _, e := range events {
		if e.PrevHash != prev || eventstore.HashEvent(prev, e) != e.Hash {
			tb.Fatalf("event %d of the session does not chain: its hash does not cover its stored bytes", e.Version)
		}
		prev = e.Hash
	}
}

// findTextPostgres returns the tables of pool's database that hold text
// in any column, as text or as bytes.
func findTextPostgres(tb testing.TB, pool *pgxpool.Pool, text string) []string {
	tb.Helper()
	ctx := context.Background()
	rows, err := pool.Query(ctx, `SELECT quote_ident(table_name) FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'`)
	if err != nil {
		tb.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			tb.Fatal(err)
		}
		tables = append(tables, name)
	}
	if rows.Err() != nil || len(tables) < 5 {
		tb.Fatalf("list tables: %v %v", tables, rows.Err())
	}
	var found []string
	for _, table := range tables {
		var n int
		// A row as text shows bytea as hex.
		err := pool.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM %s AS t WHERE t::text LIKE '%%' || $1 || '%%' OR t::text LIKE '%%' || encode(convert_to($1, 'UTF8'), 'hex') || '%%'`, table), text).Scan(&n)
		if err != nil {
			tb.Fatalf("scan table %s: %v", table, err)
		}
		if n > 0 {
			found = append(found, table)
		}
	}
	return found
}

// findTextSQLite returns the tables of db that hold text in any column.
func findTextSQLite(tb testing.TB, db *sql.DB, text string) []string {
	tb.Helper()
	ctx := context.Background()
	rows, err := db.QueryContext(ctx, `SELECT name FROM sqlite_master WHERE type = 'table'`)
	if err != nil {
		tb.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			tb.Fatal(err)
		}
		tables = append(tables, name)
	}
	rows.Close()
	if len(tables) < 5 {
		tb.Fatalf("list tables: %v", tables)
	}
	var found []string
	for _, table := range tables {
		rows, err := db.QueryContext(ctx, `SELECT * FROM "`+table+`"`)
		if err != nil {
			tb.Fatalf("scan table %s: %v", table, err)
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			values := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range values {
				ptrs[i] = &values[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				tb.Fatal(err)
			}
			if strings.Contains(fmt.Sprintf("%s", values), text) {
				found = append(found, table)
				break
			}
		}
		rows.Close()
	}
	return found
}

// testEraseDuringBusyRun erases a session while other sessions take
// handoffs and the erased session's holder keeps parking and withdrawing
// in it: every other session's commands succeed and keep their notes; in
// the erased session, every handoff created before the erasure shows its
// notes erased, and no table of the database holds their text, while the
// handoffs created after it (under a new key) show theirs.
func testEraseDuringBusyRun(t *testing.T, nb NewBackend) {
	s := startServer(t, nb)
	tm := newTeam()
	holder, owner := tm.user(domain.RoleEngineer), tm.user(domain.RoleOwner)
	target := uuid.New()
	s.create(t, holder, target, `{"intent": "park", "engineer_notes": "secret-first"}`)

	const workers, rounds = 4, 6
	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	errs := make(chan error, workers+1)
	for w := range workers {
		go func() {
			user := tm.user(domain.RoleEngineer)
			for i := range rounds {
				session := uuid.New()
				notes := fmt.Sprintf("busy %d-%d", w, i)
				res, err := s.send(ctx, as(t, user, http.MethodPost, createPath(session), `{"intent": "escalate", "engineer_notes": "`+notes+`"}`))
				if err == nil && (res.status != http.StatusCreated || !strings.Contains(string(res.body), notes)) {
					err = fmt.Errorf("create in a busy session: %d %s", res.status, res.body)
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	// The erased session's holder parks and withdraws over and over.
	go func() {
		for i := 0; ctx.Err() == nil; i++ {
			res, err := s.send(ctx, as(t, holder, http.MethodGet, historyPath(target), ""))
			if err != nil {
				break
			}
			var list []handoff
			if json.Unmarshal(res.body, &list) != nil || len(list) == 0 {
				continue
			}
			if list[0].Status == "open" {
				s.send(ctx, as(t, holder, http.MethodPost, actionPath(target, list[0].ID, "withdraw"), ""))
				continue
			}
			s.send(ctx, as(t, holder, http.MethodPost, createPath(target), fmt.Sprintf(`{"intent": "park", "engineer_notes": "secret-%d"}`, i)))
		}
		errs <- nil
	}()
	time.Sleep(50 * time.Millisecond)
	s.do(t, as(t, owner, http.MethodPost, erasePath(target), `{"reason": "request during a busy run"}`), http.StatusOK)
	for range workers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	stop()
	<-errs

	// The history first: every handoff it shows is then in the stream
	// read after it (a request cancelled by stop may still commit).
	history := rawHandoffs(t, s.do(t, as(t, holder, http.MethodGet, historyPath(target), ""), http.StatusOK))
	events := s.stream(t, tm.account, target)
	var erasedAt time.Time
	// Whether each handoff was created before the erasure, by the order
	// of the log: a handoff's created_at is its request's time, which
	// may precede an erasure that its append waited behind.
	createdBefore := map[string]bool{}
	for _, e := range events {
		switch e.Type {
		case domain.TypeSessionDataErased:
			erasedAt = e.RecordedAt
		case domain.TypeHandoffParked, domain.TypeHandoffEscalated:
			var created struct {
				HandoffID string `json:"handoff_id"`
			}
			if err := json.Unmarshal(e.Data, &created); err != nil {
				t.Fatalf("decode event %s: %v", e.ID, err)
			}
			createdBefore[created.HandoffID] = erasedAt.IsZero()
		}
	}
	if erasedAt.IsZero() {
		t.Fatal("no SessionDataErased in the session")
	}
	var before []string
	for _, h := range history {
		wasBefore, known := createdBefore[h["id"].(string)]
		switch {
		case !known:
			t.Fatalf("handoff %v is not in the session's log", h)
		case wasBefore && (h["engineer_notes"] != nil || h["notes_erased"] != true):
			t.Fatalf("a handoff created before the erasure shows %v", h)
		case !wasBefore && (h["engineer_notes"] == nil || h["notes_erased"] != nil):
			t.Fatalf("a handoff created after the erasure shows %v", h)
		case wasBefore:
			before = append(before, h["id"].(string))
		}
	}
	if len(before) == 0 {
		t.Fatal("no handoff before the erasure")
	}
	// The notes of the handoffs before the erasure, as the stored events
	// name them: none is in the database any more.
	if where := s.Backend.FindText(t, "secret-first"); len(where) > 0 {
		t.Fatalf("the database holds the erased session's first notes, in %v", where)
	}
	for _, e := range events {
		if e.RecordedAt.Before(erasedAt) && strings.Contains(string(e.Data), "secret-") {
			t.Fatalf("an event before the erasure shows its notes: %s", e.Data)
		}
	}
}
