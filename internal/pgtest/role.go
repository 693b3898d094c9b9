package pgtest

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// NewRole creates a role that may log in, with a name and a password of its
// own and no other attribute (not a superuser), and returns its name and
// the URL of the database at dbURL (a URL from NewDatabase or
// NewEmptyDatabase) connecting as that role. When tb has finished, what the
// role owns in that database passes to the server's superuser, its
// privileges there are dropped, and so is the role. Safe for parallel
// tests.
func NewRole(tb testing.TB, dbURL string) (name, roleURL string) {
	tb.Helper()
	s := sharedServer(tb)
	u, err := url.Parse(dbURL)
	if err != nil {
		tb.Fatalf("pgtest: parse %s: %v", redacted(dbURL), err)
	}
	name, password := "r_"+randomHex(), randomHex()
	if _, err := s.db.ExecContext(tb.Context(), "CREATE ROLE "+quote(name)+" LOGIN PASSWORD '"+password+"'"); err != nil {
		tb.Fatalf("pgtest: create role: %v", err)
	}
	tb.Cleanup(func() {
		// tb.Context is already canceled when cleanups run.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := dropRole(ctx, s, dbURL, name); err != nil {
			tb.Errorf("pgtest: drop role %s: %v", name, err)
		}
	})
	u.User = url.UserPassword(name, password)
	return name, u.String()
}

// dropRole hands what role owns in the database at dbURL to the superuser,
// drops its privileges there, and drops the role.
func dropRole(ctx context.Context, s *server, dbURL, role string) error {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	for _, q := range []string{"REASSIGN OWNED BY " + quote(role) + " TO CURRENT_USER", "DROP OWNED BY " + quote(role)} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return err
		}
	}
	_, err = s.db.ExecContext(ctx, "DROP ROLE "+quote(role))
	return err
}
