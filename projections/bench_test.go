package projections_test

import (
	"flag"
	"testing"
	"time"

	"github.com/resolutionflow/ledgerd/eventstore/pgstore"
	"github.com/resolutionflow/ledgerd/internal/loggen"
	"github.com/resolutionflow/ledgerd/internal/pgtest"
	"github.com/resolutionflow/ledgerd/projections"
	"github.com/resolutionflow/ledgerd/projections/pgviews"
)

var rebuildEvents = flag.Int("rebuild.events", 100_000, "events in the log BenchmarkRebuild rebuilds")

// BenchmarkRebuild times projections.Rebuild over a log of -rebuild.events
// events (escalations and parks, then claims and withdrawals, as commands
// append them) on PostgreSQL, beside, in the same round on the same
// database, two baselines: reading the whole log in the rebuild's pages
// and nothing else (read-events/s: the floor), and the replay event by
// event in the rebuild's transaction that the rebuild did before (and
// falls back to when the store refuses a row: replay-events/s).
// rebuild-events/s is the figure the target is about;
// read-ratio is the rebuild's time over the read's.
func BenchmarkRebuild(b *testing.B) {
	n := *rebuildEvents
	var rebuildTime, readTime, replayTime time.Duration
	var events int
	for b.Loop() {
		ctx := b.Context()
		pool := pgtest.Pool(b, pgtest.NewDatabase(b), 0)
		if _, err := loggen.Postgres(ctx, pool, n, 64); err != nil {
			b.Fatal(err)
		}
		log, views := pgstore.New(pool), pgviews.New(pool)

		start := time.Now()
		for after := int64(0); ; {
			page, err := log.ReadAll(ctx, after, projections.RebuildPage)
			if err != nil {
				b.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			after = page[len(page)-1].Position
		}
		readTime += time.Since(start)

		start = time.Now()
		if err := projections.Rebuild(ctx, log, views); err != nil {
			b.Fatal(err)
		}
		rebuildTime += time.Since(start)

		start = time.Now()
		if err := projections.Replay(ctx, log, views); err != nil {
			b.Fatal(err)
		}
		replayTime += time.Since(start)
		events += n
	}
	b.ReportMetric(float64(events)/rebuildTime.Seconds(), "rebuild-events/s")
	b.ReportMetric(float64(events)/readTime.Seconds(), "read-events/s")
	b.ReportMetric(float64(events)/replayTime.Seconds(), "replay-events/s")
	b.ReportMetric(readTime.Seconds()/rebuildTime.Seconds(), "read-ratio")
}
