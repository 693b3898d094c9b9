package migrations

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
)

// ErrNotPermitted is matched (errors.Is) by PostgresPending's error when
// the database refused the change for lack of privilege (SQLSTATE 42501):
// the role connected is not the owner of the schema.
var ErrNotPermitted = errors.New("not permitted to change the schema")

// PostgresPending applies the pending PostgreSQL migrations, if there are
// any: a role that may only use the schema, such as the runtime role, gets
// nil when the schema is up to date, and an error matching ErrNotPermitted
// when migrations are pending that it may not apply.
func PostgresPending(ctx context.Context, pool *pgxpool.Pool) error {
	err := CheckPostgres(ctx, pool)
	if errors.Is(err, ErrPending) {
		db := stdlib.OpenDBFromPool(pool)
		defer db.Close()
		err = Postgres(ctx, db)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42501" {
		return fmt.Errorf("%w: %w", ErrNotPermitted, err)
	}
	return err
}

// runtimePrivileges are the table privileges of the runtime role where it
// may not read and write freely: the log may only be appended to, the
// migrations' version table only read (readiness checks that nothing is
// pending), leadership leases taken, renewed and released but never deleted
// (a lease's row keeps its token growing), and the Merkle tree's tables only
// appended to. Every other table (read models, checkpoints, idempotency
// keys, and any table a later migration adds) gets defaultPrivileges.
var runtimePrivileges = map[string][]string{
	"events":             {"SELECT", "INSERT"},
	"goose_db_version":   {"SELECT"},
	"leader_leases":      {"SELECT", "INSERT", "UPDATE"},
	"merkle_leaves":      {"SELECT", "INSERT"},
	"merkle_nodes":       {"SELECT", "INSERT"},
	"merkle_checkpoints": {"SELECT", "INSERT"},
}

var defaultPrivileges = []string{"SELECT", "INSERT", "UPDATE", "DELETE"}

// grantLockKey serializes GrantRuntime across processes: concurrent
// GRANTs on one object can fail with "tuple concurrently updated".
const grantLockKey = 0x6c65646765726772 // "ledgergr"

// GrantRuntime gives role exactly the privileges `ledgerd serve` needs on
// the tables and sequences of the current schema, which the connected role
// owns: USAGE on the schema, then on each table REVOKE ALL and GRANT the
// table's runtimePrivileges (SELECT and INSERT only on events, so the role
// can neither rewrite the log nor disable its triggers), and USAGE and
// SELECT on the sequences of tables it may insert into. It runs in one
// transaction and may be run again at any time: after later migrations it
// grants on the tables they added. The migration lock, an advisory lock,
// needs no grant. role must exist, must not be a
// superuser, and must not be, or be a member of, the connected role.
func GrantRuntime(ctx context.Context, pool *pgxpool.Pool, role string) error {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("grant runtime role %q: %w", role, err)
	}
	defer tx.Rollback(ctx) // a no-op after Commit
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(grantLockKey)); err != nil {
		return fmt.Errorf("grant runtime role %q: lock: %w", role, err)
	}
	if err := checkRuntimeRole(ctx, tx, role); err != nil {
		return err
	}
	var schema string
	if err := tx.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		return fmt.Errorf("grant runtime role %q: %w", role, err)
	}
	quoted := pgx.Identifier{role}.Sanitize()
	statements := []string{"GRANT USAGE ON SCHEMA " + pgx.Identifier{schema}.Sanitize() + " TO " + quoted}
	rows, err := tx.Query(ctx, relationsSQL)
	if err != nil {
		return fmt.Errorf("grant runtime role %q: list tables: %w", role, err)
	}
	type relation struct {
		Name, Kind, OwnedBy string
	}
	relations, err := pgx.CollectRows(rows, pgx.RowToStructByPos[relation])
	if err != nil {
		return fmt.Errorf("grant runtime role %q: list tables: %w", role, err)
	}
	for _, r := range relations {
		name := pgx.Identifier{schema, r.Name}.Sanitize()
		if r.Kind == "S" {
			statements = append(statements, "REVOKE ALL ON SEQUENCE "+name+" FROM "+quoted)
			if r.OwnedBy == "" || slices.Contains(tablePrivileges(r.OwnedBy), "INSERT") {
				statements = append(statements, "GRANT USAGE, SELECT ON SEQUENCE "+name+" TO "+quoted)
			}
			continue
		}
		statements = append(statements,
			"REVOKE ALL ON TABLE "+name+" FROM "+quoted,
			"GRANT "+strings.Join(tablePrivileges(r.Name), ", ")+" ON TABLE "+name+" TO "+quoted)
	}
	for _, s := range statements {
		if _, err := tx.Exec(ctx, s); err != nil {
			return fmt.Errorf("grant runtime role %q: %s: %w", role, s, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("grant runtime role %q: commit: %w", role, err)
	}
	return nil
}

// relationsSQL lists the tables and sequences of the current schema, each
// sequence with the table that owns it (a serial or OWNED BY column), if
// any.
const relationsSQL = `
SELECT c.relname::text, c.relkind::text, coalesce(t.relname::text, '')
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_depend d ON c.relkind = 'S' AND d.classid = 'pg_class'::regclass AND d.objid = c.oid
    AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
LEFT JOIN pg_class t ON t.oid = d.refobjid
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'S')
ORDER BY c.relname`

func tablePrivileges(table string) []string {
	if p, ok := runtimePrivileges[table]; ok {
		return p
	}
	return defaultPrivileges
}

// checkRuntimeRole refuses a role that does not exist or that could do
// more than GrantRuntime grants: a superuser, or the connected role (the
// owner) or a member of it.
func checkRuntimeRole(ctx context.Context, tx pgx.Tx, role string) error {
	var super, member bool
	err := tx.QueryRow(ctx, `SELECT rolsuper, pg_has_role(oid, current_user, 'MEMBER') FROM pg_roles WHERE rolname = $1`, role).Scan(&super, &member)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("runtime role %q does not exist: create it first (CREATE ROLE %s LOGIN PASSWORD '...')", role, pgx.Identifier{role}.Sanitize())
	case err != nil:
		return fmt.Errorf("runtime role %q: %w", role, err)
	case super:
		return fmt.Errorf("runtime role %q is a superuser, which bypasses every privilege: give serve a role of its own", role)
	case member:
		return fmt.Errorf("runtime role %q is the role running the migrations or a member of it, and so owns the schema: give serve a role of its own", role)
	}
	return nil
}
