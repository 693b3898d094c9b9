package main

import (
	"bytes"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/resolutionflow/ledgerd/audit"
	"github.com/resolutionflow/ledgerd/audit/audittest"
	"github.com/resolutionflow/ledgerd/audit/pgaudit"
	"github.com/resolutionflow/ledgerd/audit/sqliteaudit"
	"github.com/resolutionflow/ledgerd/audit/verify"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/eventstore/pgstore"
	"github.com/resolutionflow/ledgerd/internal/pgtest"
	"github.com/resolutionflow/ledgerd/internal/sqlitetest"
)

// tamperable is a ledger a test can alter as a database superuser would,
// with the immutability triggers out of the way.
type tamperable struct {
	log  eventstore.Store
	tree audit.Store
	key  *audit.Key
	// storage are the flags that point `ledgerd verify` at it and give
	// the key.
	storage []string
	// tamper runs statements, with ? placeholders, past the triggers.
	tamper func(t *testing.T, stmts ...statement)
}

// statement is one SQL statement with its arguments.
type statement struct {
	sql  string
	args []any
}

func stmt(sql string, args ...any) statement { return statement{sql: sql, args: args} }

// postgresLedger is a ledger in a PostgreSQL database of its own; its
// tamper connects as the superuser pgtest gives and turns the triggers
// off for its session (session_replication_role = replica).
func postgresLedger(t *testing.T) tamperable {
	url := pgtest.NewDatabase(t)
	pool := pgtest.Pool(t, url, 2)
	key := audittest.Key(t)
	return tamperable{
		log:     pgstore.New(pool),
		tree:    pgaudit.New(pool),
		key:     key,
		storage: []string{"--database-url", url, "--key", key.Verifier()},
		tamper: func(t *testing.T, stmts ...statement) {
			t.Helper()
			ctx := t.Context()
			conn, err := pgx.Connect(ctx, url)
			if err != nil {
				t.Fatalf("connect as the superuser: %v", err)
			}
			defer conn.Close(ctx)
			if _, err := conn.Exec(ctx, `SET session_replication_role = replica`); err != nil {
				t.Fatalf("turn the triggers off: %v", err)
			}
			for _, s := range stmts {
				if _, err := conn.Exec(ctx, dollarPlaceholders(s.sql), s.args...); err != nil {
					t.Fatalf("tamper: %s: %v", s.sql, err)
				}
			}
		},
	}
}

// dollarPlaceholders numbers the ? placeholders of query as PostgreSQL's
// $1, $2, ...
func dollarPlaceholders(query string) string {
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// sqliteLedger is an embedded ledger in a data directory of its own; its
// tamper opens the file on a raw connection, drops every trigger, runs the
// statements and makes the triggers again, in one transaction.
func sqliteLedger(t *testing.T) tamperable {
	dir := t.TempDir()
	path := filepath.Join(dir, sqliteFile)
	store := sqlitetest.OpenAt(t, path)
	// The embedded key, which verify uses when not given --key.
	key, err := loadOrCreateAuditKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	return tamperable{
		log:     store,
		tree:    sqliteaudit.New(store.DB(), store.ReadDB()),
		key:     key,
		storage: []string{"--data-dir", dir},
		tamper: func(t *testing.T, stmts ...statement) {
			t.Helper()
			ctx := t.Context()
			name := url.URL{Scheme: "file", Path: path, RawQuery: "_pragma=busy_timeout(10000)&_txlock=immediate"}
			db, err := sql.Open("sqlite", name.String())
			if err != nil {
				t.Fatalf("open %s: %v", path, err)
			}
			defer db.Close()
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				t.Fatalf("begin: %v", err)
			}
			defer tx.Rollback() //nolint:errcheck // committed below
			rows, err := tx.QueryContext(ctx, `SELECT name, sql FROM sqlite_master WHERE type = 'trigger'`)
			if err != nil {
				t.Fatalf("read the triggers: %v", err)
			}
			triggers := map[string]string{}
			for rows.Next() {
				var name, def string
				if err := rows.Scan(&name, &def); err != nil {
					t.Fatalf("read the triggers: %v", err)
				}
				triggers[name] = def
			}
			if err := rows.Err(); err != nil {
				t.Fatalf("read the triggers: %v", err)
			}
			exec := func(query string, args ...any) {
				t.Helper()
				if _, err := tx.ExecContext(ctx, query, args...); err != nil {
					t.Fatalf("tamper: %s: %v", query, err)
				}
			}
			for name := range triggers {
				exec(`DROP TRIGGER "` + name + `"`)
			}
			for _, s := range stmts {
				exec(s.sql, s.args...)
			}
			for _, def := range triggers {
				exec(def)
			}
			if err := tx.Commit(); err != nil {
				t.Fatalf("commit: %v", err)
			}
		},
	}
}

// seal runs a sealer over the log until its tree holds size events.
func (l tamperable) seal(t *testing.T, size uint64) {
	t.Helper()
	audittest.SealUntil(t, audit.EventLeaves{Log: l.log}, size, l.tree, l.key)
}

// latest returns the newest stored checkpoint.
func (l tamperable) latest(t *testing.T) audit.Checkpoint {
	t.Helper()
	c, ok, err := l.tree.Latest(t.Context())
	if err != nil || !ok {
		t.Fatalf("latest checkpoint: %v, %v", ok, err)
	}
	return c
}

// sampleSize is the count of events of sampleLog.
const sampleSize = 8

// sampleLog appends three streams whose events interleave in the log,
// seals them all (in checkpoints of 7 and 8 leaves) and returns them by
// stream, in version order.
func sampleLog(t *testing.T, l tamperable) map[string][]eventstore.Event {
	t.Helper()
	streams := map[string][]eventstore.Event{}
	for i, stream := range []string{"a", "b", "a", "c", "b", "a", "c", "b"} {
		name := "session:" + stream
		recorded, err := l.log.Append(t.Context(), name, eventstore.Any, []eventstore.NewEvent{{
			Type: "Noted",
			Data: json.RawMessage(fmt.Sprintf(`{"n": %d,  "stream": %q}`, i, stream)),
		}})
		if err != nil {
			t.Fatalf("append to %s: %v", name, err)
		}
		streams[name] = append(streams[name], recorded[0])
	}
	l.seal(t, sampleSize)
	return streams
}

// rehash returns the statements that give the events of a stream, from
// the first one in events on, the hashes they would have had if appended
// with their (altered) data: what someone who rewrites an event and its
// stream's chain after it does.
func rehash(events []eventstore.Event) []statement {
	var stmts []statement
	for i := range events {
		if i > 0 {
			events[i].PrevHash = events[i-1].Hash
		}
		events[i].Hash = eventstore.HashEvent(events[i].PrevHash, events[i])
		stmts = append(stmts, stmt(`UPDATE events SET data = ?, prev_hash = ?, hash = ? WHERE position = ?`,
			string(events[i].Data), events[i].PrevHash[:], events[i].Hash[:], events[i].Position))
	}
	return stmts
}

// dropTree is what someone who rebuilds the Merkle tree over a rewritten
// log deletes first.
var dropTree = []statement{stmt(`DELETE FROM merkle_checkpoints`), stmt(`DELETE FROM merkle_nodes`), stmt(`DELETE FROM merkle_leaves`)}

// runVerify runs `ledgerd verify` with args and returns its error and
// what it printed on stdout.
func runVerify(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), append([]string{"verify"}, args...), &stdout, &stderr)
	return stdout.String(), err
}

// wantFailure checks that err is verify's report of an alteration at
// position in stream, which exits with status 1.
func wantFailure(t *testing.T, err error, position int64, stream string) {
	t.Helper()
	var failure *verify.Failure
	switch {
	case !errors.As(err, &failure):
		t.Fatalf("verify: %v, want an alteration found at position %d", err, position)
	case failure.Position != position || failure.Stream != stream:
		t.Fatalf("verify: %v\nwant the alteration at position %d, stream %q", err, position, stream)
	case exitCode(err) != 1:
		t.Fatalf("exit status %d, want 1", exitCode(err))
	}
	t.Logf("verify: %v", err)
}

func TestVerify_Postgres(t *testing.T) {
	t.Parallel()
	testVerify(t, postgresLedger)
}

func TestVerify_SQLite(t *testing.T) {
	t.Parallel()
	// A data directory without a ledger is refused, not made.
	if _, err := runVerify(t, "--data-dir", filepath.Join(t.TempDir(), "none")); exitCode(err) != 2 {
		t.Errorf("verify a data directory without a ledger: %v, exit %d; want 2", err, exitCode(err))
	}
	testVerify(t, sqliteLedger)
}

// testVerify alters a sample log in each way a database superuser could
// and checks that `ledgerd verify` finds each, at the first altered
// position, and passes the untouched log.
func testVerify(t *testing.T, open func(*testing.T) tamperable) {
	t.Run("Intact", func(t *testing.T) {
		t.Parallel()
		l := open(t)
		sampleLog(t, l)
		head := l.latest(t)
		// An event appended since the checkpoints, not sealed yet.
		if _, err := l.log.Append(t.Context(), "session:d", eventstore.NoStream, []eventstore.NewEvent{{Type: "Noted", Data: json.RawMessage(`{}`)}}); err != nil {
			t.Fatal(err)
		}
		out, err := runVerify(t, l.storage...)
		if want := "intact: 9 events in 4 streams, 8 sealed in the Merkle tree, 2 checkpoints verified\n"; err != nil || out != want {
			t.Fatalf("verify an untouched log: %q, %v; want %q", out, err, want)
		}
		for _, outside := range [][]string{
			{"--head", hex.EncodeToString(head.Root)},
			{"--checkpoint", writeFile(t, head.Note)},
			{"--checkpoint", writeFile(t, fmt.Sprintf(`{"size": 8, "checkpoint": %q}`, head.Note))},
		} {
			out, err := runVerify(t, append(outside, l.storage...)...)
			if want := "consistent with the tree of size 8 kept outside"; err != nil || !strings.Contains(out, want) {
				t.Errorf("verify %s: %q, %v; want %q", outside[0], out, err, want)
			}
		}
	})

	t.Run("UsageErrors", func(t *testing.T) {
		t.Parallel()
		l := open(t)
		for _, args := range [][]string{
			{"--head", "abc"},
			{"--head", strings.Repeat("00", 32), "--checkpoint", "file"},
			{"--checkpoint", filepath.Join(t.TempDir(), "none")},
			{"--receipt", "file"},
		} {
			if _, err := runVerify(t, append(l.storage, args...)...); exitCode(err) != 2 {
				t.Errorf("verify %q: %v, exit %d; want 2", args, err, exitCode(err))
			}
		}
	})

	// Each case alters the sealed sample log and names where verify must
	// find it: the first event altered or removed, and its stream (none
	// for an event deleted, whose row is gone).
	type where struct {
		position int64
		stream   string
	}
	cases := []struct {
		name   string
		tamper func(t *testing.T, l tamperable, s map[string][]eventstore.Event) where
	}{
		{"EditData", func(t *testing.T, l tamperable, s map[string][]eventstore.Event) where {
			e := s["session:a"][1]
			l.tamper(t, stmt(`UPDATE events SET data = '{"n": 99}' WHERE position = ?`, e.Position))
			return where{e.Position, e.Stream}
		}},
		{"EditMetadata", func(t *testing.T, l tamperable, s map[string][]eventstore.Event) where {
			e := s["session:c"][0]
			l.tamper(t, stmt(`UPDATE events SET metadata = '{"actor_id":"mallory"}' WHERE position = ?`, e.Position))
			return where{e.Position, e.Stream}
		}},
		{"SwapPayloads", func(t *testing.T, l tamperable, s map[string][]eventstore.Event) where {
			a, b := s["session:a"][1], s["session:b"][1]
			l.tamper(t, stmt(`UPDATE events SET data = CASE position WHEN ? THEN (SELECT data FROM events WHERE position = ?) ELSE (SELECT data FROM events WHERE position = ?) END WHERE position IN (?, ?)`,
				a.Position, b.Position, a.Position, a.Position, b.Position))
			return where{a.Position, a.Stream}
		}},
		{"DeleteMiddleEvent", func(t *testing.T, l tamperable, s map[string][]eventstore.Event) where {
			l.tamper(t, stmt(`DELETE FROM events WHERE position = ?`, s["session:a"][1].Position))
			return where{s["session:a"][1].Position, ""}
		}},
		{"DeleteFirstEvent", func(t *testing.T, l tamperable, s map[string][]eventstore.Event) where {
			l.tamper(t, stmt(`DELETE FROM events WHERE position = ?`, s["session:b"][0].Position))
			return where{s["session:b"][0].Position, ""}
		}},
		{"RewriteStreamChain", func(t *testing.T, l tamperable, s map[string][]eventstore.Event) where {
			// The chain recomputed after the edit: only the tree sees it.
			events := s["session:a"][1:]
			events[0].Data = json.RawMessage(`{"n": 99}`)
			l.tamper(t, rehash(events)...)
			return where{events[0].Position, "session:a"}
		}},
		{"DeleteStream", func(t *testing.T, l tamperable, s map[string][]eventstore.Event) where {
			l.tamper(t, stmt(`DELETE FROM events WHERE stream = 'session:c'`))
			return where{s["session:c"][0].Position, ""}
		}},
		{"DeleteNewestEventAndItsLeaf", func(t *testing.T, l tamperable, s map[string][]eventstore.Event) where {
			newest := s["session:b"][2]
			l.tamper(t, stmt(`DELETE FROM events WHERE position = ?`, newest.Position),
				stmt(`DELETE FROM merkle_leaves WHERE position = ?`, newest.Position))
			return where{newest.Position, ""}
		}},
		{"InsertForgedEvent", func(t *testing.T, l tamperable, s map[string][]eventstore.Event) where {
			// A stream of its own, hashed right, before every other event
			// (positions start at 1).
			forged := eventstore.Event{ID: "01JDJ00000000000000000000F", Stream: "session:forged", Version: 1, Type: "Noted",
				Data: json.RawMessage(`{"forged": true}`), RawMetadata: json.RawMessage(`{}`), RecordedAt: s["session:a"][0].RecordedAt}
			forged.Hash = eventstore.HashEvent(forged.PrevHash, forged)
			l.tamper(t, stmt(`INSERT INTO events (position, id, stream, version, type, data, metadata, recorded_at, prev_hash, hash) VALUES (-1, ?, ?, 1, ?, ?, ?, ?, ?, ?)`,
				forged.ID, forged.Stream, forged.Type, string(forged.Data), string(forged.RawMetadata), forged.RecordedAt.Format(eventstore.TimeLayout), forged.PrevHash[:], forged.Hash[:]))
			return where{-1, "session:forged"}
		}},
		{"ForgeCheckpoint", func(t *testing.T, l tamperable, s map[string][]eventstore.Event) where {
			// The whole log rewritten and its tree rebuilt, signed with
			// another key.
			events := s["session:a"][1:]
			events[0].Data = json.RawMessage(`{"n": 99}`)
			l.tamper(t, append(rehash(events), dropTree...)...)
			audittest.SealUntil(t, audit.EventLeaves{Log: l.log}, sampleSize, l.tree, audittest.Key(t))
			// The first checkpoint, of 7 leaves, ends at the 7th event.
			return where{s["session:c"][1].Position, ""}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			l := open(t)
			at := c.tamper(t, l, sampleLog(t, l))
			_, err := runVerify(t, l.storage...)
			wantFailure(t, err, at.position, at.stream)
		})
	}

	// Cutting the log's tail with its leaves and checkpoints leaves a
	// consistent database: a head kept outside shows it.
	t.Run("CutTheTail", func(t *testing.T) {
		t.Parallel()
		l := open(t)
		s := sampleLog(t, l)
		head := l.latest(t)
		newest := s["session:b"][2]
		l.tamper(t, stmt(`DELETE FROM events WHERE position = ?`, newest.Position),
			stmt(`DELETE FROM merkle_leaves WHERE position = ?`, newest.Position),
			stmt(`DELETE FROM merkle_checkpoints WHERE size = ?`, sampleSize),
			stmt(`DELETE FROM merkle_nodes WHERE ((idx + 1) << level) > ?`, sampleSize-1))
		if _, err := runVerify(t, l.storage...); err != nil {
			t.Fatalf("verify without a head kept outside: %v, want it to pass (it cannot see a cut tail)", err)
		}
		_, err := runVerify(t, append(l.storage, "--head", hex.EncodeToString(head.Root))...)
		wantFailure(t, err, 0, "")
	})

	// Rewriting the log and its whole tree with the ledger's own signing
	// key leaves a consistent database: a checkpoint kept outside shows
	// it.
	t.Run("RewriteWithTheKey", func(t *testing.T) {
		t.Parallel()
		l := open(t)
		s := sampleLog(t, l)
		saved := writeFile(t, l.latest(t).Note)
		events := s["session:a"][1:]
		events[0].Data = json.RawMessage(`{"n": 99}`)
		l.tamper(t, append(rehash(events), dropTree...)...)
		l.seal(t, sampleSize)
		if _, err := runVerify(t, l.storage...); err != nil {
			t.Fatalf("verify without a checkpoint kept outside: %v, want it to pass (it cannot see a rewrite signed with the key)", err)
		}
		_, err := runVerify(t, append(l.storage, "--checkpoint", saved)...)
		wantFailure(t, err, 0, "")
	})
}

// TestVerify_Receipt serves a ledger, saves a receipt from GET
// /audit/proof, and checks it offline with `ledgerd verify --receipt`: it
// passes as served, and fails when any part of it is changed; the
// ledger's own log verifies while it serves.
func TestVerify_Receipt(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	base, _ := startServe(t, "--data-dir", dir, "--jwt-secret", testSecret)
	account, team := uuid.NewString(), uuid.NewString()
	engineer := mintToken(t, testSecret, "--account", account, "--team", team)
	auditor := mintToken(t, testSecret, "--account", account, "--team", team, "--role", "auditor")
	head, key := parkAndSeal(t, base, engineer, auditor, "first", "second")
	var receipt map[string]any
	if status := getJSON(t, fmt.Sprintf("%s/audit/proof?position=%d&size=2", base, head.Position-1), auditor, &receipt); status != http.StatusOK {
		t.Fatalf("receipt = %d, want 200", status)
	}

	out, err := runVerify(t, "--receipt", writeFile(t, mustString(t, receipt)), "--key", key)
	if err != nil || !strings.HasPrefix(out, "valid: ") {
		t.Fatalf("verify the receipt as served: %q, %v", out, err)
	}
	if out, err := runVerify(t, "--data-dir", dir); err != nil || !strings.HasPrefix(out, "intact: 2 events in 2 streams, 2 sealed") {
		t.Fatalf("verify the served ledger: %q, %v", out, err)
	}

	other := audittest.Key(t).Verifier()
	for name, change := range map[string]func(r map[string]any) string{
		"StoredData": func(r map[string]any) string {
			r["stored_data"] = base64.StdEncoding.EncodeToString([]byte(`{"engineer_notes":"forged"}`))
			return key
		},
		"EnvelopeData": func(r map[string]any) string {
			r["event"].(map[string]any)["data"] = map[string]any{"engineer_notes": "forged"}
			return key
		},
		"Metadata": func(r map[string]any) string {
			r["event"].(map[string]any)["metadata"] = map[string]any{"actor_id": "mallory"}
			return key
		},
		"LeafIndex": func(r map[string]any) string { r["leaf_index"] = 1; return key },
		"Proof":     func(r map[string]any) string { r["proof"] = []string{strings.Repeat("00", 32)}; return key },
		"OtherKey":  func(r map[string]any) string { return other },
	} {
		changed := map[string]any{}
		if err := json.Unmarshal([]byte(mustString(t, receipt)), &changed); err != nil {
			t.Fatal(err)
		}
		vkey := change(changed)
		_, err := runVerify(t, "--receipt", writeFile(t, mustString(t, changed)), "--key", vkey)
		if err == nil || exitCode(err) != 1 {
			t.Errorf("%s: verify a changed receipt: %v, want exit 1", name, err)
		}
		t.Logf("%s: %v", name, err)
	}
}

// mustString returns v in JSON.
func mustString(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
