package migrations

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/pressly/goose/v3"
)

// PostgresUpTo and SQLiteUpTo apply the migrations up to version, so that
// a test can write rows as they were before a later migration.
func PostgresUpTo(ctx context.Context, db *sql.DB, version int64) error {
	p, err := postgresProvider(db)
	if err != nil {
		return err
	}
	return upTo(ctx, p, version)
}

func SQLiteUpTo(ctx context.Context, db *sql.DB, version int64) error {
	p, err := newProvider(goose.DialectSQLite3, db, sqliteFiles, "sqlite")
	if err != nil {
		return err
	}
	return upTo(ctx, p, version)
}

func upTo(ctx context.Context, p *goose.Provider, version int64) error {
	if _, err := p.UpTo(ctx, version); err != nil {
		return fmt.Errorf("migrate up to %d: %w", version, err)
	}
	return nil
}
