package pgverify_test

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

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
	// The pool of `ledgerd verify` on two cores: four connections.
	pool := pgtest.Pool(b, pgtest.NewDatabase(b), 4)
	key, checkpoints := writeLog(b, pool, benchEvents, benchStreams)
	for b.Loop() {
		res, err := pgverify.Verify(b.Context(), pool, verify.Options{Key: key})
		if err != nil {
			b.Fatalf("verify: %v", err)
		}
		if res.Events != benchEvents || res.Leaves != benchEvents || res.Checkpoints != checkpoints {
			b.Fatalf("verified %+v, want %d events and leaves, %d checkpoints", res, benchEvents, checkpoints)
		}
	}
	b.ReportMetric(float64(benchEvents)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// TestVerify_ManyBatches verifies a log of several of the reader's
// batches, intact, then with an event changed and an event deleted far
// into it: the checks stop the reader mid-log, and the snapshot still
// answers the queries that name a deleted event.
func TestVerify_ManyBatches(t *testing.T) {
	t.Parallel()
	const events = 5000
	url := pgtest.NewDatabase(t)
	pool := pgtest.Pool(t, url, 2)
	key, checkpoints := writeLog(t, pool, events, 50)
	res, err := pgverify.Verify(t.Context(), pool, verify.Options{Key: key})
	if err != nil || res.Events != events || res.Checkpoints != checkpoints {
		t.Fatalf("verify the intact log: %+v, %v; want %d events, %d checkpoints", res, err, events, checkpoints)
	}
	for _, c := range []struct {
		tamper   string
		position int64
	}{
		{`UPDATE events SET data = '{}' WHERE position = 3500`, 3500},
		{`DELETE FROM events WHERE position = 2100`, 2100},
	} {
		conn, err := pgx.Connect(t.Context(), url)
		if err != nil {
			t.Fatal(err)
		}
		_, err = conn.Exec(t.Context(), `SET session_replication_role = replica; `+c.tamper)
		conn.Close(t.Context())
		if err != nil {
			t.Fatalf("%s: %v", c.tamper, err)
		}
		var failure *verify.Failure
		_, err = pgverify.Verify(t.Context(), pool, verify.Options{Key: key})
		if !errors.As(err, &failure) || failure.Position != c.position {
			t.Fatalf("after %s: verify = %v, want a failure at position %d", c.tamper, err, c.position)
		}
	}
}

// TestVerify_Chunks verifies a log of 1,500 events over 37 streams (two
// checkpoints and a tail), intact and then with two events altered far
// apart, read by several readers in small chunks, as a big log is read:
// each reading counts what the log holds, and names the first altered
// event, though a later chunk may have been read before it.
func TestVerify_Chunks(t *testing.T) {
	t.Parallel()
	const events, streams = 1500, 37
	url := pgtest.NewDatabase(t)
	pool := pgtest.Pool(t, url, 5)
	key, checkpoints := writeLog(t, pool, events, streams)
	readings := []struct {
		readers int
		chunk   int64
	}{{1, 1 << 14}, {2, 7}, {3, 1}, {4, 100}}
	verifyAll := func(t *testing.T, check func(verify.Result, error)) {
		for _, r := range readings {
			restore := pgverify.SetChunks(r.readers, r.chunk)
			res, err := pgverify.Verify(t.Context(), pool, verify.Options{Key: key})
			restore()
			t.Logf("readers=%d chunk=%d", r.readers, r.chunk)
			check(res, err)
		}
	}
	want := verify.Result{Events: events, Streams: streams, Leaves: events, Checkpoints: checkpoints}
	verifyAll(t, func(res verify.Result, err error) {
		if err != nil || res != want {
			t.Fatalf("verify: %+v, %v; want %+v", res, err, want)
		}
	})
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	_, err = conn.Exec(t.Context(), `SET session_replication_role = replica; UPDATE events SET data = '{}' WHERE position IN (321, 1234)`)
	conn.Close(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	verifyAll(t, func(_ verify.Result, err error) {
		var f *verify.Failure
		if !errors.As(err, &f) || f.Position != 321 {
			t.Fatalf("verify: %v; want the failure at position 321", err)
		}
	})
}

// TestVerify_OutlivesTheIdleTimeout verifies on a pool whose sessions end
// a transaction left idle for 300 ms, as the ledger's own pool does (for
// leadership, in seconds), while the checks keep the snapshot's
// transaction idle for a second: the verification still ends, intact,
// with the queries it makes after the scan.
func TestVerify_OutlivesTheIdleTimeout(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	pool := pgtest.Pool(t, url, 4, func(cfg *pgxpool.Config) {
		cfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"] = "300"
	})
	key, checkpoints := writeLog(t, pool, 3000, 30)
	res, err := pgverify.Verify(t.Context(), pool, verify.Options{Key: key, Progress: func(int64) { time.Sleep(time.Second) }})
	if err != nil || res.Events != 3000 || res.Checkpoints != checkpoints {
		t.Fatalf("verify = %+v, %v; want 3000 events and %d checkpoints", res, err, checkpoints)
	}
}

// writeLog writes a sealed log of n events over streams streams into
// pool's database in bulk, and returns the verifier key of its
// checkpoints and their count.
func writeLog(tb testing.TB, pool *pgxpool.Pool, n, streams int) (key string, checkpoints int) {
	tb.Helper()
	ctx := tb.Context()
	signer := audittest.Key(tb)
	log, tree := verifytest.NewLog(n, streams), verifytest.NewTree(signer)
	_, err := pool.CopyFrom(ctx, pgx.Identifier{"events"},
		[]string{"position", "id", "stream", "version", "type", "data", "metadata", "recorded_at", "prev_hash", "hash"},
		pgx.CopyFromFunc(func() ([]any, error) {
			e, ok := log.Next()
			if !ok {
				return nil, nil
			}
			if err := tree.Add(e, e.Position == int64(n)); err != nil {
				return nil, err
			}
			return []any{e.Position, e.ID, e.Stream, e.Version, e.Type, []byte(e.Data), []byte(e.RawMetadata), e.RecordedAt, e.PrevHash[:], e.Hash[:]}, nil
		}))
	if err != nil {
		tb.Fatalf("copy the log in: %v", err)
	}
	_, err = pool.CopyFrom(ctx, pgx.Identifier{"merkle_leaves"}, []string{"leaf_index", "position", "hash"},
		pgx.CopyFromSlice(len(tree.Leaves), func(i int) ([]any, error) {
			l := tree.Leaves[i]
			return []any{int64(l.Index), l.Position, l.Hash}, nil
		}))
	if err != nil {
		tb.Fatalf("copy the leaves in: %v", err)
	}
	_, err = pool.CopyFrom(ctx, pgx.Identifier{"merkle_checkpoints"}, []string{"size", "position", "root", "sealed_at", "note"},
		pgx.CopyFromSlice(len(tree.Checkpoints), func(i int) ([]any, error) {
			c := tree.Checkpoints[i]
			return []any{int64(c.Size), c.Position, c.Root, c.Time, c.Note}, nil
		}))
	if err != nil {
		tb.Fatalf("copy the checkpoints in: %v", err)
	}
	if _, err := pool.Exec(ctx, `VACUUM ANALYZE`); err != nil {
		tb.Fatalf("vacuum: %v", err)
	}
	return signer.Verifier(), len(tree.Checkpoints)
}
