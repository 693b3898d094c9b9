package pgidem_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/eventstore/pgstore"
	"github.com/resolutionflow/ledgerd/idempotency"
	"github.com/resolutionflow/ledgerd/idempotency/idemtest"
	"github.com/resolutionflow/ledgerd/idempotency/pgidem"
	"github.com/resolutionflow/ledgerd/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func TestStore(t *testing.T) { idemtest.Run(t, newBackend) }

func newBackend(tb testing.TB) idemtest.Backend {
	tb.Helper()
	pool, err := pgxpool.New(context.Background(), pgtest.NewDatabase(tb))
	if err != nil {
		tb.Fatalf("open pool: %v", err)
	}
	tb.Cleanup(pool.Close)
	exec := func(tb testing.TB, query string, args ...any) {
		tb.Helper()
		if _, err := pool.Exec(context.Background(), query, args...); err != nil {
			tb.Fatalf("%s: %v", query, err)
		}
	}
	return idemtest.Backend{
		Store:  pgidem.New(pool),
		Sealed: pgidem.New(pool, idempotency.SealedBy(idemtest.Keyring)),
		Log:    pgstore.New(pool),
		Pend: func(tb testing.TB, owner idempotency.Owner, key, hash string) {
			exec(tb, `INSERT INTO idempotency_keys (account_id, user_id, key, request_hash) VALUES ($1, $2, $3, $4)`, owner.Account, owner.User, key, hash)
		},
		PutKey: func(tb testing.TB, stream string, key *eventstore.DataKey) {
			exec(tb, `INSERT INTO data_keys (stream_id, key_id, wrapped, master_key_id) VALUES ($1, $2, $3, $4)`, stream, key.ID, key.Wrapped, key.MasterKeyID)
		},
		DropKey: func(tb testing.TB, stream string) { exec(tb, `DELETE FROM data_keys WHERE stream_id = $1`, stream) },
		Stored: func(tb testing.TB, owner idempotency.Owner, key string) []byte {
			tb.Helper()
			var body []byte
			err := pool.QueryRow(context.Background(), `SELECT response FROM idempotency_keys WHERE account_id = $1 AND user_id = $2 AND key = $3`,
				owner.Account, owner.User, key).Scan(&body)
			if err != nil {
				tb.Fatalf("read stored answer: %v", err)
			}
			return body
		},
		Age: func(tb testing.TB, owner idempotency.Owner, key string, d time.Duration) {
			tb.Helper()
			_, err := pool.Exec(context.Background(),
				`UPDATE idempotency_keys SET created_at = created_at - make_interval(secs => $4) WHERE account_id = $1 AND user_id = $2 AND key = $3`,
				owner.Account, owner.User, key, d.Seconds())
			if err != nil {
				tb.Fatalf("age key: %v", err)
			}
		},
		Count: func(tb testing.TB) int {
			tb.Helper()
			var n int
			if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM idempotency_keys`).Scan(&n); err != nil {
				tb.Fatalf("count keys: %v", err)
			}
			return n
		},
	}
}
