package sqliteverify_test

import (
	"database/sql"
	"testing"

	"github.com/resolutionflow/ledgerd/audit"
	"github.com/resolutionflow/ledgerd/audit/audittest"
	"github.com/resolutionflow/ledgerd/audit/verify"
	"github.com/resolutionflow/ledgerd/audit/verify/sqliteverify"
	"github.com/resolutionflow/ledgerd/audit/verify/verifytest"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/internal/sqlitetest"
)

// benchEvents and benchStreams size the benchmark's log: about a million
// events, ten per stream.
const (
	benchEvents  = 1 << 20
	benchStreams = benchEvents / 10
)

// BenchmarkVerify measures how many events a second the verification of a
// large sealed embedded log checks (chains, leaves and a checkpoint every
// thousand events), from the read to the last hash:
//
//	go test ./audit/verify/sqliteverify -run '^$' -bench Verify -benchtime 3x
func BenchmarkVerify(b *testing.B) {
	store := sqlitetest.Open(b)
	key := writeLog(b, store.DB(), benchEvents, benchStreams, nil)
	b.ResetTimer()
	for b.Loop() {
		res, err := sqliteverify.Verify(b.Context(), store.ReadDB(), verify.Options{Key: key.Verifier()})
		if err != nil {
			b.Fatalf("verify: %v", err)
		}
		if res.Events != benchEvents || res.Leaves != benchEvents {
			b.Fatalf("verified %+v, want %d events and leaves", res, benchEvents)
		}
	}
	b.ReportMetric(float64(benchEvents)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// writeLog writes a sealed log of n events over streams streams into db,
// in bulk, as verifytest makes it, and returns the key that signed its
// checkpoints. The events at the positions in altered are written with
// other data than they were hashed and sealed with.
func writeLog(tb testing.TB, db *sql.DB, n, streams int, altered map[int64]bool) *audit.Key {
	tb.Helper()
	ctx := tb.Context()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		tb.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck // committed below
	insert, err := tx.PrepareContext(ctx, `INSERT INTO events (position, id, stream, version, type, data, metadata, recorded_at, prev_hash, hash)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
	if err != nil {
		tb.Fatal(err)
	}
	key := audittest.Key(tb)
	log, tree := verifytest.NewLog(n, streams), verifytest.NewTree(key)
	for e, ok := log.Next(); ok; e, ok = log.Next() {
		data := string(e.Data)
		if altered[e.Position] {
			data = `{"altered":true}`
		}
		_, err := insert.ExecContext(ctx, e.Position, e.ID, e.Stream, e.Version, e.Type, data, string(e.RawMetadata),
			e.RecordedAt.Format(eventstore.TimeLayout), e.PrevHash[:], e.Hash[:])
		if err != nil {
			tb.Fatalf("insert the log: %v", err)
		}
		if err := tree.Add(e, e.Position == int64(n)); err != nil {
			tb.Fatal(err)
		}
	}
	for _, l := range tree.Leaves {
		if _, err := tx.ExecContext(ctx, `INSERT INTO merkle_leaves (leaf_index, position, hash) VALUES (?, ?, ?)`, int64(l.Index), l.Position, l.Hash); err != nil {
			tb.Fatalf("insert the leaves: %v", err)
		}
	}
	for _, c := range tree.Checkpoints {
		if _, err := tx.ExecContext(ctx, `INSERT INTO merkle_checkpoints (size, position, root, sealed_at, note) VALUES (?, ?, ?, ?, ?)`,
			int64(c.Size), c.Position, c.Root, c.Time.Format(eventstore.TimeLayout), c.Note); err != nil {
			tb.Fatalf("insert the checkpoints: %v", err)
		}
	}
	if err := tx.Commit(); err != nil {
		tb.Fatal(err)
	}
	return key
}
