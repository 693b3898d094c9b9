// Package sqlitestore is the embedded event store: eventstore.Store on a
// SQLite file, through a pure-Go driver (no cgo), for running the whole
// ledger in one process.
//
// SQLite lets one transaction write at a time. The store writes through a
// single connection and begins every write transaction with BEGIN
// IMMEDIATE, which takes the file's write lock at once: appends in this
// process queue for the connection, appends from another process wait for
// the lock (busy_timeout). Reads go through a separate pool of read-only
// connections, which in WAL mode never wait for the writer.
//
// Because writers take turns, a transaction draws its positions from the
// AUTOINCREMENT key only after every earlier writer has finished, so
// positions become visible in order and ReadAll is gap-safe as it stands.
//
// Appends that arrive while another is written wait for it and are then
// written together, in one transaction with one commit (group commit, see
// writeBatch): with one writer, the commit's sync of the file is most of an
// append's cost, and a batch pays it once.
//
// An append checks its expected version in its transaction. For an
// exact version v it checks that the stream reaches v and then inserts
// versions v+1, v+2, ...: if the stream is already beyond v, the insert
// is refused (by the events_insert_only_new trigger, or UNIQUE(stream,
// version)), which Append turns into *eventstore.ConflictError.
//
// The file is in WAL mode with synchronous=FULL: every commit syncs the
// WAL, so an acknowledged append survives a crash or a power loss.
package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/eventstore/internal/prepare"
	"github.com/resolutionflow/ledgerd/internal/groupcommit"
	"github.com/resolutionflow/ledgerd/internal/poll"
	"github.com/resolutionflow/ledgerd/migrations"
)

// TimeLayout is how times are stored: text in UTC with microseconds (the
// precision of PostgreSQL), fixed-width so that they sort as text. It is
// the form an event's hash covers.
const TimeLayout = eventstore.TimeLayout

// busyTimeout is how long a statement waits for a lock held by another
// connection (another process on the same file) before failing.
const busyTimeout = 10 * time.Second

// Classify returns err marked with domain.ErrDatabaseUnavailable when it
// is SQLite's SQLITE_BUSY or SQLITE_LOCKED (any of their extended codes):
// another connection, such as another process on the file, held the lock
// for longer than the busy timeout. Other errors are returned as they are.
func Classify(err error) error {
	var sqliteErr *sqlite.Error
	if !errors.As(err, &sqliteErr) || errors.Is(err, domain.ErrDatabaseUnavailable) {
		return err
	}
	switch sqliteErr.Code() & 0xff {
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
		return fmt.Errorf("%w: %w", domain.ErrDatabaseUnavailable, err)
	}
	return err
}

// Store is an eventstore.Store on a SQLite file.
type Store struct {
	write    *sql.DB
	read     *sql.DB
	insert   *sql.Stmt
	appended poll.Signal
	batches  groupcommit.Queue[*request]
	// batched counts the appends written in a batch with others, and
	// failedInBatch those of them that failed while the others committed.
	batched, failedInBatch atomic.Int64
}

var _ eventstore.Store = (*Store)(nil)

// Open opens (creating it if needed) the SQLite database at path, applies
// the pending migrations and returns a store on it. The directory must
// exist. Close the store when done.
func Open(ctx context.Context, path string) (_ *Store, err error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open event store %s: %w", path, err)
	}
	s := &Store{}
	s.batches.Write = s.writeBatch
	defer func() {
		if err != nil {
			err = errors.Join(err, s.Close())
		}
	}()
	if s.write, err = openDB(ctx, abs, false); err != nil {
		return nil, err
	}
	// One connection: every write in this process takes its turn on it.
	s.write.SetMaxOpenConns(1)
	if err = migrations.SQLite(ctx, s.write); err != nil {
		return nil, fmt.Errorf("open event store %s: %w", abs, err)
	}
	if s.read, err = openDB(ctx, abs, true); err != nil {
		return nil, err
	}
	s.read.SetMaxOpenConns(max(4, runtime.GOMAXPROCS(0)))
	s.insert, err = s.write.PrepareContext(ctx, `INSERT INTO events (id, stream, version, type, data, metadata, recorded_at, prev_hash, hash)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING position`)
	if err != nil {
		return nil, fmt.Errorf("open event store %s: prepare append: %w", abs, err)
	}
	return s, nil
}

// openDB opens a pool on the file. Every connection is durable (WAL,
// synchronous=FULL), waits for locks, enforces foreign keys and fires
// delete triggers for the rows a REPLACE removes (recursive_triggers: else
// INSERT OR REPLACE would overwrite an event past the events table's
// triggers); the writer's transactions begin IMMEDIATE, the reader's
// connections are query-only.
func openDB(ctx context.Context, path string, readOnly bool) (*sql.DB, error) {
	params := url.Values{
		"_journal_mode": {"WAL"},
		"_synchronous":  {"FULL"},
		"_busy_timeout": {fmt.Sprint(busyTimeout.Milliseconds())},
		"_foreign_keys": {"1"},
		"_pragma":       {"recursive_triggers(1)"},
	}
	if readOnly {
		params.Set("_query_only", "1")
	} else {
		params.Set("_txlock", "immediate")
	}
	name := url.URL{Scheme: "file", Path: "/" + strings.TrimPrefix(filepath.ToSlash(path), "/"), RawQuery: params.Encode()}
	db, err := sql.Open("sqlite", name.String())
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	var mode string
	if err := db.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		return nil, errors.Join(fmt.Errorf("open sqlite %s: %w", path, err), db.Close())
	}
	if mode != "wal" {
		return nil, errors.Join(fmt.Errorf("open sqlite %s: journal mode is %q, want wal", path, mode), db.Close())
	}
	return db, nil
}

// Close closes the database.
func (s *Store) Close() error {
	var errs []error
	if s.insert != nil {
		errs = append(errs, s.insert.Close())
	}
	if s.read != nil {
		errs = append(errs, s.read.Close())
	}
	if s.write != nil {
		errs = append(errs, s.write.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close event store: %w", err)
	}
	return nil
}

// DB returns the handle that writes to the store's file, for the read
// models and idempotency keys kept beside the events. It has one
// connection and begins transactions with BEGIN IMMEDIATE, so its
// transactions take turns with appends: never append while holding one.
func (s *Store) DB() *sql.DB { return s.write }

// ReadDB returns a pool of read-only connections to the store's file, which
// do not wait for writers.
func (s *Store) ReadDB() *sql.DB { return s.read }

// Appended returns a channel closed at the next append made through this
// Store; appends by other processes are not signalled.
func (s *Store) Appended() <-chan struct{} { return s.appended.Wait() }

// Append implements eventstore.Store.
func (s *Store) Append(ctx context.Context, stream string, expected eventstore.ExpectedVersion, events []eventstore.NewEvent, opts ...eventstore.AppendOption) ([]eventstore.Event, error) {
	return s.AppendKeyed(ctx, stream, expected, eventstore.KeyChange{}, events, true, opts...)
}

// AppendKeyed implements eventstore.Store: the key change is made in the
// append's transaction (changeKey). SQLite learns each event's position
// as it inserts it, so readBack changes nothing.
func (s *Store) AppendKeyed(ctx context.Context, stream string, expected eventstore.ExpectedVersion, key eventstore.KeyChange, events []eventstore.NewEvent, _ bool, opts ...eventstore.AppendOption) ([]eventstore.Event, error) {
	// Prepared before the write transaction, which other writers wait for.
	recorded, err := prepare.Events(stream, expected, events)
	if err != nil || len(recorded) == 0 {
		return nil, err
	}
	if err := s.batches.Do(ctx, &request{expected: expected, key: key, events: recorded, opts: eventstore.Options(opts)}); err != nil {
		return nil, Classify(err)
	}
	s.appended.Notify()
	return recorded, nil
}

// AppendNoReadBack implements eventstore.Store. SQLite learns each event's
// position as it inserts it, so it is Append without the result.
func (s *Store) AppendNoReadBack(ctx context.Context, stream string, expected eventstore.ExpectedVersion, events []eventstore.NewEvent, opts ...eventstore.AppendOption) error {
	_, err := s.Append(ctx, stream, expected, events, opts...)
	return err
}

// request is one append on its way through the batch queue.
type request struct {
	expected eventstore.ExpectedVersion
	key      eventstore.KeyChange
	events   []eventstore.Event
	opts     eventstore.AppendOptions
}

// writeBatch writes a batch of appends (groupcommit) in one transaction
// with one commit, the only sync of the file the batch costs: the appends
// that arrived while the previous batch was written. Each append runs
// inside a savepoint, which a failed one rolls back to, so it fails alone,
// with its own error, and the others commit. When the commit fails, every
// append of the batch fails with it.
func (s *Store) writeBatch(ctx context.Context, batch []*request) []error {
	errs := make([]error, len(batch))
	fail := func(err error) []error {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	// The batch is written for callers that may still wait when the one
	// writing it has gone.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), batchTimeout)
	defer cancel()
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return fail(fmt.Errorf("append: begin: %w", err))
	}
	defer tx.Rollback() // a no-op after Commit
	// Taken under the write lock, so times follow positions.
	now := eventstore.RecordTime(time.Now())
	insert := tx.StmtContext(ctx, s.insert)
	alone := len(batch) == 1
	for i, r := range batch {
		if alone {
			errs[i] = s.insertAll(ctx, tx, insert, now, r)
			continue
		}
		if _, err := tx.ExecContext(ctx, `SAVEPOINT append`); err != nil {
			return fail(fmt.Errorf("append: savepoint: %w", err))
		}
		errs[i] = s.insertAll(ctx, tx, insert, now, r)
		if errs[i] != nil {
			if _, err := tx.ExecContext(ctx, `ROLLBACK TO append`); err != nil {
				return fail(fmt.Errorf("append: roll back to savepoint: %w", err))
			}
		}
		if _, err := tx.ExecContext(ctx, `RELEASE append`); err != nil {
			return fail(fmt.Errorf("append: release savepoint: %w", err))
		}
	}
	if alone && errs[0] != nil {
		return errs
	}
	if err := tx.Commit(); err != nil {
		return fail(fmt.Errorf("append: commit: %w", err))
	}
	if !alone {
		s.batched.Add(int64(len(batch)))
		for _, err := range errs {
			if err != nil {
				s.failedInBatch.Add(1)
			}
		}
	}
	return errs
}

// batchTimeout bounds the writing of a batch.
const batchTimeout = 30 * time.Second

// insertAll writes the events of r, all of one stream, in tx and fills in
// their versions, positions, times and hashes, makes its key change and
// writes its answer if it has one. The transaction holds the file's write lock from its start, so
// the hash it reads as the previous one stays the stream's last until it
// commits.
func (s *Store) insertAll(ctx context.Context, tx *sql.Tx, insert *sql.Stmt, now time.Time, r *request) error {
	stream, events := r.events[0].Stream, r.events
	base, prev, err := baseVersion(ctx, tx, stream, r.expected)
	if err != nil {
		return err
	}
	if p := r.opts.PrevHash; p != nil && r.expected > eventstore.NoStream && *p != prev {
		return &eventstore.ConflictError{Stream: stream, Expected: r.expected}
	}
	recordedAt := now.Format(TimeLayout)
	for i := range events {
		e := &events[i]
		e.Version, e.RecordedAt, e.PrevHash = base+int64(i)+1, now, prev
		e.Hash = eventstore.HashEvent(prev, *e)
		err := insert.QueryRowContext(ctx, e.ID, stream, e.Version, e.Type, string(e.Data), string(e.RawMetadata), recordedAt, e.PrevHash[:], e.Hash[:]).Scan(&e.Position)
		if err != nil {
			return insertError(ctx, tx, r.expected, e, err)
		}
		prev = e.Hash
	}
	if err := changeKey(ctx, tx, stream, r.expected, r.key); err != nil {
		return err
	}
	if a := r.opts.Answer; a != nil {
		return insertAnswer(ctx, tx, now, stream, a)
	}
	return nil
}

// insertAnswer writes an append's answer (eventstore.WithAnswer), taking
// over a key only as idempotency's Save does: expired, or pending without
// an answer for too long.
func insertAnswer(ctx context.Context, tx *sql.Tx, now time.Time, stream string, a *eventstore.Answer) error {
	var one int
	err := tx.QueryRowContext(ctx, `
INSERT INTO idempotency_keys AS k (account_id, user_id, key, request_hash, status_code, response, created_at, session_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?10)
ON CONFLICT (account_id, user_id, key) DO UPDATE
    SET request_hash = excluded.request_hash, status_code = excluded.status_code, response = excluded.response,
        session_id = excluded.session_id, created_at = excluded.created_at
    WHERE k.created_at < ?8 OR (k.status_code IS NULL AND k.created_at < ?9)
RETURNING 1`, a.Account.String(), a.User.String(), a.Key, a.RequestHash, a.Status, a.Body, now.Format(TimeLayout),
		now.Add(-a.TTL).Format(TimeLayout), now.Add(-a.PendingTimeout).Format(TimeLayout),
		sql.NullString{String: a.Session.String(), Valid: a.Session != uuid.Nil}).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("append to stream %q: %w", stream, eventstore.ErrAnswerTaken)
	}
	if err != nil {
		return fmt.Errorf("append to stream %q: store answer: %w", stream, err)
	}
	return nil
}

// changeKey makes an append's key change in its transaction, after its
// events: a key created for a stream that has one already is a conflict
// (another append made it first), and nothing is written.
func changeKey(ctx context.Context, tx *sql.Tx, stream string, expected eventstore.ExpectedVersion, key eventstore.KeyChange) error {
	var err error
	switch {
	case key.Create != nil:
		_, err = tx.ExecContext(ctx, `INSERT INTO data_keys (stream_id, key_id, wrapped, master_key_id) VALUES (?, ?, ?, ?)`,
			stream, key.Create.ID, key.Create.Wrapped, key.Create.MasterKeyID)
		var sqliteErr *sqlite.Error
		if errors.As(err, &sqliteErr) && (sqliteErr.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY || sqliteErr.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE) {
			return &eventstore.ConflictError{Stream: stream, Expected: expected}
		}
	case key.Destroy:
		_, err = tx.ExecContext(ctx, `DELETE FROM data_keys WHERE stream_id = ?`, stream)
	}
	if err != nil {
		return fmt.Errorf("append to stream %q: change its data key: %w", stream, err)
	}
	return nil
}

// baseVersion returns the version the new events follow and the hash of
// the stream's event at that version (the zero hash for none). For Any that
// is the stream's current version. For an exact version v it is v, once
// the stream is known to reach v; a stream beyond v is caught by the
// insert.
func baseVersion(ctx context.Context, tx *sql.Tx, stream string, expected eventstore.ExpectedVersion) (int64, eventstore.Hash, error) {
	var (
		v    int64
		hash eventstore.Hash
		err  error
	)
	switch expected {
	case eventstore.NoStream:
		return 0, hash, nil
	case eventstore.Any:
		err = tx.QueryRowContext(ctx, `SELECT version, hash FROM events WHERE stream = ? ORDER BY version DESC LIMIT 1`, stream).Scan(&v, &hash)
	default:
		v = int64(expected)
		err = tx.QueryRowContext(ctx, `SELECT hash FROM events WHERE stream = ? AND version = ?`, stream, v).Scan(&hash)
		if errors.Is(err, sql.ErrNoRows) {
			return 0, hash, &eventstore.ConflictError{Stream: stream, Expected: expected}
		}
	}
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, hash, fmt.Errorf("append to stream %q: read its last event: %w", stream, err)
	}
	return v, hash, nil
}

// insertError explains a failed insert of e. The events_insert_only_new
// trigger refuses an event whose id or (stream, version) is taken, before
// the unique constraints would: either refusal is on (stream, version) when
// another event holds e's version, and then the stream was beyond the
// expected version. Otherwise (a reused event id, invalid JSON) the error
// is returned as it is.
func insertError(ctx context.Context, tx *sql.Tx, expected eventstore.ExpectedVersion, e *eventstore.Event, err error) error {
	var sqliteErr *sqlite.Error
	if errors.As(err, &sqliteErr) && (sqliteErr.Code() == sqlite3.SQLITE_CONSTRAINT_TRIGGER || sqliteErr.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE) {
		// Only the failed statement was undone; the transaction can still
		// look.
		taken, lookErr := hasVersion(ctx, tx, e.Stream, e.Version)
		if lookErr != nil {
			return errors.Join(fmt.Errorf("append to stream %q: %w", e.Stream, err), lookErr)
		}
		if taken {
			return &eventstore.ConflictError{Stream: e.Stream, Expected: expected}
		}
	}
	return fmt.Errorf("append event %s to stream %q: %w", e.ID, e.Stream, err)
}

// hasVersion reports whether the stream has an event at version v.
func hasVersion(ctx context.Context, tx *sql.Tx, stream string, v int64) (bool, error) {
	var found bool
	err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM events WHERE stream = ? AND version = ?)`, stream, v).Scan(&found)
	if err != nil {
		return false, fmt.Errorf("append to stream %q: look up version %d: %w", stream, v, err)
	}
	return found, nil
}

// selectEvent reads events with their stream's data key, if it has one.
const selectEvent = `SELECT position, id, stream, version, type, data, metadata, recorded_at, prev_hash, hash, key_id, wrapped, master_key_id
FROM events LEFT JOIN data_keys ON stream_id = stream `

// ReadStream implements eventstore.Store.
func (s *Store) ReadStream(ctx context.Context, stream string) ([]eventstore.Event, error) {
	return s.ReadStreamAfter(ctx, stream, 0)
}

// ReadStreamAfter implements eventstore.Store.
func (s *Store) ReadStreamAfter(ctx context.Context, stream string, after int64) ([]eventstore.Event, error) {
	events, err := s.query(ctx, selectEvent+`WHERE stream = ? AND version > ? ORDER BY version`, stream, after)
	if err != nil {
		return nil, fmt.Errorf("read stream %q after version %d: %w", stream, after, err)
	}
	return events, nil
}

// Snapshot implements eventstore.Store.
func (s *Store) Snapshot(ctx context.Context, stream string) (eventstore.Snapshot, bool, error) {
	snap := eventstore.Snapshot{Stream: stream}
	err := s.read.QueryRowContext(ctx, `SELECT version, event_id, data FROM snapshots WHERE stream = ?`, stream).
		Scan(&snap.Version, &snap.EventID, &snap.Data)
	if errors.Is(err, sql.ErrNoRows) {
		return eventstore.Snapshot{}, false, nil
	}
	if err != nil {
		return eventstore.Snapshot{}, false, fmt.Errorf("read snapshot of stream %q: %w", stream, err)
	}
	return snap, true, nil
}

// SaveSnapshot implements eventstore.Store. It writes through the write
// connection, taking its turn with appends.
func (s *Store) SaveSnapshot(ctx context.Context, snap eventstore.Snapshot) error {
	_, err := s.write.ExecContext(ctx, `INSERT INTO snapshots (stream, version, event_id, data) VALUES (?, ?, ?, ?)
ON CONFLICT (stream) DO UPDATE SET version = excluded.version, event_id = excluded.event_id, data = excluded.data`,
		snap.Stream, snap.Version, snap.EventID, snap.Data)
	if err != nil {
		return Classify(fmt.Errorf("save snapshot of stream %q at version %d: %w", snap.Stream, snap.Version, err))
	}
	return nil
}

// ReadAll implements eventstore.Store. Each call reads one snapshot of the
// file, and every position in it is final (see the package comment).
func (s *Store) ReadAll(ctx context.Context, after int64, limit int) ([]eventstore.Event, error) {
	events, err := s.query(ctx, selectEvent+`WHERE position > ? ORDER BY position LIMIT ?`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("read all after %d: %w", after, err)
	}
	return events, nil
}

// readAccountSQL reads an account's events through the index
// events_account (migrations/sqlite/00009_events_by_account.sql), whose
// expression it repeats word for word.
const readAccountSQL = selectEvent + `WHERE substr(stream, instr(stream, ':') + 1, 36) = ? AND position > ?
ORDER BY position LIMIT ?`

// ReadAccount implements eventstore.Store. As ReadAll, it reads one
// snapshot of the file, in which every position is final.
func (s *Store) ReadAccount(ctx context.Context, account uuid.UUID, after int64, limit int) ([]eventstore.Event, error) {
	events, err := s.query(ctx, readAccountSQL, account.String(), after, limit)
	if err != nil {
		return nil, fmt.Errorf("read account %s after %d: %w", account, after, err)
	}
	return events, nil
}

// Head returns the highest position in the log (0 when it is empty): every
// event at or below it can be read now.
func (s *Store) Head(ctx context.Context) (int64, error) {
	var head int64
	if err := s.read.QueryRowContext(ctx, `SELECT coalesce(max(position), 0) FROM events`).Scan(&head); err != nil {
		return 0, fmt.Errorf("read log head: %w", err)
	}
	return head, nil
}

func (s *Store) query(ctx context.Context, query string, args ...any) ([]eventstore.Event, error) {
	rows, err := s.read.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var events []eventstore.Event
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return nil, err
		}
		events = append(events, e)
	}
	return events, rows.Err()
}

func scanEvent(rows *sql.Rows) (eventstore.Event, error) {
	var (
		e                eventstore.Event
		data, meta, when string
		keyID, masterID  sql.NullString
		wrapped          []byte
	)
	if err := rows.Scan(&e.Position, &e.ID, &e.Stream, &e.Version, &e.Type, &data, &meta, &when, &e.PrevHash, &e.Hash, &keyID, &wrapped, &masterID); err != nil {
		return e, err
	}
	if keyID.Valid {
		e.DataKey = &eventstore.DataKey{ID: keyID.String, Wrapped: wrapped, MasterKeyID: masterID.String}
	}
	e.Data, e.RawMetadata = json.RawMessage(data), json.RawMessage(meta)
	var err error
	if e.Metadata, err = eventstore.ParseMetadata(e.RawMetadata); err != nil {
		return e, fmt.Errorf("decode metadata of event %s: %w", e.ID, err)
	}
	at, err := time.Parse(TimeLayout, when)
	if err != nil {
		return e, fmt.Errorf("decode time of event %s: %w", e.ID, err)
	}
	e.RecordedAt = at.UTC()
	return e, nil
}
