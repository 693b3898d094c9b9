package sqliteviews

import (
	"strings"
	"testing"

	"github.com/resolutionflow/ledgerd/internal/sqlitetest"
)

// TestPages_ReadByIndexRange checks that a page after a cursor is one range
// search of its list's index, started at the cursor, with no sort: a late
// page costs what the first does; each row's data key is one search of
// data_keys' primary key.
func TestPages_ReadByIndexRange(t *testing.T) {
	const keySearch = "SEARCH k USING INDEX sqlite_autoindex_data_keys_1 (stream_id=?) LEFT-JOIN"
	db := sqlitetest.Open(t).ReadDB()
	for _, c := range []struct {
		query, want string
		args        []any
	}{
		{queueSQL + queueAfterSQL + queueOrderSQL,
			"SEARCH h USING INDEX handoffs_queue (account_id=? AND team_id=? AND (queue_class,created_at,id)>(?,?,?))\n" + keySearch,
			[]any{"a", "t", 1, "2025", "i", 10}},
		{historySQL + historyAfterSQL + historyOrderSQL,
			"SEARCH h USING INDEX handoffs_history (account_id=? AND session_id=? AND (created_at,id)<(?,?))\n" + keySearch,
			[]any{"a", "s", "2025", "i", 10}},
	} {
		rows, err := db.QueryContext(t.Context(), `EXPLAIN QUERY PLAN `+c.query, c.args...)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		if text := strings.Join(plan, "\n"); text != c.want {
			t.Errorf("plan of a page:\n%s\nwant only:\n%s", text, c.want)
		}
	}
}
