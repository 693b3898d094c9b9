// Package sqliteidem is the idempotency.Store of the embedded mode: keys
// and their answers in the idempotency_keys table of the SQLite file.
package sqliteidem

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore/sqlitestore"
	"github.com/resolutionflow/ledgerd/idempotency"
)

// Store keeps keys in the idempotency_keys table of the embedded
// SQLite file. Times are text in the file's fixed-width UTC form, so they
// compare as text.
type Store struct {
	db      *sql.DB
	sealing idempotency.Sealing
}

var _ idempotency.Store = (*Store)(nil)

// New returns a store on the embedded SQLite file through db, the
// file's write handle (sqlitestore.Store.DB): its transactions begin
// IMMEDIATE, so Save checks and takes a key under the file's write lock and
// two answers for one key are never both stored.
func New(db *sql.DB, opts ...idempotency.Option) *Store {
	return &Store{db: db, sealing: idempotency.NewSealing(opts)}
}

// sqliteSelectSQL reads a key's record with its session's data key, if
// any, to open its answer with.
var sqliteSelectSQL = `
SELECT i.request_hash, coalesce(i.status_code, 0), coalesce(i.response, x''), i.session_id, d.key_id, d.wrapped, d.master_key_id
FROM idempotency_keys AS i LEFT JOIN data_keys AS d ON d.stream_id = ` + eventcodec.StreamNameSQL("i.account_id", "i.session_id") + `
WHERE i.account_id = ? AND i.user_id = ? AND i.key = ?`

// rowQuerier is the write handle or one of its transactions.
type rowQuerier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// read runs query, a sqliteSelectSQL for owner's key, on q and returns the
// record with its answer opened; ok is false when the answer cannot be
// opened (its session was erased), and the record then holds the answer
// as stored, for the caller to delete the key by.
func (s *Store) read(ctx context.Context, q rowQuerier, owner idempotency.Owner, key, query string, args ...any) (rec idempotency.Record, ok bool, err error) {
	var (
		session    uuid.NullUUID
		id, master sql.NullString
		wrapped    []byte
	)
	err = q.QueryRowContext(ctx, query, args...).Scan(&rec.RequestHash, &rec.StatusCode, &rec.Response,
		&session, &id, &wrapped, &master)
	if err != nil {
		return idempotency.Record{}, false, fmt.Errorf("read idempotency key: %w", err)
	}
	var dk idempotency.StoredKey
	if id.Valid && master.Valid {
		dk = idempotency.StoredKey{ID: &id.String, Wrapped: wrapped, MasterKeyID: &master.String}
	}
	body, ok := s.sealing.OpenAnswer(owner.Account, session.UUID, dk.Key(), rec.Response)
	if !ok {
		return rec, false, nil
	}
	rec.Response = body
	return rec, true, nil
}

// sealAnswer returns body as stored for owner's request: sealed under its
// session's data key, read first, when the store seals answers.
func (s *Store) sealAnswer(ctx context.Context, owner idempotency.Owner, body []byte) ([]byte, error) {
	if s.sealing.Keys == nil || owner.Session == uuid.Nil {
		return body, nil
	}
	var (
		id, master sql.NullString
		wrapped    []byte
	)
	err := s.db.QueryRowContext(ctx, `SELECT key_id, wrapped, master_key_id FROM data_keys WHERE stream_id = ?`,
		eventcodec.StreamName(owner.Account, owner.Session)).Scan(&id, &wrapped, &master)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, sqlitestore.Classify(fmt.Errorf("read the data key of an idempotent response: %w", err))
	}
	var dk idempotency.StoredKey
	if id.Valid && master.Valid {
		dk = idempotency.StoredKey{ID: &id.String, Wrapped: wrapped, MasterKeyID: &master.String}
	}
	return s.sealing.SealAnswer(owner, dk.Key(), body)
}

// nullSession is a session id as stored: NULL for uuid.Nil.
func nullSession(u uuid.UUID) sql.NullString {
	return sql.NullString{String: u.String(), Valid: u != uuid.Nil}
}

// DeleteSession implements idempotency.Store.
func (s *Store) DeleteSession(ctx context.Context, account, session uuid.UUID) (int64, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM idempotency_keys WHERE account_id = ? AND session_id = ?`, account.String(), session.String())
	if err != nil {
		return 0, sqlitestore.Classify(fmt.Errorf("delete the idempotency keys of session %s: %w", session, err))
	}
	return res.RowsAffected()
}

// Sweep implements idempotency.Store.
func (s *Store) Sweep(ctx context.Context) (int64, error) {
	expired := time.Now().UTC().Add(-idempotency.TTL).Format(sqlitestore.TimeLayout)
	res, err := s.db.ExecContext(ctx, `DELETE FROM idempotency_keys WHERE created_at < ?`, expired)
	if err != nil {
		return 0, fmt.Errorf("sweep expired idempotency keys: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("sweep expired idempotency keys: %w", err)
	}
	return n, nil
}

// Lookup implements idempotency.Store.
func (s *Store) Lookup(ctx context.Context, owner idempotency.Owner, key string) (idempotency.Record, bool, error) {
	now := time.Now().UTC()
	rec, ok, err := s.read(ctx, s.db, owner, key, sqliteSelectSQL+` AND i.created_at >= ? AND (i.status_code IS NOT NULL OR i.created_at >= ?)`,
		owner.Account.String(), owner.User.String(), key,
		now.Add(-idempotency.TTL).Format(sqlitestore.TimeLayout), now.Add(-idempotency.PendingTimeout).Format(sqlitestore.TimeLayout))
	if errors.Is(err, sql.ErrNoRows) {
		return idempotency.Record{}, false, nil
	}
	if err != nil {
		return idempotency.Record{}, false, sqlitestore.Classify(fmt.Errorf("look up idempotency key: %w", err))
	}
	if !ok {
		// Its session was erased: the answer is gone, and the key with it.
		_, err := s.db.ExecContext(ctx, `DELETE FROM idempotency_keys WHERE account_id = ? AND user_id = ? AND key = ? AND response = ?`,
			owner.Account.String(), owner.User.String(), key, rec.Response)
		if err != nil {
			return idempotency.Record{}, false, sqlitestore.Classify(fmt.Errorf("drop an erased idempotency key: %w", err))
		}
		return idempotency.Record{}, false, nil
	}
	return rec, true, nil
}

// sqliteSaveSQL stores an answer, taking over a key that has expired or
// has been pending for longer than PendingTimeout; it returns a row only
// when it stored it. An append's answer is stored the same way
// (sqlitestore's insertAnswer).
const sqliteSaveSQL = `
INSERT INTO idempotency_keys AS k (account_id, user_id, key, request_hash, created_at, status_code, response, session_id) VALUES (?1, ?2, ?3, ?4, ?5, ?8, ?9, ?10)
ON CONFLICT (account_id, user_id, key) DO UPDATE
    SET request_hash = excluded.request_hash, status_code = excluded.status_code, response = excluded.response,
        session_id = excluded.session_id, created_at = excluded.created_at
    WHERE k.created_at < ?6 OR (k.status_code IS NULL AND k.created_at < ?7)
RETURNING 1`

// Save implements idempotency.Store.
func (s *Store) Save(ctx context.Context, owner idempotency.Owner, key, requestHash string, status int, body []byte) (idempotency.Record, bool, error) {
	stored, err := s.sealAnswer(ctx, owner, body)
	if err != nil {
		return idempotency.Record{}, false, err
	}
	now := time.Now().UTC()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return idempotency.Record{}, false, sqlitestore.Classify(fmt.Errorf("store idempotent answer: begin: %w", err))
	}
	defer tx.Rollback() // a no-op after Commit
	var one int
	err = tx.QueryRowContext(ctx, sqliteSaveSQL, owner.Account.String(), owner.User.String(), key, requestHash, now.Format(sqlitestore.TimeLayout),
		now.Add(-idempotency.TTL).Format(sqlitestore.TimeLayout), now.Add(-idempotency.PendingTimeout).Format(sqlitestore.TimeLayout), status, stored, nullSession(owner.Session)).Scan(&one)
	rec := idempotency.Record{RequestHash: requestHash, StatusCode: status, Response: body}
	saved := err == nil
	switch {
	case errors.Is(err, sql.ErrNoRows):
		// Held by another request. An answer that can no longer be opened
		// (its session was erased) answers as a request in progress does;
		// the next lookup drops it.
		var ok bool
		rec, ok, err = s.read(ctx, tx, owner, key, sqliteSelectSQL, owner.Account.String(), owner.User.String(), key)
		if err != nil {
			return idempotency.Record{}, false, sqlitestore.Classify(fmt.Errorf("read idempotency key: %w", err))
		}
		if !ok {
			rec = idempotency.Record{RequestHash: requestHash}
		}
	case err != nil:
		return idempotency.Record{}, false, sqlitestore.Classify(fmt.Errorf("store idempotent answer: %w", err))
	}
	if err := tx.Commit(); err != nil {
		return idempotency.Record{}, false, sqlitestore.Classify(fmt.Errorf("store idempotent answer: commit: %w", err))
	}
	return rec, saved, nil
}
