package pgstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/eventstore/internal/prepare"
	"github.com/resolutionflow/ledgerd/internal/pgerr"
	"github.com/resolutionflow/ledgerd/internal/poll"
)

// The statements of an append written alone, each run as it is by
// AppendNoReadBack and with a RETURNING clause by Append. The caller gives each
// event's recorded time and either its hash or the part of its hash input
// that follows the version (eventstore.AppendHashFields).
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

// appendAfterSQL is appendNextSQL for a caller that gave the previous
// event's hash (eventstore.AfterHash): the event comes hashed, and the
// statement only checks that the stream's event at the expected version
// has that hash.
const appendAfterSQL = `
INSERT INTO events (id, stream, version, type, data, metadata, recorded_at, prev_hash, hash)
SELECT $1::text, $2::text, $3::bigint + 1, $4::text, $5::json, $6::json, $7::timestamptz, $8::bytea, $9::bytea
WHERE EXISTS (SELECT FROM events WHERE stream = $2::text AND version = $3::bigint AND hash = $8::bytea)`

const (
	returningAll   = ` RETURNING position, version, prev_hash, hash`
	returningNext  = ` RETURNING position, prev_hash, hash`
	returningFirst = ` RETURNING position`
)

// batchSQL writes the rows of a batch of appends (see writeBatch), each row
// an event with its stream and version. A row that follows an existing
// event (follows) is inserted only when the stream's event at the version
// before it is there, with the given previous hash when there is one; a
// row without a hash is hashed from that event's, as appendNextSQL does.
// That event is looked up by the unique key, and only for such rows.
// Rows that would break a unique key (a version or an event id taken) are
// left out, not refused (ON CONFLICT DO NOTHING), and RETURNING tells which
// went in. Rows are inserted in (stream, version) order, so positions
// follow versions within a stream and two batches take the unique key's
// entries in the same order.
const batchSQL = `
WITH r AS MATERIALIZED (
    SELECT u.*, CASE WHEN u.follows THEN
            (SELECT hash FROM events p WHERE p.stream = u.stream COLLATE "C" AND p.version = u.version - 1)
        END AS before
    FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::json[], $6::json[], $7::bytea[], $8::bytea[], $9::bytea[], $10::bool[])
        AS u(id, stream, version, type, data, metadata, prev_hash, hash, fields, follows)
), ins AS (
    INSERT INTO events (id, stream, version, type, data, metadata, recorded_at, prev_hash, hash)
    SELECT r.id, r.stream, r.version, r.type, r.data, r.metadata, $11::timestamptz, coalesce(r.prev_hash, r.before),
        coalesce(r.hash, sha256('` + eventstore.HashDomain + `'::bytea || r.before || int8send(r.version) || r.fields))
    FROM r
    WHERE NOT r.follows OR r.before = coalesce(r.prev_hash, r.before)
    ORDER BY r.stream, r.version
    ON CONFLICT DO NOTHING
    RETURNING id, stream, version, position, prev_hash, hash
)`

// batchAnswersCTE, added to batchSQL, also writes the answers of the
// appends that carry one (eventstore.WithAnswer), each only when its
// append's first event went in, and taking over a key only as
// idempotency's Save does (expired, or pending without an answer for too
// long). Its parameters are $12 to $21.
const batchAnswersCTE = `, k AS (
    INSERT INTO idempotency_keys AS k (account_id, user_id, key, request_hash, status_code, response, session_id)
    SELECT a.account_id, a.user_id, a.key, a.request_hash, a.status_code, a.response, a.session_id
    FROM unnest($12::uuid[], $13::uuid[], $14::text[], $15::text[], $16::int[], $17::bytea[], $18::text[], $19::float8[], $20::float8[], $21::uuid[])
        AS a(account_id, user_id, key, request_hash, status_code, response, event_id, ttl, pending, session_id)
    WHERE a.event_id IN (SELECT id FROM ins)
    ON CONFLICT (account_id, user_id, key) DO UPDATE
        SET request_hash = EXCLUDED.request_hash, status_code = EXCLUDED.status_code, response = EXCLUDED.response,
            session_id = EXCLUDED.session_id, created_at = now()
        WHERE k.created_at < now() - make_interval(secs => (SELECT max(ttl) FROM unnest($19::float8[]) ttl))
           OR (k.status_code IS NULL AND k.created_at < now() - make_interval(secs => (SELECT max(p) FROM unnest($20::float8[]) p)))
    RETURNING account_id, user_id, key
)`

// batchKeysCTE, added to batchSQL, creates the data keys of the appends
// that make one (eventstore.KeyChange.Create), each only when its
// append's first event went in; a key the stream has already is left out
// (and its append with it). Its parameters start at $n.
func batchKeysCTE(n int) string {
	return fmt.Sprintf(`, dk AS (
    INSERT INTO data_keys (stream_id, key_id, wrapped, master_key_id)
    SELECT d.stream, d.key_id, d.wrapped, d.master_key_id
    FROM unnest($%d::text[], $%d::text[], $%d::bytea[], $%d::text[], $%d::text[]) AS d(stream, key_id, wrapped, master_key_id, event_id)
    WHERE d.event_id IN (SELECT id FROM ins)
    ON CONFLICT DO NOTHING
    RETURNING stream_id
)`, n, n+1, n+2, n+3, n+4)
}

// The rows a batch statement returns: the events that went in, the
// answers' keys and the streams given a data key.
const (
	batchSelectEvents  = "\nSELECT id, stream, version, position, prev_hash, hash, NULL::uuid, NULL::uuid, NULL::text FROM ins"
	batchSelectAnswers = "\nUNION ALL SELECT NULL, NULL, NULL, NULL, NULL, NULL, account_id, user_id, key FROM k"
	batchSelectKeys    = "\nUNION ALL SELECT NULL, stream_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM dk"
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

// batchTimeout bounds the writing of a batch, which its callers wait for
// whether or not the one writing it is still waiting.
const batchTimeout = 30 * time.Second

// request is one append on its way through the batch queue.
type request struct {
	expected eventstore.ExpectedVersion
	key      eventstore.KeyChange
	events   []eventstore.Event
	opts     eventstore.AppendOptions
	readBack bool
}

// errAlone is a batch's answer to an append it did not write: its caller
// writes it alone, which finds its own error (a conflict, an event id
// taken) or writes it.
var errAlone = errors.New("append not written by its batch")

// Append implements eventstore.Store.
func (s *Store) Append(ctx context.Context, stream string, expected eventstore.ExpectedVersion, events []eventstore.NewEvent, opts ...eventstore.AppendOption) ([]eventstore.Event, error) {
	return s.AppendKeyed(ctx, stream, expected, eventstore.KeyChange{}, events, true, opts...)
}

// AppendNoReadBack implements eventstore.Store.
func (s *Store) AppendNoReadBack(ctx context.Context, stream string, expected eventstore.ExpectedVersion, events []eventstore.NewEvent, opts ...eventstore.AppendOption) error {
	_, err := s.AppendKeyed(ctx, stream, expected, eventstore.KeyChange{}, events, false, opts...)
	return err
}

// AppendKeyed implements eventstore.Store: the key change is one more
// data-modifying CTE of the append's statement (keyCTE), or of its batch's
// (batchKeysCTE), so it costs no round trip.
func (s *Store) AppendKeyed(ctx context.Context, stream string, expected eventstore.ExpectedVersion, key eventstore.KeyChange, events []eventstore.NewEvent, readBack bool, opts ...eventstore.AppendOption) ([]eventstore.Event, error) {
	recorded, err := prepare.Events(stream, expected, events)
	if err != nil || len(recorded) == 0 {
		return nil, err
	}
	if err := s.append(ctx, &request{expected: expected, key: key, events: recorded, opts: eventstore.Options(opts), readBack: readBack}); err != nil {
		return nil, err
	}
	return recorded, nil
}

// append writes r: in a batch when it can go in one, and alone when it
// cannot (expecting Any, or several events after a version without the
// previous hash) or when its batch left it out. It wakes this process's
// tailing readers.
func (s *Store) append(ctx context.Context, r *request) error {
	if r.opts.PrevHash != nil && r.expected <= eventstore.NoStream {
		r.opts.PrevHash = nil
	}
	err := errAlone
	if batchable(r) {
		err = s.batches.Do(ctx, r)
	}
	if errors.Is(err, errAlone) {
		err = s.appendAlone(ctx, r)
	}
	if err != nil {
		return err
	}
	s.appended.Notify()
	return nil
}

// batchable reports whether batchSQL can write r: it destroys no data key
// (a rare erasure, written alone), every event's version is
// known beforehand, and every hash is either computed in Go or, for a
// single event after an exact version, from the predecessor it reads.
func batchable(r *request) bool {
	switch {
	case r.key.Destroy:
		return false
	case r.expected == eventstore.NoStream:
		return true
	case r.expected > eventstore.NoStream:
		return r.opts.PrevHash != nil || len(r.events) == 1
	}
	return false
}

// appendAlone writes r in statements of its own, retrying an append
// expecting Any that lost a race.
func (s *Store) appendAlone(ctx context.Context, r *request) error {
	for attempt := 0; ; attempt++ {
		err := s.insert(ctx, r)
		if errors.Is(err, eventstore.ErrConflict) && r.expected == eventstore.Any && attempt < maxAnyRetries {
			if !poll.Sleep(ctx, anyBackoff(attempt), nil) {
				return fmt.Errorf("append to stream %q: %w", r.events[0].Stream, ctx.Err())
			}
			continue
		}
		return err
	}
}

// insert runs one append alone, the events recorded now: one statement, or
// with an answer, a transaction of the statement and the answer's insert.
func (s *Store) insert(ctx context.Context, r *request) error {
	stream := r.events[0].Stream
	now := eventstore.RecordTime(time.Now())
	for i := range r.events {
		r.events[i].RecordedAt = now
	}
	var q querier = s.pool
	var tx pgx.Tx
	if r.opts.Answer != nil {
		var err error
		if tx, err = s.pool.Begin(ctx); err != nil {
			return pgerr.Classify(fmt.Errorf("append to stream %q: begin: %w", stream, err))
		}
		defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after Commit
		q = tx
	}
	var (
		n   int
		err error
	)
	switch {
	case r.expected == eventstore.NoStream && len(r.events) == 1:
		n, err = insertFirst(ctx, q, r.key, &r.events[0], r.readBack)
	case r.expected > eventstore.NoStream && len(r.events) == 1 && r.opts.PrevHash != nil:
		n, err = insertAfter(ctx, q, r.expected, *r.opts.PrevHash, r.key, &r.events[0], r.readBack)
	case r.expected > eventstore.NoStream && len(r.events) == 1:
		n, err = insertNext(ctx, q, r.expected, r.key, &r.events[0], r.readBack)
	default:
		n, err = insertMany(ctx, q, r.expected, r.key, r.events, r.readBack)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" && (pgErr.ConstraintName == uniqueStreamVersion || pgErr.ConstraintName == uniqueDataKey) {
		return &eventstore.ConflictError{Stream: stream, Expected: r.expected}
	}
	if err != nil {
		return pgerr.Classify(fmt.Errorf("append to stream %q: %w", stream, err))
	}
	if n == 0 {
		// The stream is not at the expected version.
		return &eventstore.ConflictError{Stream: stream, Expected: r.expected}
	}
	if tx == nil {
		return nil
	}
	a := r.opts.Answer
	// pgx.CollectRows reports the query's error.
	rows, _ := tx.Query(ctx, answerSQL, a.Account, a.User, a.Key, a.RequestHash, a.Status, a.Body, a.TTL.Seconds(), a.PendingTimeout.Seconds(), pgtype.UUID{Bytes: a.Session, Valid: a.Session != uuid.Nil})
	stored, err := pgx.CollectRows(rows, pgx.RowTo[bool])
	if err != nil {
		return pgerr.Classify(fmt.Errorf("append to stream %q: store answer: %w", stream, err))
	}
	if len(stored) == 0 {
		return fmt.Errorf("append to stream %q: %w", stream, eventstore.ErrAnswerTaken)
	}
	if err := tx.Commit(ctx); err != nil {
		return pgerr.Classify(fmt.Errorf("append to stream %q: commit: %w", stream, err))
	}
	return nil
}

// answerSQL stores an append's answer, as batchAnswersCTE does.
const answerSQL = `
INSERT INTO idempotency_keys AS k (account_id, user_id, key, request_hash, status_code, response, session_id) VALUES ($1, $2, $3, $4, $5, $6, $9)
ON CONFLICT (account_id, user_id, key) DO UPDATE
    SET request_hash = EXCLUDED.request_hash, status_code = EXCLUDED.status_code, response = EXCLUDED.response,
        session_id = EXCLUDED.session_id, created_at = now()
    WHERE k.created_at < now() - make_interval(secs => $7) OR (k.status_code IS NULL AND k.created_at < now() - make_interval(secs => $8))
RETURNING true`

// querier runs statements on the pool or in a transaction.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// insertFirst runs appendFirstSQL and returns 1, the number of events it
// inserted.
func insertFirst(ctx context.Context, q querier, key eventstore.KeyChange, e *eventstore.Event, readBack bool) (int, error) {
	e.Version, e.PrevHash = 1, eventstore.Hash{}
	e.Hash = eventstore.HashEvent(e.PrevHash, *e)
	args := []any{e.ID, e.Stream, e.Type, []byte(e.Data), []byte(e.RawMetadata), e.RecordedAt, e.PrevHash[:], e.Hash[:]}
	// A stream that exists makes the INSERT fail, and the key change with it.
	sql, args := keyCTE(appendFirstSQL, key, "$2", "true", args)
	if !readBack {
		_, err := q.Exec(ctx, sql, args...)
		return 1, err
	}
	return 1, q.QueryRow(ctx, sql+returningFirst, args...).Scan(&e.Position)
}

// insertAfter runs appendAfterSQL and returns how many events it
// inserted: 1, or 0 when the stream has no event with hash prev at the
// expected version.
func insertAfter(ctx context.Context, q querier, expected eventstore.ExpectedVersion, prev eventstore.Hash, key eventstore.KeyChange, e *eventstore.Event, readBack bool) (int, error) {
	e.Version, e.PrevHash = int64(expected)+1, prev
	e.Hash = eventstore.HashEvent(prev, *e)
	args := []any{e.ID, e.Stream, int64(expected), e.Type, []byte(e.Data), []byte(e.RawMetadata), e.RecordedAt, e.PrevHash[:], e.Hash[:]}
	sql, args := keyCTE(appendAfterSQL, key, "$2::text",
		"EXISTS (SELECT 1 FROM events WHERE stream = $2::text AND version = $3::bigint AND hash = $8::bytea)", args)
	if !readBack {
		tag, err := q.Exec(ctx, sql, args...)
		return int(tag.RowsAffected()), err
	}
	err := q.QueryRow(ctx, sql+returningFirst, args...).Scan(&e.Position)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	return 1, err
}

// insertNext runs appendNextSQL and returns how many events it inserted:
// 1, or 0 when the stream has no event at the expected version.
func insertNext(ctx context.Context, q querier, expected eventstore.ExpectedVersion, key eventstore.KeyChange, e *eventstore.Event, readBack bool) (int, error) {
	e.Version = int64(expected) + 1
	args := []any{e.ID, e.Stream, int64(expected), e.Type, []byte(e.Data), []byte(e.RawMetadata), e.RecordedAt, eventstore.AppendHashFields(nil, *e)}
	sql, args := keyCTE(appendNextSQL, key, "$2::text",
		"EXISTS (SELECT 1 FROM events WHERE stream = $2::text AND version = $3::bigint)", args)
	if !readBack {
		tag, err := q.Exec(ctx, sql, args...)
		return int(tag.RowsAffected()), err
	}
	err := q.QueryRow(ctx, sql+returningNext, args...).Scan(&e.Position, &e.PrevHash, &e.Hash)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	return 1, err
}

// insertMany runs appendSQL and returns how many events it inserted: all of
// them, or none when it found the stream at another version than expected.
func insertMany(ctx context.Context, q querier, expected eventstore.ExpectedVersion, key eventstore.KeyChange, events []eventstore.Event, readBack bool) (int, error) {
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
		tag, err := q.Exec(ctx, sql, args...)
		return int(tag.RowsAffected()), err
	}
	// rows.Err reports the query's error, after rows.Next returns false.
	rows, _ := q.Query(ctx, sql+returningAll, args...)
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

// writeBatch writes a batch of appends for the queue (groupcommit) and
// returns each one's error. One append alone, without an answer, is
// written by its own statement as before. Otherwise one transaction:
// batchSQL inserts the rows of all of them and says which went in. When
// an append did not go in whole (a version or an event id taken, by
// another process or by an append of the same batch) or its answer's key
// is held, the transaction is rolled back and the batch written again
// without it; it is left to its caller to write alone (errAlone), which
// finds its exact error. A statement that fails as a whole (such as data
// that is not JSON) leaves every append of the batch to its caller, but
// for a database out of reach, which fails them all.
func (s *Store) writeBatch(ctx context.Context, batch []*request) []error {
	errs := make([]error, len(batch))
	if len(batch) == 1 && batch[0].opts.Answer == nil {
		errs[0] = s.insert(ctx, batch[0])
		return errs
	}
	// batch[0] is the caller's own append: the others' callers wait for
	// the batch whether or not it still does.
	if len(batch) > 1 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), batchTimeout)
		defer cancel()
	}
	live := make([]int, len(batch))
	for i := range live {
		live[i] = i
	}
	for len(live) > 0 {
		left, committed, err := s.tryBatch(ctx, batch, live)
		if err != nil {
			// A database out of reach fails the batch; any other error is
			// one append's (data that is not JSON, say), found alone.
			if !pgerr.Unavailable(err) && ctx.Err() == nil {
				err = errAlone
			}
			for _, i := range live {
				errs[i] = err
			}
			return errs
		}
		s.leftOut.Add(int64(len(left)))
		for _, i := range left {
			errs[i] = errAlone
		}
		if committed {
			break
		}
		live = slices.DeleteFunc(live, func(i int) bool { return errs[i] != nil })
	}
	return errs
}

// tryBatch writes the appends batch[i], i in live, with one statement in
// one transaction. It commits only when every append went in whole, with
// its answer; otherwise it rolls back, so that nothing of a losing append
// is committed (not even rows a trigger added), and returns the appends
// that did not go in whole, for writeBatch to leave out.
func (s *Store) tryBatch(ctx context.Context, batch []*request, live []int) (left []int, committed bool, err error) {
	now := eventstore.RecordTime(time.Now())
	var (
		rows                  int
		withAnswers, withKeys bool
	)
	for _, i := range live {
		rows += len(batch[i].events)
		withAnswers = withAnswers || batch[i].opts.Answer != nil
		withKeys = withKeys || batch[i].key.Create != nil
	}
	var (
		ids, streams, types  = make([]string, 0, rows), make([]string, 0, rows), make([]string, 0, rows)
		versions             = make([]int64, 0, rows)
		data, metas          = make([][]byte, 0, rows), make([][]byte, 0, rows)
		prevs, hashes, field = make([][]byte, 0, rows), make([][]byte, 0, rows), make([][]byte, 0, rows)
		follows              = make([]bool, 0, rows)
		owner                = make(map[rowKey][]*eventstore.Event, rows)
		whose                = make(map[*eventstore.Event]int, rows)
	)
	var (
		accounts, users               []pgtype.UUID
		keys, requestHashes, firstIDs []string
		statuses                      []int32
		bodies                        [][]byte
		ttls, pendings                []float64
		sessions                      []pgtype.UUID
		answerOf                      = map[answerKey]int{}
	)
	var (
		keyStreams, keyIDs, masterIDs, keyFirstIDs []string
		wrapped                                    [][]byte
		keyOf                                      = map[string][]int{}
	)
	for _, i := range live {
		r := batch[i]
		prev, known := eventstore.Hash{}, r.expected == eventstore.NoStream
		if r.opts.PrevHash != nil {
			prev, known = *r.opts.PrevHash, true
		}
		for j := range r.events {
			e := &r.events[j]
			e.RecordedAt, e.Version, e.Position = now, int64(r.expected)+int64(j)+1, 0
			ids, streams, types = append(ids, e.ID), append(streams, e.Stream), append(types, e.Type)
			versions, data, metas = append(versions, e.Version), append(data, e.Data), append(metas, e.RawMetadata)
			follows = append(follows, j == 0 && r.expected > eventstore.NoStream)
			if known {
				e.PrevHash, e.Hash = prev, eventstore.HashEvent(prev, *e)
				prev = e.Hash
				prevs, hashes, field = append(prevs, e.PrevHash[:]), append(hashes, e.Hash[:]), append(field, nil)
			} else {
				prevs, hashes, field = append(prevs, nil), append(hashes, nil), append(field, eventstore.AppendHashFields(nil, *e))
			}
			k := rowKey{e.ID, e.Stream, e.Version}
			owner[k] = append(owner[k], e)
			whose[e] = i
		}
		if a := r.opts.Answer; a != nil {
			accounts = append(accounts, pgtype.UUID{Bytes: a.Account, Valid: true})
			users = append(users, pgtype.UUID{Bytes: a.User, Valid: true})
			keys, requestHashes, firstIDs = append(keys, a.Key), append(requestHashes, a.RequestHash), append(firstIDs, r.events[0].ID)
			statuses, bodies = append(statuses, int32(a.Status)), append(bodies, a.Body)
			ttls, pendings = append(ttls, a.TTL.Seconds()), append(pendings, a.PendingTimeout.Seconds())
			sessions = append(sessions, pgtype.UUID{Bytes: a.Session, Valid: a.Session != uuid.Nil})
			answerOf[answerKey{pgtype.UUID{Bytes: a.Account, Valid: true}, pgtype.UUID{Bytes: a.User, Valid: true}, a.Key}] = i
		}
		if k := r.key.Create; k != nil {
			stream := r.events[0].Stream
			keyStreams, keyIDs, wrapped = append(keyStreams, stream), append(keyIDs, k.ID), append(wrapped, k.Wrapped)
			masterIDs, keyFirstIDs = append(masterIDs, k.MasterKeyID), append(keyFirstIDs, r.events[0].ID)
			keyOf[stream] = append(keyOf[stream], i)
		}
	}
	args := []any{ids, streams, versions, types, data, metas, prevs, hashes, field, follows, now}
	query, selects := batchSQL, batchSelectEvents
	if withAnswers {
		query, selects = query+batchAnswersCTE, selects+batchSelectAnswers
		args = append(args, accounts, users, keys, requestHashes, statuses, bodies, firstIDs, ttls, pendings, sessions)
	}
	if withKeys {
		query, selects = query+batchKeysCTE(len(args)+1), selects+batchSelectKeys
		args = append(args, keyStreams, keyIDs, wrapped, masterIDs, keyFirstIDs)
	}
	query += selects

	// BEGIN goes with the statement, one round trip; COMMIT or ROLLBACK
	// is the second. A connection released inside the transaction, after
	// an error, is closed by the pool, which rolls it back.
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, false, pgerr.Classify(fmt.Errorf("append a batch: %w", err))
	}
	defer conn.Release()
	pipe := &pgx.Batch{}
	pipe.Queue("BEGIN")
	pipe.Queue(query, args...)
	br := conn.SendBatch(ctx, pipe)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return nil, false, pgerr.Classify(fmt.Errorf("append a batch: begin: %w", err))
	}
	inserted := make(map[int]int, len(live))
	answered := make(map[int]bool, len(answerOf))
	keyed := make(map[int]bool, len(keyOf))
	res, _ := br.Query()
	for res.Next() {
		var (
			id, stream, key   pgtype.Text
			version, position pgtype.Int8
			prev, hash        []byte
			account, user     pgtype.UUID
		)
		if err := res.Scan(&id, &stream, &version, &position, &prev, &hash, &account, &user, &key); err != nil {
			res.Close()
			return nil, false, fmt.Errorf("append a batch: %w", err)
		}
		switch {
		case !id.Valid && stream.Valid:
			for _, i := range keyOf[stream.String] {
				keyed[i] = true
			}
			continue
		case !id.Valid:
			if i, ok := answerOf[answerKey{account, user, key.String}]; ok {
				answered[i] = true
			}
			continue
		}
		k := rowKey{id.String, stream.String, version.Int64}
		candidates := owner[k]
		if len(candidates) == 0 {
			continue
		}
		e := candidates[0]
		owner[k] = candidates[1:]
		e.Position = position.Int64
		copy(e.PrevHash[:], prev)
		copy(e.Hash[:], hash)
		inserted[whose[e]]++
	}
	if err := res.Err(); err != nil {
		return nil, false, pgerr.Classify(fmt.Errorf("append a batch: %w", err))
	}
	if err := br.Close(); err != nil {
		return nil, false, pgerr.Classify(fmt.Errorf("append a batch: %w", err))
	}
	for _, i := range live {
		r := batch[i]
		if inserted[i] < len(r.events) || r.opts.Answer != nil && !answered[i] || r.key.Create != nil && !keyed[i] {
			left = append(left, i)
		}
	}
	if len(left) > 0 {
		if _, err := conn.Exec(ctx, "ROLLBACK"); err != nil {
			return nil, false, pgerr.Classify(fmt.Errorf("append a batch: roll back: %w", err))
		}
		return left, false, nil
	}
	if _, err := conn.Exec(ctx, "COMMIT"); err != nil {
		return nil, false, pgerr.Classify(fmt.Errorf("append a batch: commit: %w", err))
	}
	s.batched.Add(int64(len(live) - len(left)))
	return left, true, nil
}

// rowKey finds a batch row among the rows RETURNING gave back.
type rowKey struct {
	id, stream string
	version    int64
}

// answerKey finds an answer among the keys RETURNING gave back.
type answerKey struct {
	account, user pgtype.UUID
	key           string
}
