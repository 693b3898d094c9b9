package sqliteverify_test

import (
	"testing"

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
	ctx := b.Context()
	store := sqlitetest.Open(b)
	tx, err := store.DB().BeginTx(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	insert, err := tx.PrepareContext(ctx, `INSERT INTO events (position, id, stream, version, type, data, metadata, recorded_at, prev_hash, hash)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
	if err != nil {
		b.Fatal(err)
	}
	key := audittest.Key(b)
	log, tree := verifytest.NewLog(benchEvents, benchStreams), verifytest.NewTree(key)
	for e, ok := log.Next(); ok; e, ok = log.Next() {
		_, err := insert.ExecContext(ctx, e.Position, e.ID, e.Stream, e.Version, e.Type, string(e.Data), string(e.RawMetadata),
			e.RecordedAt.Format(eventstore.TimeLayout), e.PrevHash[:], e.Hash[:])
		if err != nil {
			b.Fatalf("insert the log: %v", err)
		}
		if err := tree.Add(e, e.Position == benchEvents); err != nil {
			b.Fatal(err)
		}
	}
	for _, l := range tree.Leaves {
		if _, err := tx.ExecContext(ctx, `INSERT INTO merkle_leaves (leaf_index, position, hash) VALUES (?, ?, ?)`, int64(l.Index), l.Position, l.Hash); err != nil {
			b.Fatalf("insert the leaves: %v", err)
		}
	}
	for _, c := range tree.Checkpoints {
		if _, err := tx.ExecContext(ctx, `INSERT INTO merkle_checkpoints (size, position, root, sealed_at, note) VALUES (?, ?, ?, ?, ?)`,
			int64(c.Size), c.Position, c.Root, c.Time.Format(eventstore.TimeLayout), c.Note); err != nil {
			b.Fatalf("insert the checkpoints: %v", err)
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		res, err := sqliteverify.Verify(ctx, store.ReadDB(), verify.Options{Key: key.Verifier()})
		if err != nil {
			b.Fatalf("verify: %v", err)
		}
		if res.Events != benchEvents || res.Leaves != benchEvents || res.Checkpoints != len(tree.Checkpoints) {
			b.Fatalf("verified %+v, want %d events and leaves, %d checkpoints", res, benchEvents, len(tree.Checkpoints))
		}
	}
	b.ReportMetric(float64(benchEvents)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
