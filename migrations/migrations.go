// Package migrations holds the ledger's schema as numbered SQL files embedded
// in the binary, and applies them with goose. Applying is safe when several
// processes start at once: on PostgreSQL goose holds a session advisory lock
// while it migrates. SQLite has no such lock: a new SQLite file must be
// opened, and so migrated, by one process before others open it.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

//go:embed postgres/*.sql
var postgresFiles embed.FS

//go:embed sqlite/*.sql
var sqliteFiles embed.FS

// Postgres applies every pending PostgreSQL migration.
func Postgres(ctx context.Context, db *sql.DB) error {
	p, err := postgresProvider(db)
	if err != nil {
		return err
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrate postgres: %w", err)
	}
	return nil
}

// ErrPending is matched (errors.Is) by CheckPostgres's error when
// migrations remain to be applied.
var ErrPending = errors.New("migrations pending")

// CheckPostgres returns nil when every PostgreSQL migration is applied, an
// error matching ErrPending when some are not, and any other error when it
// cannot tell. It is the readiness check of the schema.
func CheckPostgres(ctx context.Context, pool *pgxpool.Pool) error {
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	p, err := postgresProvider(db)
	if err != nil {
		return err
	}
	pending, err := p.HasPending(ctx)
	if err != nil {
		return fmt.Errorf("check postgres migrations: %w", err)
	}
	if pending {
		return ErrPending
	}
	return nil
}

func postgresProvider(db *sql.DB) (*goose.Provider, error) {
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return nil, fmt.Errorf("migration lock: %w", err)
	}
	return newProvider(goose.DialectPostgres, db, postgresFiles, "postgres", goose.WithSessionLocker(locker))
}

// SQLite applies every pending SQLite migration.
func SQLite(ctx context.Context, db *sql.DB) error {
	p, err := newProvider(goose.DialectSQLite3, db, sqliteFiles, "sqlite")
	if err != nil {
		return err
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrate sqlite: %w", err)
	}
	return nil
}

func newProvider(dialect goose.Dialect, db *sql.DB, files embed.FS, dir string, opts ...goose.ProviderOption) (*goose.Provider, error) {
	sub, err := fs.Sub(files, dir)
	if err != nil {
		return nil, fmt.Errorf("migrations %s: %w", dir, err)
	}
	opts = append(opts, goose.WithDisableGlobalRegistry(true))
	p, err := goose.NewProvider(dialect, db, sub, opts...)
	if err != nil {
		return nil, fmt.Errorf("migrations %s: %w", dir, err)
	}
	return p, nil
}
