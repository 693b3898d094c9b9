package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// embeddedNATSLock is the key of the PostgreSQL session advisory lock that
// a process holds while it runs an embedded NATS server on PostgreSQL
// (--embedded-nats): a second process with a server of its own would
// publish to a stream the first one's consumers never see, and a relay
// failover between them would go on in a stream that lacks events.
// Advisory locks are per database, so the key needs no database name.
const embeddedNATSLock int64 = 0x6c65646765726e01 // "ledgern" 1

// lockCloseTimeout bounds the close of the lock's connection at exit.
const lockCloseTimeout = 5 * time.Second

// holdEmbeddedNATSLock takes embeddedNATSLock on a connection of its own,
// made from the pool's configuration, and returns the function that
// releases it by closing that connection (the lock also goes with the
// session when the process dies). It fails with a one-line reason when
// another process holds the lock.
func holdEmbeddedNATSLock(ctx context.Context, pool *pgxpool.Pool) (release func(), err error) {
	conn, err := pgx.ConnectConfig(ctx, pool.Config().ConnConfig.Copy())
	if err != nil {
		return nil, fmt.Errorf("--embedded-nats: connect to postgres for its lock: %w", err)
	}
	release = func() {
		ctx, cancel := context.WithTimeout(context.Background(), lockCloseTimeout)
		defer cancel()
		_ = conn.Close(ctx)
	}
	var locked bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", embeddedNATSLock).Scan(&locked); err != nil {
		release()
		return nil, fmt.Errorf("--embedded-nats: take its database lock: %w", err)
	}
	if !locked {
		release()
		return nil, errors.New("--embedded-nats (LEDGER_EMBEDDED_NATS): another ledgerd process on this database runs its own embedded NATS server; " +
			"run a single process, or give every process the same --nats-url (NATS_URL)")
	}
	return release, nil
}
