package pgaudit_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/resolutionflow/ledgerd/audit"
	"github.com/resolutionflow/ledgerd/audit/audittest"
	"github.com/resolutionflow/ledgerd/audit/pgaudit"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/eventstore/pgstore"
	"github.com/resolutionflow/ledgerd/internal/ledgertest"
	"github.com/resolutionflow/ledgerd/internal/pgtest"
	"github.com/resolutionflow/ledgerd/leader"
	"github.com/resolutionflow/ledgerd/leader/pgleader"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func TestConformance(t *testing.T) {
	audittest.Run(t, func(tb testing.TB) audit.Store {
		return pgaudit.New(pgtest.NewPool(tb, 0))
	})
}

// TestSeal_AppendsDoNotWait holds a seal's transaction open and appends to
// the log meanwhile: the appends commit at once.
func TestSeal_AppendsDoNotWait(t *testing.T) {
	pool := pgtest.NewPool(t, 0)
	store, events := pgaudit.New(pool), pgstore.New(pool)
	inside, release := make(chan struct{}), make(chan struct{})
	var first sync.Once
	pgaudit.SetDuringSeal(store, func() {
		first.Do(func() { close(inside) })
		<-release
	})
	var log audittest.Log
	log.Add(20)
	sealer := audit.NewSealer(&log, store, audittest.Key(t), leader.NewLocal(), nil, nil, nil, audittest.Config())
	ledgertest.Go(t.Context(), t, "sealer", sealer.Run)
	select {
	case <-inside:
	case <-time.After(30 * time.Second):
		t.Fatal("the sealer did not begin a seal within 30s")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	for i := range 10 {
		stream := fmt.Sprintf("session:%s:%s", uuid.New(), uuid.New())
		if _, err := events.Append(ctx, stream, eventstore.NoStream, []eventstore.NewEvent{{Type: "HandoffParked", Data: []byte(`{}`)}}); err != nil {
			t.Fatalf("append %d while a seal is open: %v", i, err)
		}
	}
	close(release)
	ledgertest.WaitUntil(t, 30*time.Second, "the sealer seals the log", func() bool {
		c, _, err := store.Latest(t.Context())
		return err == nil && c.Size == 20
	})
}

// BenchmarkInclusion serves inclusion proofs of random positions from a
// tree of a million leaves, stored directly (no events):
//
//	go test ./audit/pgaudit -run '^$' -bench Inclusion -benchtime 2000x
func BenchmarkInclusion(b *testing.B) {
	const size = 1 << 20
	store := pgaudit.New(pgtest.NewPool(b, 0))
	key := audittest.Key(b)
	rng := (&compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}).NewEmptyRange(0)
	var seal audit.Seal
	visit := func(id compact.NodeID, hash []byte) {
		if id.Level > 0 {
			seal.Nodes = append(seal.Nodes, audit.Node{Level: id.Level, Index: id.Index, Hash: hash})
		}
	}
	for i := range int64(size) {
		leaf := audit.StoredLeaf{Index: uint64(i), Position: i + 1, Hash: audit.LeafHash(audittest.EventHash(i + 1))}
		if err := rng.Append(leaf.Hash, visit); err != nil {
			b.Fatal(err)
		}
		seal.Leaves = append(seal.Leaves, leaf)
	}
	root, err := rng.GetRootHash(nil)
	if err != nil {
		b.Fatal(err)
	}
	if seal.Checkpoint, err = key.Sign(size, root, size, time.Now()); err != nil {
		b.Fatal(err)
	}
	if err := store.Seal(b.Context(), seal); err != nil {
		b.Fatal(err)
	}
	prover := audit.NewProver(store)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		position := int64(i*7919%size) + 1
		inc, err := prover.Inclusion(b.Context(), position, 0)
		if err != nil {
			b.Fatal(err)
		}
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, inc.Leaf.Index, size, inc.Leaf.Hash, inc.Hashes, root); err != nil {
			b.Fatal(err)
		}
	}
}

// TestSeal_FencedByLease: a seal carrying the fence of a lease that has
// passed to a new tenure is refused with leader.ErrDeposed and stores
// nothing; the current tenure's seal is stored.
func TestSeal_FencedByLease(t *testing.T) {
	pool := pgtest.NewPool(t, 0)
	store := pgaudit.New(pool)
	locker, err := pgleader.New(pool, slog.Default(), pgleader.Config{})
	if err != nil {
		t.Fatal(err)
	}
	old, err := locker.Acquire(t.Context(), audit.SealerName)
	if err != nil {
		t.Fatal(err)
	}
	stale := old.Fence()
	old.Release()
	current, err := locker.Acquire(t.Context(), audit.SealerName)
	if err != nil {
		t.Fatal(err)
	}
	defer current.Release()

	seal := oneLeafSeal(t)
	seal.Fence = stale
	if err := store.Seal(t.Context(), seal); !errors.Is(err, leader.ErrDeposed) {
		t.Fatalf("seal with a deposed fence: err = %v, want leader.ErrDeposed", err)
	}
	if _, found, err := store.Latest(t.Context()); err != nil || found {
		t.Fatalf("after a deposed seal: checkpoint found = %v, %v; want none", found, err)
	}
	seal.Fence = current.Fence()
	if err := store.Seal(t.Context(), seal); err != nil {
		t.Fatalf("seal with the current fence: %v", err)
	}
	if c, found, err := store.Latest(t.Context()); err != nil || !found || c.Size != 1 {
		t.Fatalf("after the current seal: %+v, %v, %v; want a checkpoint of size 1", c, found, err)
	}
}

// oneLeafSeal is the seal of a tree of one leaf.
func oneLeafSeal(tb testing.TB) audit.Seal {
	tb.Helper()
	leaf := audit.StoredLeaf{Index: 0, Position: 1, Hash: audit.LeafHash(audittest.EventHash(1))}
	c, err := audittest.Key(tb).Sign(1, leaf.Hash, 1, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	return audit.Seal{Leaves: []audit.StoredLeaf{leaf}, Checkpoint: c}
}
