// Package sqlitekeys is shred.KeyStore on the embedded SQLite file's
// data_keys table.
package sqlitekeys

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/shred"
)

// Store is shred.KeyStore on the file's write handle (sqlitestore.Store.DB),
// whose transactions take the write lock as they begin.
type Store struct{ db *sql.DB }

var _ shred.KeyStore = (*Store)(nil)

// New returns a key store on db.
func New(db *sql.DB) *Store { return &Store{db: db} }

// MasterKeyIDs implements shred.KeyStore.
func (s *Store) MasterKeyIDs(ctx context.Context) (map[string]int64, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT master_key_id, count(*) FROM data_keys GROUP BY master_key_id`)
	if err != nil {
		return nil, fmt.Errorf("count data keys by master key: %w", err)
	}
	defer rows.Close()
	ids := map[string]int64{}
	for rows.Next() {
		var (
			id string
			n  int64
		)
		if err := rows.Scan(&id, &n); err != nil {
			return nil, fmt.Errorf("count data keys by master key: %w", err)
		}
		ids[id] = n
	}
	return ids, rows.Err()
}

// Rewrap implements shred.KeyStore, in one write transaction.
func (s *Store) Rewrap(ctx context.Context, from string, rewrap func(string, *eventstore.DataKey) (*eventstore.DataKey, error)) (int64, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("rewrap data keys: %w", err)
	}
	defer tx.Rollback() // a no-op after Commit
	rows, err := tx.QueryContext(ctx, `SELECT stream_id, key_id, wrapped, master_key_id FROM data_keys WHERE master_key_id = ?`, from)
	if err != nil {
		return 0, fmt.Errorf("read data keys: %w", err)
	}
	type row struct {
		stream string
		key    eventstore.DataKey
	}
	var all []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.stream, &r.key.ID, &r.key.Wrapped, &r.key.MasterKeyID); err != nil {
			rows.Close()
			return 0, fmt.Errorf("read data keys: %w", err)
		}
		all = append(all, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("read data keys: %w", err)
	}
	for _, r := range all {
		next, err := rewrap(r.stream, &r.key)
		if err != nil {
			return 0, err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE data_keys SET wrapped = ?, master_key_id = ? WHERE stream_id = ? AND key_id = ?`,
			next.Wrapped, next.MasterKeyID, r.stream, r.key.ID); err != nil {
			return 0, fmt.Errorf("rewrap data key of %s: %w", r.stream, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("rewrap data keys: commit: %w", err)
	}
	return int64(len(all)), nil
}
