// Package pgleader is the leader.Locker of the ledgerd processes that share
// a PostgreSQL database: leases are rows of the leader_leases table, and
// CheckFence checks a lease's fence in the transaction of a fenced write.
package pgleader

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/resolutionflow/ledgerd/leader"
)

// Default timings of the PostgreSQL locker (see Config).
const (
	DefaultTTL           = 3 * time.Second
	DefaultRenewInterval = time.Second
	DefaultMargin        = time.Second
	DefaultRetryInterval = 500 * time.Millisecond
)

// queryTimeout bounds each statement of a waiting process and of a release.
const queryTimeout = 5 * time.Second

// Config sets the timings of the PostgreSQL locker. Zero fields take the
// defaults. A holder that freezes is replaced within TTL + RetryInterval of
// its last renewal; one that is cut off stops acting within TTL - Margin of
// the start of its last successful renewal, before the lease expires.
type Config struct {
	// TTL is how long a lease lasts after a renewal, at the database
	// server's clock (default DefaultTTL).
	TTL time.Duration
	// RenewInterval is how often the holder renews its lease (default
	// DefaultRenewInterval); it must be shorter than TTL - Margin.
	RenewInterval time.Duration
	// Margin is how long before the lease would expire, counted from the
	// start of the last successful renewal, the holder gives leadership
	// up when it could not renew (default DefaultMargin). It covers the
	// time the holder's job takes to notice, and any difference in the
	// pace of the two clocks.
	Margin time.Duration
	// RetryInterval is how often a waiting process tries to take a lease,
	// and how soon a holder retries a failed renewal (default
	// DefaultRetryInterval).
	RetryInterval time.Duration
}

// IdleTransactionTimeout is the idle_in_transaction_session_timeout that
// every PostgreSQL session of a process taking part in leadership must
// have: three quarters of TTL - Margin. A leader frozen inside a transaction
// (kill -STOP, a paused VM) keeps that transaction's row locks, so its
// successor's first checkpoint move would wait on the frozen process for
// as long as it stays frozen, and would then see the frozen transaction,
// fenced before the freeze, commit after the successor took over. With this
// timeout the server rolls the frozen transaction back, releasing its locks,
// before the lease can pass on.
func (c Config) IdleTransactionTimeout() time.Duration {
	c = c.withDefaults()
	return (c.TTL - c.Margin) * 3 / 4
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.TTL, DefaultTTL)
	def(&c.RenewInterval, DefaultRenewInterval)
	def(&c.Margin, DefaultMargin)
	def(&c.RetryInterval, DefaultRetryInterval)
	return c
}

func (c Config) validate() error {
	switch {
	case c.TTL < 0 || c.RenewInterval < 0 || c.Margin < 0 || c.RetryInterval < 0:
		return fmt.Errorf("leader: negative lease timing in %+v", c)
	case c.Margin >= c.TTL:
		return fmt.Errorf("leader: lease margin %v must be shorter than the TTL %v", c.Margin, c.TTL)
	case c.RenewInterval >= c.TTL-c.Margin:
		return fmt.Errorf("leader: lease renew interval %v must be shorter than the TTL %v minus the margin %v", c.RenewInterval, c.TTL, c.Margin)
	}
	return nil
}

// New returns a Locker of leases stored in the leader_leases table
// of pool's database, shared by every process connected to it. Zero fields
// of cfg take their defaults.
//
// Acquire takes a lease when it is free or expired, giving it the next
// token, and retries every cfg.RetryInterval while another process holds
// it. The holder renews its lease every cfg.RenewInterval; when a renewal
// finds the lease gone, or none has succeeded within cfg.TTL - cfg.Margin
// of the start of the last successful one (measured on this process's
// monotonic clock), it cancels the lease's Context, before the lease
// expires at the server. Expiry is judged by the database server's clock
// alone, so the processes' clocks need not agree.
func New(pool *pgxpool.Pool, logger *slog.Logger, cfg Config) (*Locker, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.Default()
	}
	host, _ := os.Hostname()
	return &Locker{
		pool: pool, logger: logger, cfg: cfg,
		holder:    fmt.Sprintf("%s:%d:%s", host, os.Getpid(), rand.Text()[:8]),
		inProcess: leader.NewLocal(),
	}, nil
}

// Locker is the leader.Locker of the processes sharing a database; see New.
type Locker struct {
	pool   *pgxpool.Pool
	logger *slog.Logger
	cfg    Config
	// holder names this locker among the processes in the leases it holds.
	holder string
	// inProcess makes the acquisitions of one name in this process wait
	// for each other, as they share the holder name.
	inProcess *leader.Local

	// beforeRenew, when set (by tests), runs before each renewal.
	beforeRenew func()
}

// takeSQL takes the lease named $1 for holder $2 until $3 from now, when
// it is free, expired or already $2's, and returns its new token, one more
// than the last; no row when another holder has it.
const takeSQL = `
INSERT INTO leader_leases AS l (name, holder, token, expires_at)
VALUES ($1, $2, 1, clock_timestamp() + $3::interval)
ON CONFLICT (name) DO UPDATE
SET holder = excluded.holder, token = l.token + 1, expires_at = excluded.expires_at
WHERE l.holder = excluded.holder OR l.expires_at <= clock_timestamp()
RETURNING token`

// renewSQL extends the unexpired lease $1 of holder $2 with token $3 to $4
// from now.
const renewSQL = `
UPDATE leader_leases SET expires_at = clock_timestamp() + $4::interval
WHERE name = $1 AND holder = $2 AND token = $3 AND expires_at > clock_timestamp()`

// releaseSQL expires the lease $1 of holder $2 with token $3 now.
const releaseSQL = `
UPDATE leader_leases SET expires_at = clock_timestamp()
WHERE name = $1 AND holder = $2 AND token = $3 AND expires_at > clock_timestamp()`

// fenceSQL tells whether the lease $1 still has token $2 and has not
// expired.
const fenceSQL = `
SELECT EXISTS (SELECT 1 FROM leader_leases
               WHERE name = $1 AND token = $2 AND expires_at > clock_timestamp())`

// Acquire takes the lease even when it has not expired if this locker
// held it last: a job that gave it up while the database was unreachable,
// so that its release failed, need not wait for it to expire.
func (p *Locker) Acquire(ctx context.Context, name string) (*leader.Lease, error) {
	local, err := p.inProcess.Acquire(ctx, name)
	if err != nil {
		return nil, err
	}
	for {
		start := time.Now()
		// The take runs to its end even when ctx ends meanwhile: a
		// statement abandoned half-way could still take the lease at the
		// server, leaving it held by nobody until it expired. A lease
		// taken as ctx ended is given back.
		token, err := p.take(context.WithoutCancel(ctx), name)
		switch {
		case err != nil && ctx.Err() == nil:
			p.logger.WarnContext(ctx, "leader: cannot try to take lease", "lease", name, "err", err)
		case token != 0 && ctx.Err() != nil:
			p.release(ctx, name, token)
		case token != 0:
			p.logger.InfoContext(ctx, "leader: lease acquired", "lease", name, "token", token, "holder", p.holder)
			return p.hold(ctx, local, name, token, start), nil
		}
		select {
		case <-ctx.Done():
			local.Release()
			return nil, fmt.Errorf("acquire lease %q: %w", name, ctx.Err())
		case <-time.After(p.cfg.RetryInterval):
		}
	}
}

// take tries to take the lease and returns its token, or 0 when another
// holder has it.
func (p *Locker) take(ctx context.Context, name string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	var token int64
	err := p.pool.QueryRow(ctx, takeSQL, name, p.holder, p.cfg.TTL).Scan(&token)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("take lease %q: %w", name, err)
	}
	return token, nil
}

// hold returns the lease just taken by a statement that started at taken,
// and keeps it until it is released or lost; local is the lease's
// in-process lock.
func (p *Locker) hold(ctx context.Context, local *leader.Lease, name string, token int64, taken time.Time) *leader.Lease {
	held, cancel := context.WithCancel(ctx)
	// The watchdog ends leadership when no renewal has succeeded in time,
	// even if the renewals hang.
	watchdog := time.AfterFunc(time.Until(taken.Add(p.cfg.TTL-p.cfg.Margin)), func() {
		if held.Err() == nil {
			p.logger.ErrorContext(held, "leader: lease not renewed in time, leadership given up", "lease", name, "token", token)
		}
		cancel()
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.renewUntilLost(held, name, token, watchdog, taken)
		watchdog.Stop()
		cancel()
		p.release(held, name, token)
	}()
	release := sync.OnceFunc(func() {
		cancel()
		<-done
		local.Release()
	})
	return leader.NewLease(held, leader.Fence{Name: name, Token: token}, release)
}

// renewUntilLost renews the lease until held ends or the lease is found
// lost. renewed is when the last successful renewal (or the taking) began.
func (p *Locker) renewUntilLost(held context.Context, name string, token int64, watchdog *time.Timer, renewed time.Time) {
	wait := p.cfg.RenewInterval
	for {
		select {
		case <-held.Done():
			return
		case <-time.After(wait):
		}
		if p.beforeRenew != nil {
			p.beforeRenew()
		}
		start := time.Now()
		ok, err := p.renew(held, name, token, renewed.Add(p.cfg.TTL-p.cfg.Margin))
		switch {
		case held.Err() != nil:
			return
		case err != nil:
			p.logger.WarnContext(held, "leader: cannot renew lease, retrying", "lease", name, "token", token, "err", err)
			wait = p.cfg.RetryInterval
		case !ok:
			p.logger.ErrorContext(held, "leader: lease expired or taken over, leadership lost", "lease", name, "token", token)
			return
		default:
			renewed, wait = start, p.cfg.RenewInterval
			watchdog.Reset(time.Until(start.Add(p.cfg.TTL - p.cfg.Margin)))
		}
	}
}

// renew extends the lease, giving up at deadline; it reports false when the
// lease is no longer the holder's.
func (p *Locker) renew(held context.Context, name string, token int64, deadline time.Time) (bool, error) {
	ctx, cancel := context.WithDeadline(held, deadline)
	defer cancel()
	tag, err := p.pool.Exec(ctx, renewSQL, name, p.holder, token, p.cfg.TTL)
	if err != nil {
		return false, fmt.Errorf("renew lease %q: %w", name, err)
	}
	return tag.RowsAffected() == 1, nil
}

// release expires the lease at once, if the holder still has it (not when
// it was lost).
func (p *Locker) release(held context.Context, name string, token int64) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(held), queryTimeout)
	defer cancel()
	tag, err := p.pool.Exec(ctx, releaseSQL, name, p.holder, token)
	switch {
	case err != nil:
		p.logger.WarnContext(ctx, "leader: cannot release lease; it expires by itself", "lease", name, "err", err)
	case tag.RowsAffected() == 1:
		p.logger.InfoContext(ctx, "leader: lease released", "lease", name)
	}
}

// Querier runs a query; pgx.Tx and pgxpool.Pool satisfy it.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// CheckFence fails with an error matching leader.ErrDeposed when fence is checked
// and its lease no longer has its token or has expired, by the clock of
// q's database server. Run it in the transaction of the write it fences,
// as its last statement before the commit.
func CheckFence(ctx context.Context, q Querier, fence leader.Fence) error {
	if !fence.Checked() {
		return nil
	}
	var valid bool
	if err := q.QueryRow(ctx, fenceSQL, fence.Name, fence.Token).Scan(&valid); err != nil {
		return fmt.Errorf("check lease %q token %d: %w", fence.Name, fence.Token, err)
	}
	if !valid {
		return fmt.Errorf("lease %q token %d: %w", fence.Name, fence.Token, leader.ErrDeposed)
	}
	return nil
}
