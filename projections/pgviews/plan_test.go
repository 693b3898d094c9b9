package pgviews

import (
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/resolutionflow/ledgerd/internal/pgtest"
)

// TestPages_ReadByIndexRange checks that a page after a cursor is one range
// scan of its list's index, started at the cursor, with no sort: a late
// page costs what the first does; each row's data key is found by
// data_keys' primary key, not by a scan of the table. Sequential scans are turned off, as the
// planner would choose one on a table this small.
func TestPages_ReadByIndexRange(t *testing.T) {
	pool := pgtest.NewPool(t, 0)
	u := pgUUID(uuid.New())
	for _, c := range []struct {
		query, index, cond string
		args               []any
	}{
		{queueSQL + queueAfterSQL + queueOrderSQL, "handoffs_queue", "ROW(queue_class, created_at, id) > ROW(",
			[]any{u, u, 10, 1, time.Now(), u}},
		{historySQL + historyAfterSQL + historyOrderSQL, "handoffs_history", "ROW(created_at, id) < ROW(",
			[]any{u, u, 10, time.Now(), u}},
	} {
		var plan []string
		err := pgx.BeginFunc(t.Context(), pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(t.Context(), `SET LOCAL enable_seqscan = off`); err != nil {
				return err
			}
			// pgx.CollectRows reports the query's error.
			rows, _ := tx.Query(t.Context(), `EXPLAIN `+c.query, c.args...)
			var err error
			plan, err = pgx.CollectRows(rows, pgx.RowTo[string])
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		text := strings.Join(plan, "\n")
		if !strings.Contains(text, "Index Scan") || !strings.Contains(text, c.index) || !strings.Contains(text, c.cond) || strings.Contains(text, "Sort") ||
			!strings.Contains(text, "Index Scan using data_keys_pkey") || strings.Contains(text, "Hash") {
			t.Errorf("plan of a page of %s, want an index scan of %s from the cursor and no sort:\n%s", c.index, c.index, text)
		}
	}
}
