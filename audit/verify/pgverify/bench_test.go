package pgverify_test

import (
	"os"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/resolutionflow/ledgerd/audit/audittest"
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
// large sealed log checks (chains, leaves and a checkpoint every thousand
// events), from the read to the last hash:
//
//	go test ./audit/verify/pgverify -run '^$' -bench Verify -benchtime 3x
func BenchmarkVerify(b *testing.B) {
	ctx := b.Context()
	pool := pgtest.Pool(b, pgtest.NewDatabase(b), 2)
	key := audittest.Key(b)
	log, tree := verifytest.NewLog(benchEvents, benchStreams), verifytest.NewTree(key)
	_, err := pool.CopyFrom(ctx, pgx.Identifier{"events"},
		[]string{"position", "id", "stream", "version", "type", "data", "metadata", "recorded_at", "prev_hash", "hash"},
		pgx.CopyFromFunc(func() ([]any, error) {
			e, ok := log.Next()
			if !ok {
				return nil, nil
			}
			if err := tree.Add(e, e.Position == benchEvents); err != nil {
				return nil, err
			}
			return []any{e.Position, e.ID, e.Stream, e.Version, e.Type, []byte(e.Data), []byte(e.RawMetadata), e.RecordedAt, e.PrevHash[:], e.Hash[:]}, nil
		}))
	if err != nil {
		b.Fatalf("copy the log in: %v", err)
	}
	_, err = pool.CopyFrom(ctx, pgx.Identifier{"merkle_leaves"}, []string{"leaf_index", "position", "hash"},
		pgx.CopyFromSlice(len(tree.Leaves), func(i int) ([]any, error) {
			l := tree.Leaves[i]
			return []any{int64(l.Index), l.Position, l.Hash}, nil
		}))
	if err != nil {
		b.Fatalf("copy the leaves in: %v", err)
	}
	_, err = pool.CopyFrom(ctx, pgx.Identifier{"merkle_checkpoints"}, []string{"size", "position", "root", "sealed_at", "note"},
		pgx.CopyFromSlice(len(tree.Checkpoints), func(i int) ([]any, error) {
			c := tree.Checkpoints[i]
			return []any{int64(c.Size), c.Position, c.Root, c.Time, c.Note}, nil
		}))
	if err != nil {
		b.Fatalf("copy the checkpoints in: %v", err)
	}
	if _, err := pool.Exec(ctx, `VACUUM ANALYZE`); err != nil {
		b.Fatalf("vacuum: %v", err)
	}
	b.ResetTimer()
	for b.Loop() {
		res, err := pgverify.Verify(ctx, pool, verify.Options{Key: key.Verifier()})
		if err != nil {
			b.Fatalf("verify: %v", err)
		}
		if res.Events != benchEvents || res.Leaves != benchEvents || res.Checkpoints != len(tree.Checkpoints) {
			b.Fatalf("verified %+v, want %d events and leaves, %d checkpoints", res, benchEvents, len(tree.Checkpoints))
		}
	}
	b.ReportMetric(float64(benchEvents)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
