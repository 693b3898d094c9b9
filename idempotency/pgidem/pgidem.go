// Package pgidem is the idempotency.Store of the PostgreSQL mode: keys and
// their answers in the idempotency_keys table.
package pgidem

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/idempotency"
	"github.com/resolutionflow/ledgerd/internal/pgerr"
)

// Store keeps keys in the idempotency_keys table.
type Store struct {
	pool    *pgxpool.Pool
	sealing idempotency.Sealing
}

var _ idempotency.Store = (*Store)(nil)

// New returns a store on a migrated PostgreSQL database.
func New(pool *pgxpool.Pool, opts ...idempotency.Option) *Store {
	return &Store{pool: pool, sealing: idempotency.NewSealing(opts)}
}

// lookupSQL reads a key that no new request may take over, with its
// session's data key, if any, to open its answer with.
var lookupSQL = `
SELECT i.request_hash, coalesce(i.status_code, 0), coalesce(i.response, ''), i.session_id, d.key_id, d.wrapped, d.master_key_id
FROM idempotency_keys AS i LEFT JOIN data_keys AS d ON d.stream_id = (` + eventcodec.StreamNameSQL("i.account_id::text", "i.session_id::text") + `) COLLATE "C"
WHERE i.account_id = $1 AND i.user_id = $2 AND i.key = $3
    AND i.created_at >= now() - make_interval(secs => $4)
    AND (i.status_code IS NOT NULL OR i.created_at >= now() - make_interval(secs => $5))`

// dropUnreadableSQL deletes a key whose stored answer can no longer be
// opened (its session was erased), as the erasure does.
const dropUnreadableSQL = `DELETE FROM idempotency_keys WHERE account_id = $1 AND user_id = $2 AND key = $3 AND response = $4`

// Lookup implements idempotency.Store. A key whose answer can no longer
// be opened (its session was erased) is not found, and is deleted, as the
// erasure does.
func (s *Store) Lookup(ctx context.Context, owner idempotency.Owner, key string) (idempotency.Record, bool, error) {
	var (
		rec     idempotency.Record
		session *uuid.UUID
		dk      idempotency.StoredKey
	)
	err := s.pool.QueryRow(ctx, lookupSQL, owner.Account, owner.User, key, idempotency.TTL.Seconds(), idempotency.PendingTimeout.Seconds()).
		Scan(&rec.RequestHash, &rec.StatusCode, &rec.Response, &session, &dk.ID, &dk.Wrapped, &dk.MasterKeyID)
	if errors.Is(err, pgx.ErrNoRows) {
		return idempotency.Record{}, false, nil
	}
	if err != nil {
		return idempotency.Record{}, false, pgerr.Classify(fmt.Errorf("look up idempotency key: %w", err))
	}
	body, ok := s.sealing.OpenAnswer(owner.Account, orNil(session), dk.Key(), rec.Response)
	if !ok {
		if _, err := s.pool.Exec(ctx, dropUnreadableSQL, owner.Account, owner.User, key, rec.Response); err != nil {
			return idempotency.Record{}, false, pgerr.Classify(fmt.Errorf("drop an erased idempotency key: %w", err))
		}
		return idempotency.Record{}, false, nil
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
	var dk idempotency.StoredKey
	err := s.pool.QueryRow(ctx, `SELECT key_id, wrapped, master_key_id FROM data_keys WHERE stream_id = $1`,
		eventcodec.StreamName(owner.Account, owner.Session)).Scan(&dk.ID, &dk.Wrapped, &dk.MasterKeyID)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nil, pgerr.Classify(fmt.Errorf("read the data key of an idempotent response: %w", err))
	}
	return s.sealing.SealAnswer(owner, dk.Key(), body)
}

// orNil is a nullable session id read: uuid.Nil for NULL.
func orNil(u *uuid.UUID) uuid.UUID {
	if u == nil {
		return uuid.Nil
	}
	return *u
}

// nullUUID is u as a query argument, NULL for uuid.Nil.
func nullUUID(u uuid.UUID) *uuid.UUID {
	if u == uuid.Nil {
		return nil
	}
	return &u
}

// DeleteSession implements idempotency.Store.
func (s *Store) DeleteSession(ctx context.Context, account, session uuid.UUID) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM idempotency_keys WHERE account_id = $1 AND session_id = $2`, account, session)
	if err != nil {
		return 0, pgerr.Classify(fmt.Errorf("delete the idempotency keys of session %s: %w", session, err))
	}
	return tag.RowsAffected(), nil
}

// Sweep implements idempotency.Store.
func (s *Store) Sweep(ctx context.Context) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)`, idempotency.TTL.Seconds())
	if err != nil {
		return 0, pgerr.Classify(fmt.Errorf("sweep expired idempotency keys: %w", err))
	}
	return tag.RowsAffected(), nil
}

// saveSQL stores an answer, taking over a key that has expired or has
// been pending for longer than PendingTimeout; it returns a row only when
// it stored it. An append's answer is stored the same way (pgstore's
// answerSQL).
const saveSQL = `
INSERT INTO idempotency_keys AS k (account_id, user_id, key, request_hash, status_code, response, session_id) VALUES ($1, $2, $3, $4, $7, $8, $9)
ON CONFLICT (account_id, user_id, key) DO UPDATE
    SET request_hash = EXCLUDED.request_hash, status_code = EXCLUDED.status_code, response = EXCLUDED.response,
        session_id = EXCLUDED.session_id, created_at = now()
    WHERE k.created_at < now() - make_interval(secs => $5)
       OR (k.status_code IS NULL AND k.created_at < now() - make_interval(secs => $6))
RETURNING true`

// saveAttempts bounds the loop in Save: it repeats only when the key that
// another request held is gone by the time it is read (expired, or its
// session erased).
const saveAttempts = 3

// Save implements idempotency.Store.
func (s *Store) Save(ctx context.Context, owner idempotency.Owner, key, requestHash string, status int, body []byte) (idempotency.Record, bool, error) {
	stored, err := s.sealAnswer(ctx, owner, body)
	if err != nil {
		return idempotency.Record{}, false, err
	}
	for range saveAttempts {
		var saved bool
		err := s.pool.QueryRow(ctx, saveSQL, owner.Account, owner.User, key, requestHash, idempotency.TTL.Seconds(), idempotency.PendingTimeout.Seconds(), status, stored, nullUUID(owner.Session)).Scan(&saved)
		if err == nil {
			return idempotency.Record{RequestHash: requestHash, StatusCode: status, Response: body}, true, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return idempotency.Record{}, false, pgerr.Classify(fmt.Errorf("store idempotent answer: %w", err))
		}
		rec, found, err := s.Lookup(ctx, owner, key)
		if err != nil {
			return idempotency.Record{}, false, err
		}
		if found {
			return rec, false, nil
		}
	}
	return idempotency.Record{}, false, fmt.Errorf("store idempotent answer: key held and gone %d times in a row", saveAttempts)
}
