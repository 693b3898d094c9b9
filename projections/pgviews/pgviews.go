// Package pgviews keeps the ledger's read models in PostgreSQL: the handoffs
// table, from which the team queue and the session history are read, and the
// projectors' checkpoints. It implements projections.Store on a pgx pool.
package pgviews

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/internal/pgerr"
	"github.com/resolutionflow/ledgerd/leader"
	"github.com/resolutionflow/ledgerd/leader/pgleader"
	"github.com/resolutionflow/ledgerd/projections"
	"github.com/resolutionflow/ledgerd/shred"
)

// Store is a projections.Store on a PostgreSQL pool of a migrated database.
type Store struct {
	pool *pgxpool.Pool
	// keys seals and opens the rows' notes; nil keeps them in plaintext.
	keys *shred.Keyring
}

var _ projections.Store = (*Store)(nil)

// New returns a store on pool that keeps notes in plaintext.
func New(pool *pgxpool.Pool) *Store {
	return &Store{pool: pool}
}

// WithKeys returns a store on s's pool that keeps the notes of the rows it
// writes sealed under their session's data key, and opens them as it
// reads them (see docs/data-protection.md).
func (s *Store) WithKeys(keys *shred.Keyring) *Store {
	return &Store{pool: s.pool, keys: keys}
}

// SealNotes implements projections.Store.
func (s *Store) SealNotes(stream string, key *eventstore.DataKey, notes string) (string, error) {
	return s.keys.SealNotes(stream, key, notes)
}

const handoffColumns = `id, account_id, team_id, session_id, intent, engineer_notes, priority,
	status, created_by, created_at, claimed_by, claimed_at, withdrawn_at, notes_erased`

// readColumns are a page's columns: the handoff's, then its session's
// data key, joined by stream name (keyJoin), so that a page's notes are
// opened without another round trip.
const (
	readColumns = `h.id, h.account_id, h.team_id, h.session_id, h.intent, h.engineer_notes, h.priority,
	h.status, h.created_by, h.created_at, h.claimed_by, h.claimed_at, h.withdrawn_at, h.notes_erased,
	k.key_id, k.wrapped, k.master_key_id`
)

// keyJoin is the FROM clause of a page: the handoffs, each with its
// session's data key, if any (one per stream, found by data_keys' primary
// key).
var keyJoin = ` FROM handoffs AS h LEFT JOIN LATERAL (SELECT key_id, wrapped, master_key_id FROM data_keys
	WHERE stream_id = (` + eventcodec.StreamNameSQL("h.account_id::text", "h.session_id::text") + `) COLLATE "C") AS k ON true`

// Pages are keyset pages served by an index each: the queue's order is
// that of the partial index handoffs_queue, whose queue_class column is
// projections.QueueClass, generated from intent and priority_rank; the
// history's is that of handoffs_history read backwards. A page after a
// cursor starts with a row comparison against the cursor, which the index
// scan starts from, so a late page costs what the first does.
var (
	queueSQL = `SELECT ` + readColumns + keyJoin + `
WHERE h.account_id = $1 AND h.team_id = $2 AND h.status = 'open'`
	queueAfterSQL = ` AND (h.queue_class, h.created_at, h.id) > ($4, $5, $6)`
	queueOrderSQL = ` ORDER BY h.queue_class, h.created_at, h.id LIMIT $3`

	// The account's queue is read through handoffs_queue too, whose
	// first column is the account: the account's open handoffs of every
	// team, sorted. Open handoffs are at most one per session, so the
	// sort is bounded by the account's open sessions.
	accountQueueSQL = `SELECT ` + readColumns + keyJoin + `
WHERE h.account_id = $1 AND h.status = 'open'`
	accountQueueAfterSQL = ` AND (h.queue_class, h.created_at, h.id) > ($3, $4, $5)`
	accountQueueOrderSQL = ` ORDER BY h.queue_class, h.created_at, h.id LIMIT $2`

	historySQL = `SELECT ` + readColumns + keyJoin + `
WHERE h.account_id = $1 AND h.session_id = $2`
	historyAfterSQL = ` AND (h.created_at, h.id) < ($4, $5)`
	historyOrderSQL = ` ORDER BY h.created_at DESC, h.id DESC LIMIT $3`
)

// Queue implements projections.Queries.
func (s *Store) Queue(ctx context.Context, account, team uuid.UUID, page projections.Page) ([]domain.Handoff, error) {
	query, args := queueSQL+queueOrderSQL, []any{pgUUID(account), pgUUID(team), page.Limit}
	if c := page.After; c != nil {
		query = queueSQL + queueAfterSQL + queueOrderSQL
		args = append(args, c.Class, c.CreatedAt, pgUUID(c.ID))
	}
	// pgx.CollectRows reports the query's error.
	rows, _ := s.pool.Query(ctx, query, args...)
	handoffs, err := pgx.CollectRows(rows, s.scanOpened)
	if err != nil {
		return nil, pgerr.Classify(fmt.Errorf("read queue of team %s: %w", team, err))
	}
	return handoffs, nil
}

// AccountQueue implements projections.Queries.
func (s *Store) AccountQueue(ctx context.Context, account uuid.UUID, page projections.Page) ([]domain.Handoff, error) {
	query, args := accountQueueSQL+accountQueueOrderSQL, []any{pgUUID(account), page.Limit}
	if c := page.After; c != nil {
		query = accountQueueSQL + accountQueueAfterSQL + accountQueueOrderSQL
		args = append(args, c.Class, c.CreatedAt, pgUUID(c.ID))
	}
	// pgx.CollectRows reports the query's error.
	rows, _ := s.pool.Query(ctx, query, args...)
	handoffs, err := pgx.CollectRows(rows, s.scanOpened)
	if err != nil {
		return nil, pgerr.Classify(fmt.Errorf("read queue of account %s: %w", account, err))
	}
	return handoffs, nil
}

// History implements projections.Queries.
func (s *Store) History(ctx context.Context, account, session uuid.UUID, page projections.Page) ([]domain.Handoff, error) {
	query, args := historySQL+historyOrderSQL, []any{pgUUID(account), pgUUID(session), page.Limit}
	if c := page.After; c != nil {
		query = historySQL + historyAfterSQL + historyOrderSQL
		args = append(args, c.CreatedAt, pgUUID(c.ID))
	}
	// pgx.CollectRows reports the query's error.
	rows, _ := s.pool.Query(ctx, query, args...)
	handoffs, err := pgx.CollectRows(rows, s.scanOpened)
	if err != nil {
		return nil, pgerr.Classify(fmt.Errorf("read history of session %s: %w", session, err))
	}
	return handoffs, nil
}

// Checkpoint implements projections.Store.
func (s *Store) Checkpoint(ctx context.Context, name string) (int64, error) {
	var pos int64
	err := s.pool.QueryRow(ctx, `SELECT position FROM checkpoints WHERE name = $1`, name).Scan(&pos)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, pgerr.Classify(fmt.Errorf("read checkpoint %q: %w", name, err))
	}
	return pos, nil
}

// skipsSQL returns the first and the last skipped event of a projector,
// each with the number of them.
const skipsSQL = `SELECT * FROM (SELECT projector, position, event_id, type, error, skipped_at, count(*) OVER ()
	FROM projection_skipped WHERE projector = $1 ORDER BY position LIMIT 1) AS first
UNION ALL
SELECT * FROM (SELECT projector, position, event_id, type, error, skipped_at, count(*) OVER ()
	FROM projection_skipped WHERE projector = $1 ORDER BY position DESC LIMIT 1) AS last
ORDER BY position`

// Skips implements projections.Store.
func (s *Store) Skips(ctx context.Context, name string) (projections.Skips, error) {
	// pgx.CollectRows reports the query's error.
	rows, _ := s.pool.Query(ctx, skipsSQL, name)
	var sum projections.Skips
	ends, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (projections.Skipped, error) {
		var k projections.Skipped
		err := row.Scan(&k.Projector, &k.Position, &k.EventID, &k.Type, &k.Error, &k.At, &sum.Count)
		k.At = k.At.UTC()
		return k, err
	})
	if err != nil {
		return projections.Skips{}, pgerr.Classify(fmt.Errorf("read skipped events of %q: %w", name, err))
	}
	if len(ends) > 0 {
		sum.First, sum.Last = ends[0], ends[len(ends)-1]
	}
	return sum, nil
}

// Moving a checkpoint is a compare-and-set. It runs before fn, so a second
// projector blocks on the checkpoint's row lock and then fails, instead of
// doing its work in vain. A missing row stands for position 0.
const (
	moveCheckpointSQL  = `UPDATE checkpoints SET position = $3 WHERE name = $1 AND position = $2`
	firstCheckpointSQL = `INSERT INTO checkpoints (name, position) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position WHERE checkpoints.position = 0`
)

// Update implements projections.Store. The fence is checked by the
// transaction's last statement, so that the lease is known valid as late as
// possible before the commit.
func (s *Store) Update(ctx context.Context, fence leader.Fence, name string, from, to int64, fn func(projections.Tx) error) error {
	if to < from {
		return fmt.Errorf("move checkpoint %q back from %d to %d", name, from, to)
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := moveCheckpoint(ctx, tx, name, from, to)
		if err != nil {
			return fmt.Errorf("move checkpoint %q from %d to %d: %w", name, from, to, err)
		}
		if tag == 0 {
			return fmt.Errorf("move checkpoint %q from %d to %d: %w", name, from, to, projections.ErrStaleCheckpoint)
		}
		stx := newStoreTx(tx)
		if err := fn(stx); err != nil {
			return err
		}
		if err := stx.flush(ctx); err != nil {
			return err
		}
		if err := pgleader.CheckFence(ctx, tx, fence); err != nil {
			return fmt.Errorf("move checkpoint %q from %d to %d: %w", name, from, to, err)
		}
		return nil
	})
}

// Move implements projections.Store.
func (s *Store) Move(ctx context.Context, fence leader.Fence, name string, from, to int64) error {
	return s.Update(ctx, fence, name, from, to, func(projections.Tx) error { return nil })
}

// moveCheckpoint sets the checkpoint to `to` if it is at `from`, and returns
// the number of rows changed: 0 when it was not.
func moveCheckpoint(ctx context.Context, tx pgx.Tx, name string, from, to int64) (int64, error) {
	if from == 0 {
		tag, err := tx.Exec(ctx, firstCheckpointSQL, name, to)
		return tag.RowsAffected(), err
	}
	tag, err := tx.Exec(ctx, moveCheckpointSQL, name, from, to)
	return tag.RowsAffected(), err
}

// maxPending bounds the handoff rows a storeTx holds back.
const maxPending = 500

// storeTx is a projections.Tx in a PostgreSQL transaction. It holds the
// rows put back, the last version of each, and writes them with one
// statement: when it holds maxPending of them and when the Update's fn
// returns. A handoff read back before then comes from the rows held, so a
// batch of events costs one write however many of them touch the same
// handoff. The error of a held-back write is returned then.
type storeTx struct {
	tx      pgx.Tx
	pending []pendingRow
	index   map[uuid.UUID]int // handoff id -> its row in pending
}

type pendingRow struct {
	h        domain.Handoff
	position int64
}

func newStoreTx(tx pgx.Tx) *storeTx {
	return &storeTx{tx: tx, index: map[uuid.UUID]int{}}
}

func (t *storeTx) Handoff(ctx context.Context, id uuid.UUID) (domain.Handoff, bool, error) {
	if i, ok := t.index[id]; ok {
		return t.pending[i].h, true, nil
	}
	// pgx.CollectExactlyOneRow reports the query's error.
	rows, _ := t.tx.Query(ctx, `SELECT `+handoffColumns+` FROM handoffs WHERE id = $1`, pgUUID(id))
	h, err := pgx.CollectExactlyOneRow(rows, scanHandoff)
	if errors.Is(err, pgx.ErrNoRows) {
		return domain.Handoff{}, false, nil
	}
	if err != nil {
		return domain.Handoff{}, false, fmt.Errorf("read handoff %s: %w", id, err)
	}
	return h, true, nil
}

func (t *storeTx) PutHandoff(ctx context.Context, h domain.Handoff, position int64) error {
	row := pendingRow{h: h, position: position}
	if i, ok := t.index[h.ID]; ok {
		t.pending[i] = row
		return nil
	}
	t.index[h.ID] = len(t.pending)
	t.pending = append(t.pending, row)
	if len(t.pending) >= maxPending {
		return t.flush(ctx)
	}
	return nil
}

// putHandoffsSQL inserts or replaces a set of handoffs given as one array
// per column; no two of them may have the same id.
const putHandoffsSQL = `INSERT INTO handoffs (` + handoffColumns + `, priority_rank, position)
SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[],
	$8::text[], $9::uuid[], $10::timestamptz[], $11::uuid[], $12::timestamptz[], $13::timestamptz[],
	$14::boolean[], $15::integer[], $16::bigint[])
ON CONFLICT (id) DO UPDATE SET
	account_id = EXCLUDED.account_id, team_id = EXCLUDED.team_id, session_id = EXCLUDED.session_id,
	intent = EXCLUDED.intent, engineer_notes = EXCLUDED.engineer_notes, priority = EXCLUDED.priority,
	status = EXCLUDED.status, created_by = EXCLUDED.created_by, created_at = EXCLUDED.created_at,
	claimed_by = EXCLUDED.claimed_by, claimed_at = EXCLUDED.claimed_at, withdrawn_at = EXCLUDED.withdrawn_at,
	notes_erased = EXCLUDED.notes_erased, priority_rank = EXCLUDED.priority_rank, position = EXCLUDED.position`

// flush writes the rows held back.
func (t *storeTx) flush(ctx context.Context) error {
	n := len(t.pending)
	if n == 0 {
		return nil
	}
	ids, accounts, teams, sessions := make([]pgtype.UUID, n), make([]pgtype.UUID, n), make([]pgtype.UUID, n), make([]pgtype.UUID, n)
	intents, notes, priorities, statuses := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	creators, claimers := make([]pgtype.UUID, n), make([]pgtype.UUID, n)
	created, claimed, withdrawn := make([]pgtype.Timestamptz, n), make([]pgtype.Timestamptz, n), make([]pgtype.Timestamptz, n)
	ranks, positions, erased := make([]int32, n), make([]int64, n), make([]bool, n)
	for i, r := range t.pending {
		h := r.h
		ids[i], accounts[i], teams[i], sessions[i] = pgUUID(h.ID), pgUUID(h.AccountID), pgUUID(h.TeamID), pgUUID(h.SessionID)
		intents[i], notes[i], priorities[i], statuses[i] = string(h.Intent), h.Notes, string(h.Priority), string(h.Status)
		creators[i], claimers[i] = pgUUID(h.CreatedBy), pgNullUUID(h.ClaimedBy)
		created[i], claimed[i], withdrawn[i] = pgTime(h.CreatedAt), pgTime(h.ClaimedAt), pgTime(h.WithdrawnAt)
		ranks[i], positions[i], erased[i] = int32(h.Priority.Rank()), r.position, h.NotesErased
	}
	_, err := t.tx.Exec(ctx, putHandoffsSQL, ids, accounts, teams, sessions, intents, notes, priorities,
		statuses, creators, created, claimers, claimed, withdrawn, erased, ranks, positions)
	t.discard()
	if err != nil {
		return fmt.Errorf("store %d handoffs: %w", n, err)
	}
	return nil
}

// EraseNotes implements projections.Tx, after writing the rows held back.
func (t *storeTx) EraseNotes(ctx context.Context, account, session uuid.UUID, position int64) error {
	if err := t.flush(ctx); err != nil {
		return err
	}
	_, err := t.tx.Exec(ctx, `UPDATE handoffs SET engineer_notes = '', notes_erased = true, position = $3
WHERE account_id = $1 AND session_id = $2`, pgUUID(account), pgUUID(session), position)
	if err != nil {
		return fmt.Errorf("erase the notes of session %s: %w", session, err)
	}
	return nil
}

// discard drops the rows held back.
func (t *storeTx) discard() {
	clear(t.index)
	t.pending = t.pending[:0]
}

// Attempt runs fn inside a savepoint, after writing the rows held back
// before it, and writes fn's rows before it releases the savepoint, so
// that a row the database refuses fails fn's attempt and no other.
func (t *storeTx) Attempt(ctx context.Context, fn func() error) (failed, err error) {
	if err := t.flush(ctx); err != nil {
		return nil, err
	}
	sp, err := t.tx.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("savepoint: %w", err)
	}
	if failed = fn(); failed == nil {
		failed = t.flush(ctx)
	}
	if failed != nil {
		t.discard()
		if err := sp.Rollback(ctx); err != nil {
			return nil, fmt.Errorf("roll back to savepoint: %w (after %w)", err, failed)
		}
		return failed, nil
	}
	if err := sp.Commit(ctx); err != nil {
		return nil, fmt.Errorf("release savepoint: %w", err)
	}
	return nil, nil
}

// addColumns are the columns AddHandoffs copies; queue_class is generated.
var addColumns = []string{"id", "account_id", "team_id", "session_id", "intent", "engineer_notes", "priority",
	"status", "created_by", "created_at", "claimed_by", "claimed_at", "withdrawn_at", "notes_erased", "priority_rank", "position"}

// AddHandoffs copies rows into the handoffs table with COPY, after the
// rows held back.
func (t *storeTx) AddHandoffs(ctx context.Context, rows []projections.HandoffRow) error {
	if err := t.flush(ctx); err != nil {
		return err
	}
	values := make([]any, len(addColumns))
	_, err := t.tx.CopyFrom(ctx, pgx.Identifier{"handoffs"}, addColumns, pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) {
		h := rows[i].Handoff
		values[0], values[1], values[2], values[3] = pgUUID(h.ID), pgUUID(h.AccountID), pgUUID(h.TeamID), pgUUID(h.SessionID)
		values[4], values[5], values[6], values[7] = string(h.Intent), h.Notes, string(h.Priority), string(h.Status)
		values[8], values[9], values[10] = pgUUID(h.CreatedBy), pgTime(h.CreatedAt), pgNullUUID(h.ClaimedBy)
		values[11], values[12], values[13] = pgTime(h.ClaimedAt), pgTime(h.WithdrawnAt), h.NotesErased
		values[14], values[15] = int32(h.Priority.Rank()), rows[i].Position
		return values, nil
	}))
	if err != nil {
		return fmt.Errorf("copy %d handoffs: %w", len(rows), err)
	}
	return nil
}

const skipSQL = `INSERT INTO projection_skipped (projector, position, event_id, type, error, skipped_at)
VALUES ($1, $2, $3, $4, $5, $6)`

func (t *storeTx) Skip(ctx context.Context, s projections.Skipped) error {
	if _, err := t.tx.Exec(ctx, skipSQL, s.Projector, s.Position, s.EventID, s.Type, s.Error, s.At); err != nil {
		return fmt.Errorf("record skipped event %d: %w", s.Position, err)
	}
	return nil
}

// Reset deletes rows rather than truncating the table, so that readers keep
// reading the old rows, without waiting, until the rebuild commits.
func (t *storeTx) Reset(ctx context.Context) error {
	t.discard()
	if _, err := t.tx.Exec(ctx, `DELETE FROM handoffs; DELETE FROM projection_skipped`); err != nil {
		return fmt.Errorf("reset handoffs: %w", err)
	}
	return nil
}

// scanOpened scans a row of readColumns: a handoff with its notes opened
// by its session's data key read with it (shred.Keyring.OpenHandoff).
func (s *Store) scanOpened(row pgx.CollectableRow) (domain.Handoff, error) {
	var keyID, masterKeyID *string
	var wrapped []byte
	h, err := scanColumns(row, &keyID, &wrapped, &masterKeyID)
	if err != nil {
		return h, err
	}
	var key *eventstore.DataKey
	if keyID != nil && masterKeyID != nil {
		key = &eventstore.DataKey{ID: *keyID, Wrapped: wrapped, MasterKeyID: *masterKeyID}
	}
	return s.keys.OpenHandoff(h, key), nil
}

// scanHandoff scans a row of handoffColumns, its notes as stored.
func scanHandoff(row pgx.CollectableRow) (domain.Handoff, error) {
	return scanColumns(row)
}

// scanColumns scans a handoff's columns, then more.
func scanColumns(row pgx.CollectableRow, more ...any) (domain.Handoff, error) {
	var (
		h                        domain.Handoff
		intent, priority, status string
		claimedBy                *uuid.UUID
		createdAt                time.Time
		claimedAt, withdrawnAt   *time.Time
	)
	err := row.Scan(append([]any{&h.ID, &h.AccountID, &h.TeamID, &h.SessionID, &intent, &h.Notes, &priority,
		&status, &h.CreatedBy, &createdAt, &claimedBy, &claimedAt, &withdrawnAt, &h.NotesErased}, more...)...)
	if err != nil {
		return h, err
	}
	h.Intent, h.Priority, h.Status = domain.Intent(intent), domain.Priority(priority), domain.Status(status)
	h.CreatedAt = createdAt.UTC()
	if claimedBy != nil {
		h.ClaimedBy = *claimedBy
	}
	h.ClaimedAt, h.WithdrawnAt = utc(claimedAt), utc(withdrawnAt)
	return h, nil
}

// pgUUID is u as a query argument, uuid.Nil included: it is a valid id of
// a column that is never NULL. pgx encodes a pgtype.UUID directly, where a
// uuid.UUID would go through its text form.
func pgUUID(u uuid.UUID) pgtype.UUID {
	return pgtype.UUID{Bytes: u, Valid: true}
}

// pgNullUUID is u as the argument of a nullable column, claimed_by, where
// uuid.Nil is the domain's "unset" and is stored as SQL NULL.
func pgNullUUID(u uuid.UUID) pgtype.UUID {
	return pgtype.UUID{Bytes: u, Valid: u != uuid.Nil}
}

// pgTime is t as a query argument: the zero time, the domain's "unset", is
// SQL NULL.
func pgTime(t time.Time) pgtype.Timestamptz {
	return pgtype.Timestamptz{Time: t, Valid: !t.IsZero()}
}

// utc maps SQL NULL to the zero time and any other time to UTC.
func utc(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}
