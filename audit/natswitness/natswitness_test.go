package natswitness_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/resolutionflow/ledgerd/audit"
	"github.com/resolutionflow/ledgerd/audit/audittest"
	"github.com/resolutionflow/ledgerd/audit/natswitness"
	"github.com/resolutionflow/ledgerd/audit/sqliteaudit"
	"github.com/resolutionflow/ledgerd/internal/ledgertest"
	"github.com/resolutionflow/ledgerd/internal/natstest"
	"github.com/resolutionflow/ledgerd/internal/sqlitetest"
	"github.com/resolutionflow/ledgerd/leader"
)

// TestPublisher_EveryCheckpointInTheStream seals a log with the publisher
// and checks that the stream holds each stored checkpoint, in order, each
// verifying with the key, with its headers.
func TestPublisher_EveryCheckpointInTheStream(t *testing.T) {
	srv := natstest.Start(t)
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	pub, err := natswitness.New(nc, "", jetstream.MemoryStorage, 1)
	if err != nil {
		t.Fatal(err)
	}
	db := sqlitetest.Open(t)
	store := sqliteaudit.New(db.DB(), db.ReadDB())
	key := audittest.Key(t)
	var log audittest.Log
	log.Add(30)
	sealer := audit.NewSealer(&log, store, key, leader.NewLocal(), nil, pub, nil, audittest.Config())
	stop := ledgertest.Go(context.Background(), t, "sealer", sealer.Run)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// The sealer publishes a checkpoint after it stores it, making the
	// stream at its first publish: wait for the last checkpoint in the
	// stream, not in the store.
	var stream jetstream.Stream
	ledgertest.WaitUntil(t, 30*time.Second, "the sealer publishes the checkpoint of the whole log", func() bool {
		if stream, err = js.Stream(t.Context(), natswitness.DefaultStream); err != nil {
			return false
		}
		m, err := stream.GetLastMsgForSubject(t.Context(), natswitness.Subject)
		return err == nil && m.Header.Get(natswitness.HeaderTreeSize) == "30"
	})
	stop()

	info, err := stream.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var sizes []uint64
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := stream.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatal(err)
		}
		c, err := audit.OpenCheckpoint(m.Data, key.Verifier())
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		stored, err := store.CheckpointOfSize(t.Context(), c.Size)
		if err != nil || stored.Note != string(m.Data) || m.Subject != natswitness.Subject ||
			m.Header.Get(natswitness.HeaderTreeSize) != strconv.FormatUint(c.Size, 10) ||
			m.Header.Get(natswitness.HeaderPosition) != strconv.FormatInt(c.Position, 10) {
			t.Fatalf("message %d (%s, %v) is not the stored checkpoint of size %d (%v)", seq, m.Subject, m.Header, c.Size, err)
		}
		sizes = append(sizes, c.Size)
	}
	if len(sizes) < 2 || sizes[len(sizes)-1] != 30 {
		t.Fatalf("the stream holds checkpoints of sizes %v, want several ending at 30", sizes)
	}
}
