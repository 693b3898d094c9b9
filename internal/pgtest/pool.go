package pgtest

import (
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
)

// NewPool opens a pool on a new database made by NewDatabase, as Pool does.
func NewPool(tb testing.TB, maxConns int32) *pgxpool.Pool {
	tb.Helper()
	return Pool(tb, NewDatabase(tb), maxConns)
}

// Pool opens a pool of up to maxConns connections (pgx's default when
// maxConns is 0) on the database at url, such as a second pool standing for
// another process on a test's database. Each configure function may change
// the pool's configuration before it opens. The pool is closed when tb has
// finished.
func Pool(tb testing.TB, url string, maxConns int32, configure ...func(*pgxpool.Config)) *pgxpool.Pool {
	tb.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		tb.Fatalf("pgtest: parse %s: %v", redacted(url), err)
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	for _, fn := range configure {
		fn(cfg)
	}
	pool, err := pgxpool.NewWithConfig(tb.Context(), cfg)
	if err != nil {
		tb.Fatalf("pgtest: open pool on %s: %v", redacted(url), err)
	}
	tb.Cleanup(pool.Close)
	return pool
}
