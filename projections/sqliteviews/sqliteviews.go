// Package sqliteviews keeps the ledger's read models in the embedded SQLite
// file, beside the events: the handoffs table, from which the team queue and
// the session history are read, and the projectors' checkpoints. It
// implements projections.Store with the same order and scoping as the
// PostgreSQL store.
//
// Changes go through the file's single write connection, whose
// transactions begin IMMEDIATE (sqlitestore.Store.DB): an Update holds the
// file's write lock from its first statement, so the checkpoint's
// compare-and-set and the rows it covers commit together or not at all, and
// two Updates never interleave. Queries go through the read-only pool
// (sqlitestore.Store.ReadDB), which in WAL mode reads the last committed
// state without waiting for a writer.
package sqliteviews

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/eventstore/sqlitestore"
	"github.com/resolutionflow/ledgerd/leader"
	"github.com/resolutionflow/ledgerd/projections"
	"github.com/resolutionflow/ledgerd/shred"
)

// Store is a projections.Store on a migrated SQLite file.
type Store struct {
	write *sql.DB
	read  *sql.DB
	// keys seals and opens the rows' notes; nil keeps them in plaintext.
	keys *shred.Keyring
}

var _ projections.Store = (*Store)(nil)

// New returns a store that writes through write, the file's single write
// connection with BEGIN IMMEDIATE transactions, and reads through read, a
// pool of read-only connections: sqlitestore.Store's DB and ReadDB.
func New(write, read *sql.DB) *Store {
	return &Store{write: write, read: read}
}

// WithKeys returns a store on s's file that keeps the notes of the rows it
// writes sealed under their session's data key, and opens them as it
// reads them (see docs/data-protection.md).
func (s *Store) WithKeys(keys *shred.Keyring) *Store {
	return &Store{write: s.write, read: s.read, keys: keys}
}

// SealNotes implements projections.Store.
func (s *Store) SealNotes(stream string, key *eventstore.DataKey, notes string) (string, error) {
	return s.keys.SealNotes(stream, key, notes)
}

const handoffColumns = `id, account_id, team_id, session_id, intent, engineer_notes, priority,
	status, created_by, created_at, claimed_by, claimed_at, withdrawn_at, notes_erased`

// readColumns are a page's columns: the handoff's, then its session's
// data key, joined by stream name (keyJoin), so that a page's notes are
// opened without another query.
const readColumns = `h.id, h.account_id, h.team_id, h.session_id, h.intent, h.engineer_notes, h.priority,
	h.status, h.created_by, h.created_at, h.claimed_by, h.claimed_at, h.withdrawn_at, h.notes_erased,
	k.key_id, k.wrapped, k.master_key_id`

// keyJoin is the FROM clause of a page: the handoffs, each with its
// session's data key, if any (one per stream, found by data_keys' primary
// key).
var keyJoin = ` FROM handoffs AS h LEFT JOIN data_keys AS k ON k.stream_id = ` +
	eventcodec.StreamNameSQL("h.account_id", "h.session_id")

// Pages are keyset pages served by an index each, as on PostgreSQL: the
// queue's order is that of the partial index handoffs_queue, whose
// queue_class column is projections.QueueClass, generated from intent and
// priority_rank; the history's is that of handoffs_history read
// backwards. Ids and times are text of fixed form (lower-case UUIDs,
// fixed-width UTC times), so they sort as the UUIDs and times of
// PostgreSQL do.
var (
	queueSQL = `SELECT ` + readColumns + keyJoin + `
WHERE h.account_id = ? AND h.team_id = ? AND h.status = 'open'`
	queueAfterSQL = ` AND (h.queue_class, h.created_at, h.id) > (?, ?, ?)`
	queueOrderSQL = ` ORDER BY h.queue_class, h.created_at, h.id LIMIT ?`

	// The account's queue: see pgviews.
	accountQueueSQL = `SELECT ` + readColumns + keyJoin + `
WHERE h.account_id = ? AND h.status = 'open'`

	historySQL = `SELECT ` + readColumns + keyJoin + `
WHERE h.account_id = ? AND h.session_id = ?`
	historyAfterSQL = ` AND (h.created_at, h.id) < (?, ?)`
	historyOrderSQL = ` ORDER BY h.created_at DESC, h.id DESC LIMIT ?`
)

// Queue implements projections.Queries.
func (s *Store) Queue(ctx context.Context, account, team uuid.UUID, page projections.Page) ([]domain.Handoff, error) {
	query, args := queueSQL+queueOrderSQL, []any{account.String(), team.String()}
	if c := page.After; c != nil {
		query = queueSQL + queueAfterSQL + queueOrderSQL
		args = append(args, c.Class, formatTime(c.CreatedAt), c.ID.String())
	}
	handoffs, err := s.queryOpened(ctx, query, append(args, page.Limit)...)
	if err != nil {
		return nil, fmt.Errorf("read queue of team %s: %w", team, err)
	}
	return handoffs, nil
}

// AccountQueue implements projections.Queries.
func (s *Store) AccountQueue(ctx context.Context, account uuid.UUID, page projections.Page) ([]domain.Handoff, error) {
	query, args := accountQueueSQL+queueOrderSQL, []any{account.String()}
	if c := page.After; c != nil {
		query = accountQueueSQL + queueAfterSQL + queueOrderSQL
		args = append(args, c.Class, formatTime(c.CreatedAt), c.ID.String())
	}
	handoffs, err := s.queryOpened(ctx, query, append(args, page.Limit)...)
	if err != nil {
		return nil, fmt.Errorf("read queue of account %s: %w", account, err)
	}
	return handoffs, nil
}

// History implements projections.Queries.
func (s *Store) History(ctx context.Context, account, session uuid.UUID, page projections.Page) ([]domain.Handoff, error) {
	query, args := historySQL+historyOrderSQL, []any{account.String(), session.String()}
	if c := page.After; c != nil {
		query = historySQL + historyAfterSQL + historyOrderSQL
		args = append(args, formatTime(c.CreatedAt), c.ID.String())
	}
	handoffs, err := s.queryOpened(ctx, query, append(args, page.Limit)...)
	if err != nil {
		return nil, fmt.Errorf("read history of session %s: %w", session, err)
	}
	return handoffs, nil
}

// Checkpoint implements projections.Store.
func (s *Store) Checkpoint(ctx context.Context, name string) (int64, error) {
	var pos int64
	err := s.read.QueryRowContext(ctx, `SELECT position FROM checkpoints WHERE name = ?`, name).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read checkpoint %q: %w", name, err)
	}
	return pos, nil
}

// skipsSQL returns the first and the last skipped event of a projector,
// each with the number of them.
const skipsSQL = `SELECT * FROM (SELECT projector, position, event_id, type, error, skipped_at, count(*) OVER ()
	FROM projection_skipped WHERE projector = ? ORDER BY position LIMIT 1)
UNION ALL
SELECT * FROM (SELECT projector, position, event_id, type, error, skipped_at, count(*) OVER ()
	FROM projection_skipped WHERE projector = ? ORDER BY position DESC LIMIT 1)
ORDER BY position`

// Skips implements projections.Store.
func (s *Store) Skips(ctx context.Context, name string) (projections.Skips, error) {
	sum, err := s.skips(ctx, name)
	if err != nil {
		return projections.Skips{}, fmt.Errorf("read skipped events of %q: %w", name, err)
	}
	return sum, nil
}

func (s *Store) skips(ctx context.Context, name string) (projections.Skips, error) {
	rows, err := s.read.QueryContext(ctx, skipsSQL, name, name)
	if err != nil {
		return projections.Skips{}, err
	}
	defer rows.Close()
	var (
		sum  projections.Skips
		ends []projections.Skipped
	)
	for rows.Next() {
		var (
			k  projections.Skipped
			at string
		)
		if err := rows.Scan(&k.Projector, &k.Position, &k.EventID, &k.Type, &k.Error, &at, &sum.Count); err != nil {
			return sum, err
		}
		if k.At, err = parseTime(at); err != nil {
			return sum, fmt.Errorf("skipped event %d: skipped_at: %w", k.Position, err)
		}
		ends = append(ends, k)
	}
	if len(ends) > 0 {
		sum.First, sum.Last = ends[0], ends[len(ends)-1]
	}
	return sum, rows.Err()
}

// Moving a checkpoint is a compare-and-set; it changes no row when the
// checkpoint is not at `from`. A missing row stands for position 0.
const (
	moveCheckpointSQL  = `UPDATE checkpoints SET position = ? WHERE name = ? AND position = ?`
	firstCheckpointSQL = `INSERT INTO checkpoints (name, position) VALUES (?, ?)
ON CONFLICT (name) DO UPDATE SET position = excluded.position WHERE checkpoints.position = 0`
)

// Update implements projections.Store. SQLite's one process leads alone
// (leader.NewLocal), so a checked fence, which it could not check, is
// refused.
func (s *Store) Update(ctx context.Context, fence leader.Fence, name string, from, to int64, fn func(projections.Tx) error) error {
	if to < from {
		return fmt.Errorf("move checkpoint %q back from %d to %d", name, from, to)
	}
	if fence.Checked() {
		return fmt.Errorf("move checkpoint %q: the embedded store cannot check lease %q's fence", name, fence.Name)
	}
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("move checkpoint %q from %d to %d: begin: %w", name, from, to, err)
	}
	defer tx.Rollback() // a no-op after Commit
	if err := moveCheckpoint(ctx, tx, name, from, to); err != nil {
		return fmt.Errorf("move checkpoint %q from %d to %d: %w", name, from, to, err)
	}
	if err := fn(&storeTx{tx: tx}); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("move checkpoint %q from %d to %d: commit: %w", name, from, to, err)
	}
	return nil
}

// Move implements projections.Store.
func (s *Store) Move(ctx context.Context, fence leader.Fence, name string, from, to int64) error {
	return s.Update(ctx, fence, name, from, to, func(projections.Tx) error { return nil })
}

// moveCheckpoint sets the checkpoint to `to` if it is at `from`, and fails
// with projections.ErrStaleCheckpoint if it is not.
func moveCheckpoint(ctx context.Context, tx *sql.Tx, name string, from, to int64) error {
	var (
		res sql.Result
		err error
	)
	switch from {
	case 0:
		res, err = tx.ExecContext(ctx, firstCheckpointSQL, name, to)
	default:
		res, err = tx.ExecContext(ctx, moveCheckpointSQL, to, name, from)
	}
	if err != nil {
		return err
	}
	moved, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if moved == 0 {
		return projections.ErrStaleCheckpoint
	}
	return nil
}

// storeTx is a projections.Tx in a SQLite write transaction.
type storeTx struct {
	tx *sql.Tx
}

func (t *storeTx) Handoff(ctx context.Context, id uuid.UUID) (domain.Handoff, bool, error) {
	handoffs, err := queryHandoffs(ctx, t.tx, `SELECT `+handoffColumns+` FROM handoffs WHERE id = ?`, id.String())
	if err != nil {
		return domain.Handoff{}, false, fmt.Errorf("read handoff %s: %w", id, err)
	}
	if len(handoffs) == 0 {
		return domain.Handoff{}, false, nil
	}
	return handoffs[0], true, nil
}

const putHandoffSQL = `INSERT INTO handoffs (` + handoffColumns + `, priority_rank, position)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
	account_id = excluded.account_id, team_id = excluded.team_id, session_id = excluded.session_id,
	intent = excluded.intent, engineer_notes = excluded.engineer_notes, priority = excluded.priority,
	status = excluded.status, created_by = excluded.created_by, created_at = excluded.created_at,
	claimed_by = excluded.claimed_by, claimed_at = excluded.claimed_at, withdrawn_at = excluded.withdrawn_at,
	notes_erased = excluded.notes_erased, priority_rank = excluded.priority_rank, position = excluded.position`

func (t *storeTx) PutHandoff(ctx context.Context, h domain.Handoff, position int64) error {
	_, err := t.tx.ExecContext(ctx, putHandoffSQL,
		h.ID.String(), h.AccountID.String(), h.TeamID.String(), h.SessionID.String(), string(h.Intent), h.Notes, string(h.Priority),
		string(h.Status), h.CreatedBy.String(), formatTime(h.CreatedAt), nullUUID(h.ClaimedBy), nullTime(h.ClaimedAt), nullTime(h.WithdrawnAt),
		h.NotesErased, h.Priority.Rank(), position)
	if err != nil {
		return fmt.Errorf("store handoff %s: %w", h.ID, err)
	}
	return nil
}

// addChunk is how many rows one INSERT of AddHandoffs writes.
const addChunk = 100

// addHandoffsSQL returns the INSERT of n handoff rows.
func addHandoffsSQL(n int) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO handoffs (` + handoffColumns + `, priority_rank, position) VALUES `)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
	}
	return b.String()
}

// AddHandoffs writes rows with multi-row INSERTs of addChunk rows.
func (t *storeTx) AddHandoffs(ctx context.Context, rows []projections.HandoffRow) error {
	var full *sql.Stmt
	args := make([]any, 0, 16*addChunk)
	for start := 0; start < len(rows); start += addChunk {
		chunk := rows[start:min(start+addChunk, len(rows))]
		args = args[:0]
		for _, r := range chunk {
			h := r.Handoff
			args = append(args, h.ID.String(), h.AccountID.String(), h.TeamID.String(), h.SessionID.String(), string(h.Intent), h.Notes, string(h.Priority),
				string(h.Status), h.CreatedBy.String(), formatTime(h.CreatedAt), nullUUID(h.ClaimedBy), nullTime(h.ClaimedAt), nullTime(h.WithdrawnAt),
				h.NotesErased, h.Priority.Rank(), r.Position)
		}
		var err error
		if len(chunk) == addChunk {
			if full == nil {
				if full, err = t.tx.PrepareContext(ctx, addHandoffsSQL(addChunk)); err != nil {
					return fmt.Errorf("prepare the insert of handoffs: %w", err)
				}
				defer full.Close()
			}
			_, err = full.ExecContext(ctx, args...)
		} else {
			_, err = t.tx.ExecContext(ctx, addHandoffsSQL(len(chunk)), args...)
		}
		if err != nil {
			return fmt.Errorf("store handoffs %d to %d of %d: %w", start+1, start+len(chunk), len(rows), err)
		}
	}
	return nil
}

// EraseNotes implements projections.Tx.
func (t *storeTx) EraseNotes(ctx context.Context, account, session uuid.UUID, position int64) error {
	_, err := t.tx.ExecContext(ctx, `UPDATE handoffs SET engineer_notes = '', notes_erased = 1, position = ?
WHERE account_id = ? AND session_id = ?`, position, account.String(), session.String())
	if err != nil {
		return fmt.Errorf("erase the notes of session %s: %w", session, err)
	}
	return nil
}

// Attempt runs fn inside a savepoint, which it rolls back to when fn
// fails.
func (t *storeTx) Attempt(ctx context.Context, fn func() error) (failed, err error) {
	if _, err := t.tx.ExecContext(ctx, `SAVEPOINT attempt`); err != nil {
		return nil, fmt.Errorf("savepoint: %w", err)
	}
	if failed = fn(); failed != nil {
		if _, err := t.tx.ExecContext(ctx, `ROLLBACK TO attempt`); err != nil {
			return nil, fmt.Errorf("roll back to savepoint: %w (after %w)", err, failed)
		}
	}
	if _, err := t.tx.ExecContext(ctx, `RELEASE attempt`); err != nil {
		return nil, fmt.Errorf("release savepoint: %w", err)
	}
	return failed, nil
}

const skipSQL = `INSERT INTO projection_skipped (projector, position, event_id, type, error, skipped_at)
VALUES (?, ?, ?, ?, ?, ?)`

func (t *storeTx) Skip(ctx context.Context, s projections.Skipped) error {
	if _, err := t.tx.ExecContext(ctx, skipSQL, s.Projector, s.Position, s.EventID, s.Type, s.Error, formatTime(s.At)); err != nil {
		return fmt.Errorf("record skipped event %d: %w", s.Position, err)
	}
	return nil
}

// Reset deletes the rows inside the rebuild's transaction; readers keep
// reading the old rows from their WAL snapshot until it commits.
func (t *storeTx) Reset(ctx context.Context) error {
	if _, err := t.tx.ExecContext(ctx, `DELETE FROM handoffs; DELETE FROM projection_skipped`); err != nil {
		return fmt.Errorf("reset handoffs: %w", err)
	}
	return nil
}

// querier is what reads run on: the read pool or a write transaction.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// queryHandoffs runs a query of handoff rows; callers pass UUIDs as
// their canonical text, the form the table holds.
func queryHandoffs(ctx context.Context, q querier, query string, args ...any) ([]domain.Handoff, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var handoffs []domain.Handoff
	for rows.Next() {
		h, err := scanHandoff(rows)
		if err != nil {
			return nil, err
		}
		handoffs = append(handoffs, h)
	}
	return handoffs, rows.Err()
}

// queryOpened runs a query of readColumns on the read pool: handoffs with
// their notes opened by their session's data key read with them
// (shred.Keyring.OpenHandoff).
func (s *Store) queryOpened(ctx context.Context, query string, args ...any) ([]domain.Handoff, error) {
	rows, err := s.read.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var handoffs []domain.Handoff
	for rows.Next() {
		var keyID, masterKeyID sql.NullString
		var wrapped []byte
		h, err := scanHandoff(rows, &keyID, &wrapped, &masterKeyID)
		if err != nil {
			return nil, err
		}
		var key *eventstore.DataKey
		if keyID.Valid && masterKeyID.Valid {
			key = &eventstore.DataKey{ID: keyID.String, Wrapped: wrapped, MasterKeyID: masterKeyID.String}
		}
		handoffs = append(handoffs, s.keys.OpenHandoff(h, key))
	}
	return handoffs, rows.Err()
}

// scanHandoff scans a handoff's columns, its notes as stored, then more.
func scanHandoff(rows *sql.Rows, more ...any) (domain.Handoff, error) {
	var (
		h                                 domain.Handoff
		intent, priority, status, created string
		claimedBy                         uuid.NullUUID
		claimedAt, withdrawnAt            sql.NullString
	)
	err := rows.Scan(append([]any{&h.ID, &h.AccountID, &h.TeamID, &h.SessionID, &intent, &h.Notes, &priority,
		&status, &h.CreatedBy, &created, &claimedBy, &claimedAt, &withdrawnAt, &h.NotesErased}, more...)...)
	if err != nil {
		return h, err
	}
	h.Intent, h.Priority, h.Status = domain.Intent(intent), domain.Priority(priority), domain.Status(status)
	h.ClaimedBy = claimedBy.UUID
	if h.CreatedAt, err = parseTime(created); err != nil {
		return h, fmt.Errorf("handoff %s: created_at: %w", h.ID, err)
	}
	if h.ClaimedAt, err = parseNullTime(claimedAt); err != nil {
		return h, fmt.Errorf("handoff %s: claimed_at: %w", h.ID, err)
	}
	if h.WithdrawnAt, err = parseNullTime(withdrawnAt); err != nil {
		return h, fmt.Errorf("handoff %s: withdrawn_at: %w", h.ID, err)
	}
	return h, nil
}

// formatTime stores a time as the schema says: UTC, microseconds, fixed
// width. Like PostgreSQL, the store keeps no finer precision.
func formatTime(t time.Time) string {
	return t.UTC().Format(sqlitestore.TimeLayout)
}

func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(sqlitestore.TimeLayout, s)
	if err != nil {
		return time.Time{}, err
	}
	return t.UTC(), nil
}

// nullUUID maps uuid.Nil, the domain's "unset", to SQL NULL.
func nullUUID(u uuid.UUID) any {
	if u == uuid.Nil {
		return nil
	}
	return u.String()
}

// nullTime maps the zero time, the domain's "unset", to SQL NULL.
func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return formatTime(t)
}

// parseNullTime maps SQL NULL to the zero time.
func parseNullTime(s sql.NullString) (time.Time, error) {
	if !s.Valid {
		return time.Time{}, nil
	}
	return parseTime(s.String)
}
