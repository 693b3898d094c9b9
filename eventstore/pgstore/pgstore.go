// Package pgstore is the PostgreSQL event store.
//
// An append is one INSERT statement: the stream's current version, the
// expected-version check and the rows are one round trip, and a lost race
// surfaces as the unique violation on (stream, version), which Append turns
// into *eventstore.ConflictError. Global positions come from a sequence, so
// appends to different streams never wait on each other.
//
// Reading the whole log, or an account's part of it, is gap-safe without
// any lock on the write path: see ReadAll, ReadAccount and openAppends.
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/internal/pgerr"
)

// Store is an eventstore.Store on a PostgreSQL pool.
type Store struct {
	pool     *pgxpool.Pool
	appended eventstore.Signal
}

var _ eventstore.Store = (*Store)(nil)

// New returns a store on a migrated database.
func New(pool *pgxpool.Pool) *Store {
	return &Store{pool: pool}
}

// Appended returns a channel closed at the next append made through this
// Store; appends by other processes are not signalled.
func (s *Store) Appended() <-chan struct{} { return s.appended.Wait() }

// The statements of an append, each run as it is by AppendQuick and with a
// RETURNING clause by Append. The caller gives each event's recorded time
// and the part of its hash input that follows the version
// (eventstore.AppendHashFields).
//
// appendSQL appends any number of events; when it finds the stream at
// another version than expected it inserts nothing. It reads the stream's
// last version and hash (the zero hash for a new stream) and chains each
// new event to the one before it, computing its hash as
// eventstore.HashEvent does. The chain and the version check read the same
// snapshot, so the previous hash is the hash of the event at the version
// the append builds on; if another append takes that version first, the
// unique key on (stream, version) refuses this one. A committed event's
// previous hash is therefore always its committed predecessor's hash.
const appendSQL = `
WITH RECURSIVE last AS (
    SELECT version, hash FROM events WHERE stream = $1 ORDER BY version DESC LIMIT 1
), cur AS (
    SELECT coalesce((SELECT version FROM last), 0) AS v,
        coalesce((SELECT hash FROM last), '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea) AS hash
), e AS (
    SELECT * FROM unnest($2::text[], $3::text[], $4::json[], $5::json[], $6::bytea[])
        WITH ORDINALITY AS e(id, type, data, metadata, fields, ord)
), chain (ord, prev_hash, hash) AS (
    SELECT 0::bigint, NULL::bytea, cur.hash FROM cur
    UNION ALL
    SELECT e.ord, chain.hash, sha256('` + eventstore.HashDomain + `'::bytea || chain.hash || int8send(cur.v + e.ord) || e.fields)
    FROM chain JOIN e ON e.ord = chain.ord + 1, cur
)
INSERT INTO events (id, stream, version, type, data, metadata, recorded_at, prev_hash, hash)
SELECT e.id, $1, cur.v + e.ord, e.type, e.data, e.metadata, $7::timestamptz, chain.prev_hash, chain.hash
FROM cur, e JOIN chain ON chain.ord = e.ord
WHERE $8::bigint < 0 OR cur.v = $8::bigint`

// appendFirstSQL starts a stream with one event, the most frequent append
// (a session's first handoff). Its previous hash is the zero hash, so the
// caller computes its hash. A plain INSERT spares the server appendSQL's
// version lookup, arrays and larger plan, about a quarter of its work per
// append; the unique key on (stream, version) rejects the row when the
// stream exists.
const appendFirstSQL = `
INSERT INTO events (id, stream, version, type, data, metadata, recorded_at, prev_hash, hash)
VALUES ($1, $2, 1, $3, $4, $5, $6, $7, $8)`

// appendNextSQL appends one event after an exact version, the usual
// command (a claim, a withdrawal): it reads the hash of the event at that
// version by the unique key and chains the new event to it, as appendSQL
// does. It inserts nothing when the stream has no event at that version;
// when the stream is beyond it, the unique key on (stream, version)
// refuses the row.
const appendNextSQL = `
INSERT INTO events (id, stream, version, type, data, metadata, recorded_at, prev_hash, hash)
SELECT $1::text, $2::text, $3::bigint + 1, $4::text, $5::json, $6::json, $7::timestamptz,
    hash, sha256('` + eventstore.HashDomain + `'::bytea || hash || int8send($3::bigint + 1) || $8::bytea)
FROM events WHERE stream = $2::text AND version = $3::bigint`

const (
	returningAll   = ` RETURNING position, version, prev_hash, hash`
	returningNext  = ` RETURNING position, prev_hash, hash`
	returningFirst = ` RETURNING position`
)

// uniqueStreamVersion is the constraint a concurrent append to the same
// stream violates.
const uniqueStreamVersion = "events_stream_version_key"

// uniqueDataKey is the constraint an append creating a stream's data key
// violates when another append created one first.
const uniqueDataKey = "data_keys_pkey"

// keyCTE returns an append statement, sql with its arguments args, with
// the key change as a data-modifying CTE of the same statement, so that
// the key row and the events are written together in one round trip, and
// the arguments it needs after args. stream is the statement's expression
// for the stream name and when is the condition under which the statement
// appends its events: a key is created or destroyed only then. A key
// created for a stream that has one already violates uniqueDataKey, which
// the append reports as a conflict. With no change it returns sql as it is.
func keyCTE(sql string, key eventstore.KeyChange, stream, when string, args []any) (string, []any) {
	var cte string
	switch {
	case key.Create != nil:
		n := len(args)
		cte = fmt.Sprintf(`data_key AS (INSERT INTO data_keys (stream_id, key_id, wrapped, master_key_id) SELECT %s, $%d::text, $%d::bytea, $%d::text WHERE %s)`,
			stream, n+1, n+2, n+3, when)
		args = append(args, key.Create.ID, key.Create.Wrapped, key.Create.MasterKeyID)
	case key.Destroy:
		cte = fmt.Sprintf(`data_key AS (DELETE FROM data_keys WHERE stream_id = %s AND (%s))`, stream, when)
	default:
		return sql, args
	}
	if rest, ok := strings.CutPrefix(sql, "\nWITH RECURSIVE "); ok {
		return "\nWITH RECURSIVE " + cte + ", " + rest, args
	}
	return "\nWITH " + cte + sql, args
}

// maxAnyRetries bounds how often an append expecting Any is retried after
// losing a race; each retry means another append to the stream succeeded.
const maxAnyRetries = 20

// anyBackoff is how long an append expecting Any waits before its retry
// after the given attempt: a random time, up to a limit that doubles from
// 100µs to 10ms. Without it, writers that keep racing on one stream can
// starve one of them: on a loaded machine one lost 21 races in a row.
func anyBackoff(attempt int) time.Duration {
	limit := min(100*time.Microsecond<<attempt, 10*time.Millisecond)
	return rand.N(limit) + 1
}

// Append implements eventstore.Store.
func (s *Store) Append(ctx context.Context, stream string, expected eventstore.ExpectedVersion, events []eventstore.NewEvent) ([]eventstore.Event, error) {
	return s.AppendKeyed(ctx, stream, expected, eventstore.KeyChange{}, events, true)
}

// AppendQuick implements eventstore.Store.
func (s *Store) AppendQuick(ctx context.Context, stream string, expected eventstore.ExpectedVersion, events []eventstore.NewEvent) error {
	_, err := s.AppendKeyed(ctx, stream, expected, eventstore.KeyChange{}, events, false)
	return err
}

// AppendKeyed implements eventstore.Store: the key change is one more
// data-modifying CTE of the append's statement (keyCTE), so it costs no
// round trip.
func (s *Store) AppendKeyed(ctx context.Context, stream string, expected eventstore.ExpectedVersion, key eventstore.KeyChange, events []eventstore.NewEvent, readBack bool) ([]eventstore.Event, error) {
	recorded, err := eventstore.Prepare(stream, expected, events)
	if err != nil || len(recorded) == 0 {
		return nil, err
	}
	if err := s.append(ctx, expected, key, recorded, readBack); err != nil {
		return nil, err
	}
	return recorded, nil
}

// append inserts events, all of one stream, retrying an append expecting
// Any that lost a race, and wakes this process's tailing readers. With
// readBack it fills in the versions, positions and hashes the events got.
func (s *Store) append(ctx context.Context, expected eventstore.ExpectedVersion, key eventstore.KeyChange, events []eventstore.Event, readBack bool) error {
	for attempt := 0; ; attempt++ {
		err := s.insert(ctx, expected, key, events, readBack)
		if errors.Is(err, eventstore.ErrConflict) && expected == eventstore.Any && attempt < maxAnyRetries {
			if !eventstore.Sleep(ctx, anyBackoff(attempt), nil) {
				return fmt.Errorf("append to stream %q: %w", events[0].Stream, ctx.Err())
			}
			continue
		}
		if err != nil {
			return err
		}
		s.appended.Notify()
		return nil
	}
}

// insert runs one append statement, the events recorded now; see append.
func (s *Store) insert(ctx context.Context, expected eventstore.ExpectedVersion, key eventstore.KeyChange, events []eventstore.Event, readBack bool) error {
	stream := events[0].Stream
	now := eventstore.RecordTime(time.Now())
	for i := range events {
		events[i].RecordedAt = now
	}
	var (
		n   int
		err error
	)
	switch {
	case expected == eventstore.NoStream && len(events) == 1:
		n, err = s.insertFirst(ctx, key, &events[0], readBack)
	case expected > eventstore.NoStream && len(events) == 1:
		n, err = s.insertNext(ctx, expected, key, &events[0], readBack)
	default:
		n, err = s.insertMany(ctx, expected, key, events, readBack)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" && (pgErr.ConstraintName == uniqueStreamVersion || pgErr.ConstraintName == uniqueDataKey) {
		return &eventstore.ConflictError{Stream: stream, Expected: expected}
	}
	if err != nil {
		return pgerr.Classify(fmt.Errorf("append to stream %q: %w", stream, err))
	}
	if n == 0 {
		// appendSQL found the stream at another version.
		return &eventstore.ConflictError{Stream: stream, Expected: expected}
	}
	return nil
}

// insertFirst runs appendFirstSQL and returns 1, the number of events it
// inserted.
func (s *Store) insertFirst(ctx context.Context, key eventstore.KeyChange, e *eventstore.Event, readBack bool) (int, error) {
	e.Version, e.PrevHash = 1, eventstore.Hash{}
	e.Hash = eventstore.HashEvent(e.PrevHash, *e)
	args := []any{e.ID, e.Stream, e.Type, []byte(e.Data), []byte(e.RawMetadata), e.RecordedAt, e.PrevHash[:], e.Hash[:]}
	// A stream that exists makes the INSERT fail, and the key change with it.
	sql, args := keyCTE(appendFirstSQL, key, "$2", "true", args)
	if !readBack {
		_, err := s.pool.Exec(ctx, sql, args...)
		return 1, err
	}
	return 1, s.pool.QueryRow(ctx, sql+returningFirst, args...).Scan(&e.Position)
}

// insertNext runs appendNextSQL and returns how many events it inserted:
// 1, or 0 when the stream has no event at the expected version.
func (s *Store) insertNext(ctx context.Context, expected eventstore.ExpectedVersion, key eventstore.KeyChange, e *eventstore.Event, readBack bool) (int, error) {
	e.Version = int64(expected) + 1
	args := []any{e.ID, e.Stream, int64(expected), e.Type, []byte(e.Data), []byte(e.RawMetadata), e.RecordedAt, eventstore.AppendHashFields(nil, *e)}
	sql, args := keyCTE(appendNextSQL, key, "$2::text",
		"EXISTS (SELECT 1 FROM events WHERE stream = $2::text AND version = $3::bigint)", args)
	if !readBack {
		tag, err := s.pool.Exec(ctx, sql, args...)
		return int(tag.RowsAffected()), err
	}
	err := s.pool.QueryRow(ctx, sql+returningNext, args...).Scan(&e.Position, &e.PrevHash, &e.Hash)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	return 1, err
}

// insertMany runs appendSQL and returns how many events it inserted: all of
// them, or none when it found the stream at another version than expected.
func (s *Store) insertMany(ctx context.Context, expected eventstore.ExpectedVersion, key eventstore.KeyChange, events []eventstore.Event, readBack bool) (int, error) {
	ids := make([]string, len(events))
	types := make([]string, len(events))
	data := make([][]byte, len(events))
	metas := make([][]byte, len(events))
	fields := make([][]byte, len(events))
	for i, e := range events {
		ids[i], types[i], data[i], metas[i] = e.ID, e.Type, e.Data, e.RawMetadata
		fields[i] = eventstore.AppendHashFields(nil, e)
	}
	args := []any{events[0].Stream, ids, types, data, metas, fields, events[0].RecordedAt, int64(expected)}
	sql, args := keyCTE(appendSQL, key, "$1", "$8::bigint < 0 OR (SELECT v FROM cur) = $8::bigint", args)
	if !readBack {
		tag, err := s.pool.Exec(ctx, sql, args...)
		return int(tag.RowsAffected()), err
	}
	rows, _ := s.pool.Query(ctx, sql+returningAll, args...)
	n := 0
	for rows.Next() {
		e := &events[n]
		if err := rows.Scan(&e.Position, &e.Version, &e.PrevHash, &e.Hash); err != nil {
			rows.Close()
			return 0, err
		}
		n++
	}
	return n, rows.Err()
}

// selectEvent reads events with their stream's data key, if it has one:
// one lookup of the key's primary key per event (OFFSET 0 keeps the
// planner from turning the lateral subquery into a join that could scan
// every key), so a read's cost still follows the events it reads.
const selectEvent = `SELECT position, id, stream, version, type, data, metadata, recorded_at, prev_hash, hash, key_id, wrapped, master_key_id
FROM events LEFT JOIN LATERAL (SELECT key_id, wrapped, master_key_id FROM data_keys WHERE stream_id = stream OFFSET 0) AS data_key ON true `

// ReadStream implements eventstore.Store.
func (s *Store) ReadStream(ctx context.Context, stream string) ([]eventstore.Event, error) {
	return s.ReadStreamAfter(ctx, stream, 0)
}

// ReadStreamAfter implements eventstore.Store.
func (s *Store) ReadStreamAfter(ctx context.Context, stream string, after int64) ([]eventstore.Event, error) {
	rows, _ := s.pool.Query(ctx, selectEvent+`WHERE stream = $1 AND version > $2 ORDER BY version`, stream, after)
	events, err := collectEvents(rows)
	if err != nil {
		return nil, pgerr.Classify(fmt.Errorf("read stream %q after version %d: %w", stream, after, err))
	}
	return events, nil
}

// Snapshot implements eventstore.Store.
func (s *Store) Snapshot(ctx context.Context, stream string) (eventstore.Snapshot, bool, error) {
	snap := eventstore.Snapshot{Stream: stream}
	err := s.pool.QueryRow(ctx, `SELECT version, event_id, data FROM snapshots WHERE stream = $1`, stream).
		Scan(&snap.Version, &snap.EventID, &snap.Data)
	if errors.Is(err, pgx.ErrNoRows) {
		return eventstore.Snapshot{}, false, nil
	}
	if err != nil {
		return eventstore.Snapshot{}, false, pgerr.Classify(fmt.Errorf("read snapshot of stream %q: %w", stream, err))
	}
	return snap, true, nil
}

// SaveSnapshot implements eventstore.Store.
func (s *Store) SaveSnapshot(ctx context.Context, snap eventstore.Snapshot) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO snapshots (stream, version, event_id, data) VALUES ($1, $2, $3, $4)
ON CONFLICT (stream) DO UPDATE SET version = EXCLUDED.version, event_id = EXCLUDED.event_id, data = EXCLUDED.data`,
		snap.Stream, snap.Version, snap.EventID, snap.Data)
	if err != nil {
		return pgerr.Classify(fmt.Errorf("save snapshot of stream %q at version %d: %w", snap.Stream, snap.Version, err))
	}
	return nil
}

// ReadAll implements eventstore.Store.
//
// The events after `after` that are visible now are safe to return as far
// as their positions run on without a hole: every position in that run has
// committed, so no late commit can land inside it. That is the usual case
// and costs one query. A hole is a position drawn by a transaction that is
// still open, or by one that rolled back and left it empty for ever. At a
// hole ReadAll looks for open appends (see openAppends): with none, or with
// nothing to return before the hole, it waits for the log to settle and
// reads again up to the settled position, across the holes that will never
// be filled; otherwise it returns the run before the hole at once.
func (s *Store) ReadAll(ctx context.Context, after int64, limit int) ([]eventstore.Event, error) {
	events, err := s.readRange(ctx, after, math.MaxInt64, limit)
	if err != nil {
		return nil, err
	}
	n := gapless(events, after)
	if n == len(events) {
		return events, nil
	}
	last, writers, err := s.openAppends(ctx)
	if err != nil {
		return nil, err
	}
	if n > 0 && len(writers) > 0 {
		return events[:n], nil
	}
	head, err := s.settle(ctx, last, writers)
	if err != nil {
		return nil, err
	}
	if head <= after {
		return nil, nil
	}
	return s.readRange(ctx, after, head, limit)
}

// readAccountSQL reads an account's events in a range of positions,
// through the index events_account on the account part of the stream name
// (migrations/postgres/00012_events_by_account.sql).
const readAccountSQL = selectEvent + `WHERE split_part(stream, ':', 2) = $1 AND position > $2 AND position <= $3
ORDER BY position LIMIT $4`

// ReadAccount implements eventstore.Store. The account's events are
// sparse in the log, so a hole among them says nothing about a late
// commit: it settles the log first (see settledHead) and reads only up to
// the settled position, one index range scan.
func (s *Store) ReadAccount(ctx context.Context, account uuid.UUID, after int64, limit int) ([]eventstore.Event, error) {
	head, err := s.settledHead(ctx)
	if err != nil {
		return nil, pgerr.Classify(fmt.Errorf("read account %s after %d: %w", account, after, err))
	}
	if head <= after {
		return nil, nil
	}
	rows, _ := s.pool.Query(ctx, readAccountSQL, account.String(), after, head, limit)
	events, err := collectEvents(rows)
	if err != nil {
		return nil, pgerr.Classify(fmt.Errorf("read account %s after %d: %w", account, after, err))
	}
	return events, nil
}

// readRange reads up to limit events with positions in (after, upTo].
func (s *Store) readRange(ctx context.Context, after, upTo int64, limit int) ([]eventstore.Event, error) {
	rows, _ := s.pool.Query(ctx, selectEvent+`WHERE position > $1 AND position <= $2 ORDER BY position LIMIT $3`, after, upTo, limit)
	events, err := collectEvents(rows)
	if err != nil {
		return nil, pgerr.Classify(fmt.Errorf("read all after %d: %w", after, err))
	}
	return events, nil
}

// gapless returns how many of events, in position order, follow position
// after without a hole.
func gapless(events []eventstore.Event, after int64) int {
	for i, e := range events {
		if e.Position != after+int64(i)+1 {
			return i
		}
	}
	return len(events)
}

// Head returns the position of the last committed event (0 for an empty
// log). A reader that has applied the log up to Head has seen every event
// committed before the call; positions drawn by appends that rolled back
// are never the head, since no reader could ever reach them.
func (s *Store) Head(ctx context.Context) (int64, error) {
	var head int64
	if err := s.pool.QueryRow(ctx, `SELECT coalesce(max(position), 0) FROM events`).Scan(&head); err != nil {
		return 0, pgerr.Classify(fmt.Errorf("read log head: %w", err))
	}
	return head, nil
}

// Settling the log: a position at or below which no event can commit any
// more, so that every position up to it is either visible or never will be.
//
// Positions are drawn from a sequence inside the inserting transaction, and
// a transaction may commit long after a later one, so "the highest visible
// position" is not safe: a reader that moved past it would skip the late
// commit. Instead:
//
//  1. read the sequence's last value L: every position <= L was drawn by an
//     INSERT that had already started, and an INSERT holds a ROW EXCLUSIVE
//     lock on events from before it draws a position until its transaction
//     ends;
//  2. list the transactions holding that lock now: the ones among them that
//     drew positions <= L and have not finished;
//  3. wait until none of those holds the lock any more: then every position
//     <= L has committed or rolled back.
//
// Nothing here touches the write path, so appends never wait for readers,
// and only transactions that insert into this database's events table hold
// readers back. Steps 1 and 2 (openAppends) go in one round trip; step 3
// (settle) costs one more per check while a writer is in flight.

// openAppends does steps 1 and 2 of settling the log: it returns the
// sequence's last value (0 before the first append) and the transactions
// that may be appending.
func (s *Store) openAppends(ctx context.Context) (last int64, writers []string, err error) {
	var called bool
	batch := &pgx.Batch{}
	batch.Queue(`SELECT last_value, is_called FROM events_position_seq`).QueryRow(func(row pgx.Row) error {
		return row.Scan(&last, &called)
	})
	batch.Queue(`SELECT coalesce(array_agg(virtualtransaction), '{}') FROM pg_locks ` + writersWhere).QueryRow(func(row pgx.Row) error {
		return row.Scan(&writers)
	})
	if err := s.pool.SendBatch(ctx, batch).Close(); err != nil {
		return 0, nil, pgerr.Classify(fmt.Errorf("find open appends: %w", err))
	}
	if !called {
		return 0, nil, nil
	}
	return last, writers, nil
}

// settledHead settles the log: it returns a position at or below which
// every event has committed or never will.
func (s *Store) settledHead(ctx context.Context) (int64, error) {
	last, writers, err := s.openAppends(ctx)
	if err != nil {
		return 0, err
	}
	return s.settle(ctx, last, writers)
}

// settle does step 3 of settling the log: it waits until none of writers holds
// its lock any more, and returns last.
func (s *Store) settle(ctx context.Context, last int64, writers []string) (int64, error) {
	wait := 200 * time.Microsecond
	for len(writers) > 0 {
		if !eventstore.Sleep(ctx, wait, nil) {
			return 0, fmt.Errorf("wait for %d writers below position %d: %w", len(writers), last, ctx.Err())
		}
		wait = min(2*wait, 20*time.Millisecond)
		rows, _ := s.pool.Query(ctx, `SELECT virtualtransaction FROM pg_locks `+writersWhere+` AND virtualtransaction = ANY($1)`, writers)
		var err error
		if writers, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return 0, pgerr.Classify(fmt.Errorf("check writers below position %d: %w", last, err))
		}
	}
	return last, nil
}

// writersWhere selects the locks of the transactions that may be inserting
// into this database's events table.
const writersWhere = `WHERE locktype = 'relation' AND mode = 'RowExclusiveLock'
	AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
	AND relation = 'events'::regclass`

func collectEvents(rows pgx.Rows) ([]eventstore.Event, error) {
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (eventstore.Event, error) {
		var (
			e               eventstore.Event
			data, meta      []byte
			keyID, masterID *string
			wrapped         []byte
		)
		// Scanned as bytes: into a json.RawMessage, pgx would run the
		// JSON decoder over data the database has already checked.
		if err := row.Scan(&e.Position, &e.ID, &e.Stream, &e.Version, &e.Type, &data, &meta, &e.RecordedAt, &e.PrevHash, &e.Hash, &keyID, &wrapped, &masterID); err != nil {
			return e, err
		}
		if keyID != nil {
			e.DataKey = &eventstore.DataKey{ID: *keyID, Wrapped: wrapped, MasterKeyID: *masterID}
		}
		e.Data, e.RawMetadata, e.RecordedAt = data, meta, e.RecordedAt.UTC()
		var err error
		if e.Metadata, err = eventstore.ParseMetadata(meta); err != nil {
			return e, fmt.Errorf("decode metadata of event %s: %w", e.ID, err)
		}
		return e, nil
	})
}
