// Package audittest is the conformance suite of audit.Store: every store
// must pass it, with the sealer and the prover running on it.
package audittest

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/resolutionflow/ledgerd/audit"
	"github.com/resolutionflow/ledgerd/internal/ledgertest"
	"github.com/resolutionflow/ledgerd/leader"
)

// waitLimit bounds every wait for the sealer.
const waitLimit = 30 * time.Second

// Log is a log of leaves the suite appends to: each test's own, read by the
// sealer as the event log is.
type Log struct {
	mu     sync.Mutex
	leaves []audit.Leaf
}

// Add appends n leaves, each with a hash made from its position; positions
// skip a number now and then, as PostgreSQL's may.
func (l *Log) Add(n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	pos := int64(0)
	if len(l.leaves) > 0 {
		pos = l.leaves[len(l.leaves)-1].Position
	}
	for range n {
		pos++
		if pos%5 == 0 {
			pos++ // a hole
		}
		l.leaves = append(l.leaves, audit.Leaf{Position: pos, EventHash: EventHash(pos)})
	}
}

// EventHash is the 32-byte hash the suite gives the event at position.
func EventHash(position int64) []byte {
	h := sha256.Sum256(binary.BigEndian.AppendUint64(nil, uint64(position)))
	return h[:]
}

// ReadLeaves implements audit.Leaves.
func (l *Log) ReadLeaves(_ context.Context, after int64, limit int) ([]audit.Leaf, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	i, _ := slices.BinarySearchFunc(l.leaves, after+1, func(e audit.Leaf, p int64) int { return int(e.Position - p) })
	return slices.Clone(l.leaves[i:min(len(l.leaves), i+limit)]), nil
}

// All returns the log's leaves.
func (l *Log) All() []audit.Leaf {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.leaves)
}

// Key returns a new signing key.
func Key(tb testing.TB) *audit.Key {
	tb.Helper()
	skey, _, err := audit.GenerateKey("ledgerd.test")
	if err != nil {
		tb.Fatal(err)
	}
	k, err := audit.ParseKey(skey)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// Config makes the sealer quick: small batches, no wait between
// checkpoints.
func Config() audit.SealerConfig {
	return audit.SealerConfig{Interval: time.Millisecond, BatchSize: 7, PollInterval: 10 * time.Millisecond, RetryDelay: 10 * time.Millisecond}
}

// Run runs the suite against the stores open makes, a new empty one each
// call.
func Run(t *testing.T, open func(tb testing.TB) audit.Store) {
	t.Run("ProofsOfEveryPosition", func(t *testing.T) { t.Parallel(); testProofs(t, open(t)) })
	t.Run("SealerResumes", func(t *testing.T) { t.Parallel(); testResume(t, open(t)) })
	t.Run("StaleSeal", func(t *testing.T) { t.Parallel(); testStale(t, open(t)) })
	t.Run("TwoSealers", func(t *testing.T) { t.Parallel(); testTwoSealers(t, open(t)) })
}

// SealAll runs a sealer of log into store until the newest checkpoint
// holds every leaf of log, then stops it.
func SealAll(tb testing.TB, log *Log, store audit.Store, key *audit.Key) {
	tb.Helper()
	SealUntil(tb, log, uint64(len(log.All())), store, key)
}

// SealUntil runs a sealer of leaves into store until the newest
// checkpoint holds want leaves, then stops it.
func SealUntil(tb testing.TB, leaves audit.Leaves, want uint64, store audit.Store, key *audit.Key) {
	tb.Helper()
	s := audit.NewSealer(leaves, store, key, leader.NewLocal(), nil, nil, nil, Config())
	stop := ledgertest.Go(context.Background(), tb, "sealer", s.Run)
	ledgertest.WaitUntil(tb, waitLimit, "the sealer seals every leaf", func() bool {
		c, ok, err := store.Latest(tb.Context())
		if err != nil {
			tb.Fatal(err)
		}
		return ok && c.Size == want
	})
	stop()
}

// Root returns the root hash of the tree of leaves, computed afresh.
func Root(tb testing.TB, leaves []audit.Leaf) []byte {
	tb.Helper()
	r := (&compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}).NewEmptyRange(0)
	for _, l := range leaves {
		if err := r.Append(audit.LeafHash(l.EventHash), nil); err != nil {
			tb.Fatal(err)
		}
	}
	root, err := r.GetRootHash(nil)
	if err != nil {
		tb.Fatal(err)
	}
	return root
}

// checkpoints returns the checkpoint of every size from 1 to n that has
// one.
func checkpoints(tb testing.TB, store audit.Store, n uint64) []audit.Checkpoint {
	tb.Helper()
	var cs []audit.Checkpoint
	for size := uint64(1); size <= n; size++ {
		c, err := store.CheckpointOfSize(tb.Context(), size)
		if errors.Is(err, audit.ErrNotFound) {
			continue
		}
		if err != nil {
			tb.Fatal(err)
		}
		cs = append(cs, c)
	}
	return cs
}

// testProofs seals a small log in several checkpoints and checks, with the
// library's verifier, the inclusion proof of every position against every
// checkpoint that holds it, and consistency proofs between sizes.
func testProofs(t *testing.T, store audit.Store) {
	var log Log
	log.Add(40)
	key := Key(t)
	SealAll(t, &log, store, key)
	leaves := log.All()
	prover := audit.NewProver(store)
	ctx := t.Context()

	cs := checkpoints(t, store, uint64(len(leaves)))
	if len(cs) < 3 {
		t.Fatalf("%d checkpoints, want several (batches of %d)", len(cs), Config().BatchSize)
	}
	for _, c := range cs {
		opened, err := audit.OpenCheckpoint([]byte(c.Note), key.Verifier())
		if err != nil {
			t.Fatalf("checkpoint of size %d does not verify: %v", c.Size, err)
		}
		want := Root(t, leaves[:c.Size])
		if opened.Size != c.Size || string(opened.Root) != string(want) || opened.Position != leaves[c.Size-1].Position {
			t.Fatalf("checkpoint note %+v, want size %d, root %x, position %d", opened, c.Size, want, leaves[c.Size-1].Position)
		}
		for i, l := range leaves[:c.Size] {
			inc, err := prover.Inclusion(ctx, l.Position, c.Size)
			if err != nil {
				t.Fatalf("inclusion of position %d in size %d: %v", l.Position, c.Size, err)
			}
			if inc.Leaf.Index != uint64(i) || string(inc.Leaf.Hash) != string(audit.LeafHash(l.EventHash)) {
				t.Fatalf("leaf of position %d: %+v, want index %d", l.Position, inc.Leaf, i)
			}
			if err := proof.VerifyInclusion(rfc6962.DefaultHasher, inc.Leaf.Index, c.Size, inc.Leaf.Hash, inc.Hashes, opened.Root); err != nil {
				t.Fatalf("inclusion proof of position %d in size %d: %v", l.Position, c.Size, err)
			}
		}
	}
	if _, err := prover.Inclusion(ctx, leaves[len(leaves)-1].Position+1, 0); err == nil {
		t.Fatal("inclusion of a position not sealed: no error")
	}
	if _, err := prover.Inclusion(ctx, leaves[len(leaves)-1].Position, cs[0].Size); err == nil {
		t.Fatal("inclusion of a position beyond the tree asked for: no error")
	}
	n := uint64(len(leaves))
	for _, pair := range [][2]uint64{{1, 1}, {1, 2}, {3, 7}, {4, 8}, {5, n}, {8, n}, {16, 33}, {n - 1, n}, {n, n}} {
		c, err := prover.Consistency(ctx, pair[0], pair[1])
		if err != nil {
			t.Fatalf("consistency %v: %v", pair, err)
		}
		root1, root2 := Root(t, leaves[:pair[0]]), Root(t, leaves[:pair[1]])
		if string(c.FromRoot) != string(root1) || string(c.ToRoot) != string(root2) {
			t.Fatalf("consistency %v: roots %x, %x; want %x, %x", pair, c.FromRoot, c.ToRoot, root1, root2)
		}
		if err := proof.VerifyConsistency(rfc6962.DefaultHasher, pair[0], pair[1], c.Hashes, root1, root2); err != nil {
			t.Fatalf("consistency proof %v: %v", pair, err)
		}
	}
	for _, pair := range [][2]uint64{{0, 3}, {5, 4}, {1, n + 1}} {
		if _, err := prover.Consistency(ctx, pair[0], pair[1]); err == nil {
			t.Fatalf("consistency %v: no error", pair)
		}
	}
}

// testResume seals part of a log, stops the sealer, lets the log grow and
// starts a new sealer: the tree holds every leaf once, in order.
func testResume(t *testing.T, store audit.Store) {
	var log Log
	key := Key(t)
	log.Add(10)
	SealAll(t, &log, store, key)
	log.Add(25)
	SealAll(t, &log, store, key)
	leaves := log.All()
	head, err := audit.NewProver(store).Head(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if want := Root(t, leaves); head.Size != uint64(len(leaves)) || string(head.Root) != string(want) {
		t.Fatalf("head after a restart: size %d root %x, want %d %x", head.Size, head.Root, len(leaves), want)
	}
	for i, l := range leaves {
		got, err := store.LeafAt(t.Context(), l.Position)
		if err != nil || got.Index != uint64(i) {
			t.Fatalf("leaf of position %d = %+v, %v; want index %d", l.Position, got, err, i)
		}
	}
}

// testStale seals the same first leaf twice: the second is refused with
// audit.ErrStale and stores nothing.
func testStale(t *testing.T, store audit.Store) {
	key := Key(t)
	seal := func(position int64) error {
		leaf := audit.StoredLeaf{Index: 0, Position: position, Hash: audit.LeafHash(EventHash(position))}
		c, err := key.Sign(1, leaf.Hash, position, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return store.Seal(t.Context(), audit.Seal{Leaves: []audit.StoredLeaf{leaf}, Checkpoint: c})
	}
	if err := seal(1); err != nil {
		t.Fatal(err)
	}
	if err := seal(2); !errors.Is(err, audit.ErrStale) {
		t.Fatalf("a second seal of leaf 0 = %v, want audit.ErrStale", err)
	}
	if _, err := store.LeafAt(t.Context(), 2); !errors.Is(err, audit.ErrNotFound) {
		t.Fatalf("leaf of the refused seal: %v, want audit.ErrNotFound", err)
	}
}

// testTwoSealers runs two sealers at once on one store, each with a lock
// of its own, as a deposed leader still sealing beside the new one: the
// tree they make together holds every leaf once, in order.
func testTwoSealers(t *testing.T, store audit.Store) {
	var log Log
	log.Add(150)
	key := Key(t)
	for range 2 {
		s := audit.NewSealer(&log, store, key, leader.NewLocal(), nil, nil, nil, Config())
		ledgertest.Go(context.Background(), t, "sealer", s.Run)
	}
	leaves := log.All()
	ledgertest.WaitUntil(t, waitLimit, "the sealers seal every leaf", func() bool {
		c, ok, err := store.Latest(t.Context())
		return err == nil && ok && c.Size == uint64(len(leaves))
	})
	head, err := audit.NewProver(store).Head(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if want := Root(t, leaves); string(head.Root) != string(want) {
		t.Fatalf("root %x after two sealers, want %x", head.Root, want)
	}
	for i, l := range leaves {
		got, err := store.LeafAt(t.Context(), l.Position)
		if err != nil || got.Index != uint64(i) {
			t.Fatalf("leaf of position %d = %+v, %v; want index %d", l.Position, got, err, i)
		}
	}
}
