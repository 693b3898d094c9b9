package leader

import (
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Timings of the PostgreSQL locker.
const (
	// retryInterval is how often a waiting process tries to take a lock,
	// and so about how long a takeover lags the holder's death.
	retryInterval = 500 * time.Millisecond
	// checkInterval is how often a holder checks that its lock connection
	// is alive.
	checkInterval = time.Second
	// queryTimeout bounds each lock, check and unlock query.
	queryTimeout = 5 * time.Second
)

// NewPostgres returns a Locker of PostgreSQL session advisory locks, shared
// by every process connected to the same database.
//
// Each held lock keeps one connection of pool for itself until it is
// released, so the pool must be sized for them. A holder checks its
// connection every second and cancels its held context when the check
// fails; the server drops a session's locks when the session ends, so a
// process that dies or is cut off loses its locks and a waiting process,
// which retries twice a second, takes them over.
func NewPostgres(pool *pgxpool.Pool, logger *slog.Logger) Locker {
	return &postgres{pool: pool, logger: logger}
}

type postgres struct {
	pool   *pgxpool.Pool
	logger *slog.Logger
}

// lockKey maps a lock name to an advisory lock key. The names are few and
// fixed, so a collision of their 64-bit hashes is not a practical concern.
func lockKey(name string) int64 {
	h := fnv.New64a()
	h.Write([]byte("ledgerd.leader:" + name))
	return int64(h.Sum64())
}

func (p *postgres) Acquire(ctx context.Context, name string) (context.Context, func(), error) {
	key := lockKey(name)
	for {
		conn, err := p.tryLock(ctx, key)
		switch {
		case err != nil && ctx.Err() == nil:
			p.logger.WarnContext(ctx, "leader: cannot try lock", "lock", name, "err", err)
		case conn != nil:
			p.logger.InfoContext(ctx, "leader: lock acquired", "lock", name)
			return p.hold(ctx, name, key, conn)
		}
		select {
		case <-ctx.Done():
			return nil, nil, acquireCancelled(ctx, name)
		case <-time.After(retryInterval):
		}
	}
}

// tryLock takes a connection from the pool and the lock on it, and returns
// the connection; it returns nil when another session holds the lock.
func (p *postgres) tryLock(ctx context.Context, key int64) (*pgxpool.Conn, error) {
	conn, err := p.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("get a connection: %w", err)
	}
	qctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	var locked bool
	if err := conn.QueryRow(qctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&locked); err != nil {
		// The outcome is unknown, so the session must not live on holding
		// the lock.
		closeConn(conn)
		return nil, fmt.Errorf("pg_try_advisory_lock: %w", err)
	}
	if !locked {
		conn.Release()
		return nil, nil
	}
	return conn, nil
}

// hold watches a lock just taken on conn until it is released or lost.
func (p *postgres) hold(ctx context.Context, name string, key int64, conn *pgxpool.Conn) (context.Context, func(), error) {
	held, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.watch(held, name, conn)
		cancel()
		p.unlock(held, name, key, conn)
	}()
	return held, func() { cancel(); <-done }, nil
}

// watch returns when held is done or conn fails a check.
func (p *postgres) watch(held context.Context, name string, conn *pgxpool.Conn) {
	ticker := time.NewTicker(checkInterval)
	defer ticker.Stop()
	for {
		select {
		case <-held.Done():
			return
		case <-ticker.C:
		}
		// The check must not fail because held ends while it runs.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(held), queryTimeout)
		err := conn.Ping(cctx)
		cancel()
		if err != nil {
			p.logger.ErrorContext(held, "leader: lock connection failed, leadership lost", "lock", name, "err", err)
			return
		}
	}
}

// unlock gives the lock up and returns conn to the pool, or closes conn
// (which ends the session and so its locks) when the unlock fails.
func (p *postgres) unlock(held context.Context, name string, key int64, conn *pgxpool.Conn) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(held), queryTimeout)
	defer cancel()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_unlock($1)`, key); err != nil {
		closeConn(conn)
		return
	}
	conn.Release()
	p.logger.InfoContext(ctx, "leader: lock released", "lock", name)
}

// closeConn closes a pool connection, so that the pool discards it.
func closeConn(conn *pgxpool.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	_ = conn.Conn().Close(ctx)
	conn.Release()
}
