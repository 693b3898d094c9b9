package pgverify_test

import (
	"os"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/resolutionflow/ledgerd/audit/verify"
	"github.com/resolutionflow/ledgerd/audit/verify/pgverify"
	"github.com/resolutionflow/ledgerd/audit/verify/verifytest"
	"github.com/resolutionflow/ledgerd/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// benchEvents and benchStreams size the benchmark's log: about a million
// events, ten per stream.
const (
	benchEvents  = 1 << 20
	benchStreams = benchEvents / 10
)

// BenchmarkVerify measures how many events a second the verification of a
// large log checks, from the read to the last hash:
//
//	go test ./audit/verify/pgverify -run '^$' -bench Verify -benchtime 3x
func BenchmarkVerify(b *testing.B) {
	ctx := b.Context()
	pool := pgtest.Pool(b, pgtest.NewDatabase(b), 2)
	log := verifytest.NewLog(benchEvents, benchStreams)
	_, err := pool.CopyFrom(ctx, pgx.Identifier{"events"},
		[]string{"position", "id", "stream", "version", "type", "data", "metadata", "recorded_at", "prev_hash", "hash"},
		pgx.CopyFromFunc(func() ([]any, error) {
			e, ok := log.Next()
			if !ok {
				return nil, nil
			}
			return []any{e.Position, e.ID, e.Stream, e.Version, e.Type, []byte(e.Data), []byte(e.RawMetadata), e.RecordedAt, e.PrevHash[:], e.Hash[:]}, nil
		}))
	if err != nil {
		b.Fatalf("copy the log in: %v", err)
	}
	if _, err := pool.Exec(ctx, `VACUUM ANALYZE events`); err != nil {
		b.Fatalf("vacuum: %v", err)
	}
	b.ResetTimer()
	for b.Loop() {
		res, err := pgverify.Verify(ctx, pool, verify.Options{})
		if err != nil {
			b.Fatalf("verify: %v", err)
		}
		if res.Events != benchEvents {
			b.Fatalf("verified %d events, want %d", res.Events, benchEvents)
		}
	}
	b.ReportMetric(float64(benchEvents)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
