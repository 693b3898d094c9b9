package sqliteidem_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/eventstore/sqlitestore"
	"github.com/resolutionflow/ledgerd/idempotency"
	"github.com/resolutionflow/ledgerd/idempotency/idemtest"
	"github.com/resolutionflow/ledgerd/idempotency/sqliteidem"
)

func TestStore(t *testing.T) { idemtest.Run(t, newSQLite) }

// newSQLite opens a fresh embedded file; keys are aged through its write
// handle, as the store writes them.
func newSQLite(tb testing.TB) idemtest.Backend {
	tb.Helper()
	s, err := sqlitestore.Open(context.Background(), filepath.Join(tb.TempDir(), "ledger.db"))
	if err != nil {
		tb.Fatalf("open sqlite: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("close sqlite: %v", err)
		}
	})
	db := s.DB()
	exec := func(tb testing.TB, query string, args ...any) {
		tb.Helper()
		if _, err := db.ExecContext(context.Background(), query, args...); err != nil {
			tb.Fatalf("%s: %v", query, err)
		}
	}
	return idemtest.Backend{
		Store:  sqliteidem.New(db),
		Sealed: sqliteidem.New(db, idempotency.SealedBy(idemtest.Keyring)),
		Log:    s,
		Pend: func(tb testing.TB, owner idempotency.Owner, key, hash string) {
			exec(tb, `INSERT INTO idempotency_keys (account_id, user_id, key, request_hash, created_at) VALUES (?, ?, ?, ?, ?)`,
				owner.Account.String(), owner.User.String(), key, hash, time.Now().UTC().Format(sqlitestore.TimeLayout))
		},
		PutKey: func(tb testing.TB, stream string, key *eventstore.DataKey) {
			exec(tb, `INSERT INTO data_keys (stream_id, key_id, wrapped, master_key_id) VALUES (?, ?, ?, ?)`, stream, key.ID, key.Wrapped, key.MasterKeyID)
		},
		DropKey: func(tb testing.TB, stream string) { exec(tb, `DELETE FROM data_keys WHERE stream_id = ?`, stream) },
		Stored: func(tb testing.TB, owner idempotency.Owner, key string) []byte {
			tb.Helper()
			var body []byte
			err := db.QueryRowContext(context.Background(), `SELECT response FROM idempotency_keys WHERE account_id = ? AND user_id = ? AND key = ?`,
				owner.Account.String(), owner.User.String(), key).Scan(&body)
			if err != nil {
				tb.Fatalf("read stored answer: %v", err)
			}
			return body
		},
		Age: func(tb testing.TB, owner idempotency.Owner, key string, d time.Duration) {
			tb.Helper()
			ctx := context.Background()
			var created string
			err := db.QueryRowContext(ctx, `SELECT created_at FROM idempotency_keys WHERE account_id = ? AND user_id = ? AND key = ?`, owner.Account.String(), owner.User.String(), key).Scan(&created)
			if err != nil {
				tb.Fatalf("read key's time: %v", err)
			}
			at, err := time.Parse(sqlitestore.TimeLayout, created)
			if err != nil {
				tb.Fatalf("parse key's time: %v", err)
			}
			_, err = db.ExecContext(ctx, `UPDATE idempotency_keys SET created_at = ? WHERE account_id = ? AND user_id = ? AND key = ?`,
				at.Add(-d).UTC().Format(sqlitestore.TimeLayout), owner.Account.String(), owner.User.String(), key)
			if err != nil {
				tb.Fatalf("age key: %v", err)
			}
		},
		Count: func(tb testing.TB) int {
			tb.Helper()
			var n int
			if err := db.QueryRowContext(context.Background(), `SELECT count(*) FROM idempotency_keys`).Scan(&n); err != nil {
				tb.Fatalf("count keys: %v", err)
			}
			return n
		},
	}
}
