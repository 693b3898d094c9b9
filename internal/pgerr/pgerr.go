// Package pgerr tells the PostgreSQL errors that mean the database is out of
// reach for now (stopped, restarting, refusing connections, or a connection
// broken under a statement) from every other error, by type and SQLSTATE,
// never by message text. The PostgreSQL stores mark those errors with
// domain.ErrDatabaseUnavailable, which the HTTP layer answers with 503 and
// Retry-After instead of 500.
package pgerr

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/resolutionflow/ledgerd/domain"
)

// unavailableStates are the SQLSTATEs, besides class 08 (connection
// exception), of a server that is going away or cannot take the session.
var unavailableStates = map[string]bool{
	"57P01": true, // admin_shutdown: a fast shutdown or pg_terminate_backend
	"57P02": true, // crash_shutdown: another backend crashed
	"57P03": true, // cannot_connect_now: starting up, shutting down, recovering
	"53300": true, // too_many_connections
}

// Unavailable reports whether err says the database could not be reached,
// or went away while it ran a statement: a failed connection attempt, a
// SQLSTATE of class 08 or of unavailableStates, a connection that was closed,
// broken (end of file, a network error) or timed out, or a deadline that
// passed while the pool waited for a connection. Such a statement may still have committed when the
// connection broke after it was sent.
func Unavailable(err error) bool {
	if err == nil {
		return false
	}
	var connect *pgconn.ConnectError
	if errors.As(err, &connect) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return strings.HasPrefix(pgErr.Code, "08") || unavailableStates[pgErr.Code]
	}
	var netErr net.Error
	return pgconn.SafeToRetry(err) || pgconn.Timeout(err) || errors.As(err, &netErr) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, pgconn.ErrConnClosed) || errors.Is(err, context.DeadlineExceeded)
}

// Classify returns err marked with domain.ErrDatabaseUnavailable when
// Unavailable(err), and err itself otherwise.
func Classify(err error) error {
	if !Unavailable(err) || errors.Is(err, domain.ErrDatabaseUnavailable) {
		return err
	}
	return fmt.Errorf("%w: %w", domain.ErrDatabaseUnavailable, err)
}
