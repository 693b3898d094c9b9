// Package pgkeys is shred.KeyStore on PostgreSQL's data_keys table.
package pgkeys

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/shred"
)

// Store is shred.KeyStore on a PostgreSQL pool.
type Store struct{ pool *pgxpool.Pool }

var _ shred.KeyStore = (*Store)(nil)

// New returns a key store on a migrated database.
func New(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// MasterKeyIDs implements shred.KeyStore.
func (s *Store) MasterKeyIDs(ctx context.Context) (map[string]int64, error) {
	// pgx.ForEachRow reports the query's error.
	rows, _ := s.pool.Query(ctx, `SELECT master_key_id, count(*) FROM data_keys GROUP BY master_key_id`)
	ids := map[string]int64{}
	var (
		id string
		n  int64
	)
	_, err := pgx.ForEachRow(rows, []any{&id, &n}, func() error { ids[id] = n; return nil })
	if err != nil {
		return nil, fmt.Errorf("count data keys by master key: %w", err)
	}
	return ids, nil
}

// Rewrap implements shred.KeyStore. The rows are locked (FOR UPDATE) as
// they are read, so an erasure that destroys one waits, and none it
// destroys comes back.
func (s *Store) Rewrap(ctx context.Context, from string, rewrap func(string, *eventstore.DataKey) (*eventstore.DataKey, error)) (int64, error) {
	var n int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// pgx.ForEachRow reports the query's error.
		rows, _ := tx.Query(ctx, `SELECT stream_id, key_id, wrapped, master_key_id FROM data_keys WHERE master_key_id = $1 FOR UPDATE`, from)
		type row struct {
			stream string
			key    eventstore.DataKey
		}
		var all []row
		var r row
		_, err := pgx.ForEachRow(rows, []any{&r.stream, &r.key.ID, &r.key.Wrapped, &r.key.MasterKeyID}, func() error {
			all = append(all, r)
			return nil
		})
		if err != nil {
			return fmt.Errorf("read data keys: %w", err)
		}
		batch := &pgx.Batch{}
		for _, r := range all {
			next, err := rewrap(r.stream, &r.key)
			if err != nil {
				return err
			}
			batch.Queue(`UPDATE data_keys SET wrapped = $2, master_key_id = $3 WHERE stream_id = $1 AND key_id = $4`,
				r.stream, next.Wrapped, next.MasterKeyID, r.key.ID)
		}
		if err := tx.SendBatch(ctx, batch).Close(); err != nil {
			return fmt.Errorf("rewrap data keys: %w", err)
		}
		n = int64(len(all))
		return nil
	})
	return n, err
}
