package audit

import (
	"context"
	"errors"
	"fmt"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"

	"github.com/resolutionflow/ledgerd/domain"
)

// Store keeps the tree: its leaves, the roots of its perfect subtrees and
// its checkpoints. pgaudit and sqliteaudit implement it; audittest is its
// conformance suite.
type Store interface {
	// Latest returns the newest checkpoint; false when none is recorded.
	Latest(ctx context.Context) (Checkpoint, bool, error)
	// CheckpointOfSize returns the checkpoint of the tree of size leaves;
	// an error matching ErrNotFound when none was recorded at that size.
	CheckpointOfSize(ctx context.Context, size uint64) (Checkpoint, error)
	// LeafAt returns the leaf of the event at position; an error matching
	// ErrNotFound when that position is not sealed.
	LeafAt(ctx context.Context, position int64) (StoredLeaf, error)
	// Hashes returns the hashes of the nodes ids, in their order; level 0
	// are the leaves. It fails with an error matching ErrNotFound when one
	// is not stored.
	Hashes(ctx context.Context, ids []compact.NodeID) ([][]byte, error)
	// Seal stores s in one transaction, when the tree has exactly
	// s.Leaves[0].Index leaves; it fails with an error matching ErrStale,
	// storing nothing, when it has more.
	Seal(ctx context.Context, s Seal) error
}

// Prover answers the audit API from a Store.
type Prover struct {
	store Store
}

// NewProver returns a prover of the tree kept in store.
func NewProver(store Store) *Prover { return &Prover{store: store} }

// errNoCheckpoint is the error of a proof asked for before the first
// checkpoint.
var errNoCheckpoint = domain.Errorf(domain.ENOTFOUND, "No checkpoint yet: the log has not been sealed")

// Head returns the newest checkpoint; a domain.ENOTFOUND error before the
// first.
func (p *Prover) Head(ctx context.Context) (Checkpoint, error) {
	c, ok, err := p.store.Latest(ctx)
	switch {
	case err != nil:
		return Checkpoint{}, fmt.Errorf("read the latest checkpoint: %w", err)
	case !ok:
		return Checkpoint{}, errNoCheckpoint
	}
	return c, nil
}

// Inclusion is the proof that a leaf is in the tree a checkpoint signs.
type Inclusion struct {
	Leaf       StoredLeaf
	Checkpoint Checkpoint
	Hashes     [][]byte
}

// Inclusion returns the proof that the event at position is in the tree
// of the checkpoint of size leaves (size 0: the newest checkpoint). It
// fails with domain.ENOTFOUND when the position is not sealed in that tree
// or no checkpoint has that size.
func (p *Prover) Inclusion(ctx context.Context, position int64, size uint64) (Inclusion, error) {
	c, err := p.checkpoint(ctx, size)
	if err != nil {
		return Inclusion{}, err
	}
	leaf, err := p.store.LeafAt(ctx, position)
	switch {
	case errors.Is(err, ErrNotFound) || err == nil && leaf.Index >= c.Size:
		return Inclusion{}, domain.Errorf(domain.ENOTFOUND, "Position %d is not sealed in the tree of size %d (its last position is %d)", position, c.Size, c.Position)
	case err != nil:
		return Inclusion{}, fmt.Errorf("read the leaf of position %d: %w", position, err)
	}
	nodes, err := proof.Inclusion(leaf.Index, c.Size)
	if err != nil {
		return Inclusion{}, fmt.Errorf("inclusion proof of leaf %d: %w", leaf.Index, err)
	}
	hashes, err := p.rehash(ctx, nodes)
	if err != nil {
		return Inclusion{}, fmt.Errorf("inclusion proof of leaf %d in size %d: %w", leaf.Index, c.Size, err)
	}
	return Inclusion{Leaf: leaf, Checkpoint: c, Hashes: hashes}, nil
}

// checkpoint returns the checkpoint of size leaves, or the newest for 0.
func (p *Prover) checkpoint(ctx context.Context, size uint64) (Checkpoint, error) {
	if size == 0 {
		return p.Head(ctx)
	}
	c, err := p.store.CheckpointOfSize(ctx, size)
	if errors.Is(err, ErrNotFound) {
		return Checkpoint{}, domain.Errorf(domain.ENOTFOUND, "No checkpoint of size %d: a receipt is made against a checkpoint's size (GET /audit/head gives the newest)", size)
	}
	if err != nil {
		return Checkpoint{}, fmt.Errorf("read the checkpoint of size %d: %w", size, err)
	}
	return c, nil
}

// Consistency is the proof that the tree of size From is a prefix of the
// tree of size To.
type Consistency struct {
	From, To         uint64
	FromRoot, ToRoot []byte
	Hashes           [][]byte
	// Checkpoint is the newest checkpoint, which bounds the sizes.
	Checkpoint Checkpoint
}

// Consistency returns the consistency proof between the trees of from and
// to leaves (to 0: the newest checkpoint's size), with both roots. It
// needs 1 <= from <= to <= the newest checkpoint's size; other sizes are
// domain.EINVALID.
func (p *Prover) Consistency(ctx context.Context, from, to uint64) (Consistency, error) {
	head, err := p.Head(ctx)
	if err != nil {
		return Consistency{}, err
	}
	if to == 0 {
		to = head.Size
	}
	switch {
	case to > head.Size:
		return Consistency{}, domain.Errorf(domain.EINVALID, "to: %d is beyond the newest checkpoint's size %d", to, head.Size)
	case from < 1 || from > to:
		return Consistency{}, domain.Errorf(domain.EINVALID, "from: must be between 1 and to (%d)", to)
	}
	nodes, err := proof.Consistency(from, to)
	if err != nil {
		return Consistency{}, fmt.Errorf("consistency proof from %d to %d: %w", from, to, err)
	}
	c := Consistency{From: from, To: to, Checkpoint: head}
	if c.Hashes, err = p.rehash(ctx, nodes); err != nil {
		return Consistency{}, fmt.Errorf("consistency proof from %d to %d: %w", from, to, err)
	}
	if c.FromRoot, err = p.Root(ctx, from); err != nil {
		return Consistency{}, err
	}
	if c.ToRoot, err = p.Root(ctx, to); err != nil {
		return Consistency{}, err
	}
	return c, nil
}

// Root returns the root hash of the tree of the first size leaves, folded
// from the perfect subtrees that cover them.
func (p *Prover) Root(ctx context.Context, size uint64) ([]byte, error) {
	hashes, err := p.store.Hashes(ctx, compact.RangeNodes(0, size, nil))
	if err != nil {
		return nil, fmt.Errorf("root of size %d: %w", size, err)
	}
	r, err := rangeFactory.NewRange(0, size, hashes)
	if err != nil {
		return nil, fmt.Errorf("root of size %d: %w", size, err)
	}
	return r.GetRootHash(nil)
}

// rehash reads the stored nodes of a proof and rehashes its ephemeral
// node.
func (p *Prover) rehash(ctx context.Context, nodes proof.Nodes) ([][]byte, error) {
	hashes, err := p.store.Hashes(ctx, nodes.IDs)
	if err != nil {
		return nil, err
	}
	return nodes.Rehash(hashes, hasher.HashChildren)
}
