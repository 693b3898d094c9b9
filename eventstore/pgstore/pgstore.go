// Package pgstore is the PostgreSQL event store.
//
// An append that arrives alone is one INSERT statement: the stream's
// current version, the expected-version check and the rows are one round
// trip, and a lost race surfaces as the unique violation on (stream,
// version), which Append turns into *eventstore.ConflictError. Appends that
// arrive while another is written are written together, one statement and
// one commit for all of them (group commit, see writeBatch). Global
// positions come from a sequence, so appends to different streams never
// wait on each other's locks.
//
// Reading the whole log, or an account's part of it, is gap-safe without
// any lock on the write path: see ReadAll, ReadAccount and openAppends.
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/internal/groupcommit"
	"github.com/resolutionflow/ledgerd/internal/pgerr"
	"github.com/resolutionflow/ledgerd/internal/poll"
)

// Store is an eventstore.Store on a PostgreSQL pool.
type Store struct {
	pool     *pgxpool.Pool
	appended poll.Signal
	batches  groupcommit.Queue[*request]
	// batched counts the appends written in a batch with others, and
	// leftOut those a batch left to be written alone.
	batched, leftOut atomic.Int64
}

var _ eventstore.Store = (*Store)(nil)

// New returns a store on a migrated database.
//
// An append is written at once, alone, while the pool has a connection
// for it; appends that arrive while every connection of the pool is
// writing are gathered into the next batch (group commit). Batching
// sooner, with fewer writers than connections, measured slower at 16
// writers on a 2-core machine (docs/performance.md): PostgreSQL's commits
// of single rows overlap well as long as connections are free.
func New(pool *pgxpool.Pool) *Store {
	s := &Store{pool: pool}
	s.batches.Write = s.writeBatch
	s.batches.Writers = int(pool.Config().MaxConns)
	return s
}

// Appended returns a channel closed at the next append made through this
// Store; appends by other processes are not signalled.
func (s *Store) Appended() <-chan struct{} { return s.appended.Wait() }

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
	// collectEvents (pgx.CollectRows) reports the query's error.
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
	// collectEvents (pgx.CollectRows) reports the query's error.
	rows, _ := s.pool.Query(ctx, readAccountSQL, account.String(), after, head, limit)
	events, err := collectEvents(rows)
	if err != nil {
		return nil, pgerr.Classify(fmt.Errorf("read account %s after %d: %w", account, after, err))
	}
	return events, nil
}

// readRange reads up to limit events with positions in (after, upTo].
func (s *Store) readRange(ctx context.Context, after, upTo int64, limit int) ([]eventstore.Event, error) {
	// collectEvents (pgx.CollectRows) reports the query's error.
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
		if !poll.Sleep(ctx, wait, nil) {
			return 0, fmt.Errorf("wait for %d writers below position %d: %w", len(writers), last, ctx.Err())
		}
		wait = min(2*wait, 20*time.Millisecond)
		// pgx.CollectRows reports the query's error.
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
