package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/transparency-dev/merkle/compact"

	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/internal/poll"
	"github.com/resolutionflow/ledgerd/leader"
)

// SealerName is the name of the sealer's leader lock.
const SealerName = "audit.sealer"

// Defaults of SealerConfig.
const (
	DefaultInterval     = time.Second
	DefaultBatchSize    = 1000
	DefaultPollInterval = 500 * time.Millisecond
	DefaultRetryDelay   = time.Second
)

// SealerConfig tunes the sealer. Zero fields take the defaults.
type SealerConfig struct {
	// Interval is the shortest time between two checkpoints while events
	// trickle in (DefaultInterval); a full batch is sealed at once.
	Interval time.Duration
	// BatchSize is the most leaves one checkpoint adds (DefaultBatchSize).
	BatchSize int
	// PollInterval is how often the log is read for appends that no
	// wake-up signalled, those of other processes (DefaultPollInterval).
	PollInterval time.Duration
	// RetryDelay is the wait after a failure (DefaultRetryDelay).
	RetryDelay time.Duration
}

func (c SealerConfig) withDefaults() SealerConfig {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.Interval, DefaultInterval)
	def(&c.PollInterval, DefaultPollInterval)
	def(&c.RetryDelay, DefaultRetryDelay)
	if c.BatchSize <= 0 {
		c.BatchSize = DefaultBatchSize
	}
	return c
}

// Leaves is the log as the tree reads it.
type Leaves interface {
	// ReadLeaves returns up to limit events with a position greater than
	// after, in position order, never skipping one that commits late
	// (eventstore.Store.ReadAll's guarantee).
	ReadLeaves(ctx context.Context, after int64, limit int) ([]Leaf, error)
}

// Publisher hands each new checkpoint to an outside witness.
type Publisher interface {
	Publish(ctx context.Context, c Checkpoint) error
}

// Sealer appends the log's events to the tree and records checkpoints. Run
// it in every process: the leader lock SealerName makes one seal at a time.
// It only reads the log, so appends never wait for it.
type Sealer struct {
	leaves    Leaves
	store     Store
	key       *Key
	locker    leader.Locker
	wake      func() <-chan struct{}
	publisher Publisher
	logger    *slog.Logger
	cfg       SealerConfig

	// now is the clock of the checkpoints' times.
	now func() time.Time
}

// NewSealer returns a sealer of leaves into store, signing with key.
// wake, when not nil, returns a channel closed at the next append made in
// this process; publisher, when not nil, receives each checkpoint once it
// is stored; logger may be nil for slog.Default().
func NewSealer(leaves Leaves, store Store, key *Key, locker leader.Locker, wake func() <-chan struct{}, publisher Publisher, logger *slog.Logger, cfg SealerConfig) *Sealer {
	if logger == nil {
		logger = slog.Default()
	}
	if wake == nil {
		wake = func() <-chan struct{} { return nil }
	}
	return &Sealer{
		leaves: leaves, store: store, key: key, locker: locker, wake: wake, publisher: publisher,
		logger: logger.With("component", "sealer"), cfg: cfg.withDefaults(), now: time.Now,
	}
}

// Run seals the log until ctx ends, then returns nil. It waits for the
// leader lock, seals while it holds it, and waits again when it loses it.
// Failures are logged and retried.
func (s *Sealer) Run(ctx context.Context) error {
	for {
		lease, err := s.locker.Acquire(ctx, SealerName)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("sealer: %w", err)
		}
		err = s.lead(lease.Context(), lease.Fence())
		lease.Release()
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, leader.ErrDeposed):
			s.logger.WarnContext(ctx, "sealer deposed: its lease expired or passed to another process", "err", err)
		case err != nil:
			s.logger.ErrorContext(ctx, "sealer failed, retrying", "err", err, "retry_in", s.cfg.RetryDelay)
			if !poll.Sleep(ctx, s.cfg.RetryDelay, nil) {
				return nil
			}
		default:
			s.logger.WarnContext(ctx, "sealer lost leadership")
		}
	}
}

// tree is the sealer's view of the tree: the compact range of its leaves
// and its newest checkpoint.
type tree struct {
	rng  *compact.Range
	last Checkpoint
}

// load reads the tree as the newest checkpoint left it.
func (s *Sealer) load(ctx context.Context) (tree, error) {
	last, ok, err := s.store.Latest(ctx)
	if err != nil {
		return tree{}, fmt.Errorf("read the latest checkpoint: %w", err)
	}
	if !ok {
		return tree{rng: rangeFactory.NewEmptyRange(0)}, nil
	}
	hashes, err := s.store.Hashes(ctx, compact.RangeNodes(0, last.Size, nil))
	if err != nil {
		return tree{}, fmt.Errorf("read the tree of size %d: %w", last.Size, err)
	}
	rng, err := rangeFactory.NewRange(0, last.Size, hashes)
	if err != nil {
		return tree{}, fmt.Errorf("read the tree of size %d: %w", last.Size, err)
	}
	root, err := rng.GetRootHash(nil)
	if err != nil {
		return tree{}, err
	}
	if !bytes.Equal(root, last.Root) {
		return tree{}, fmt.Errorf("the stored tree of size %d has root %x, its checkpoint says %x", last.Size, root, last.Root)
	}
	return tree{rng: rng, last: last}, nil
}

// lead seals while ctx, the leadership's context, lasts, each seal fenced
// by the lease's fence; it returns nil when ctx ends, and ErrDeposed when
// a seal finds the lease taken over.
func (s *Sealer) lead(ctx context.Context, fence leader.Fence) error {
	t, err := s.load(ctx)
	if err != nil {
		return stopped(ctx, err)
	}
	s.logger.InfoContext(ctx, "sealer leading", "size", t.last.Size, "position", t.last.Position)
	s.publish(ctx, t.last)
	for {
		wake := s.wake()
		leaves, err := s.leaves.ReadLeaves(ctx, t.last.Position, s.cfg.BatchSize)
		if err != nil {
			return stopped(ctx, fmt.Errorf("read the log after %d: %w", t.last.Position, err))
		}
		if len(leaves) == 0 {
			if !poll.Sleep(ctx, s.cfg.PollInterval, wake) {
				return nil
			}
			continue
		}
		// A batch that is not full waits for the interval since the last
		// checkpoint, and gathers what else arrives meanwhile.
		if wait := t.last.Time.Add(s.cfg.Interval).Sub(s.now()); len(leaves) < s.cfg.BatchSize && wait > 0 {
			if !poll.Sleep(ctx, wait, nil) {
				return nil
			}
			continue
		}
		next, err := s.seal(ctx, fence, t, leaves)
		if errors.Is(err, ErrStale) {
			s.logger.WarnContext(ctx, "the tree grew under this sealer, reloading", "size", t.last.Size)
			if t, err = s.load(ctx); err != nil {
				return stopped(ctx, err)
			}
			continue
		}
		if err != nil {
			return stopped(ctx, err)
		}
		t = next
		s.publish(ctx, t.last)
	}
}

// seal appends leaves to the tree t and stores them, the nodes they
// complete and the new checkpoint in one transaction, fenced by fence. t is
// left as it was.
func (s *Sealer) seal(ctx context.Context, fence leader.Fence, t tree, leaves []Leaf) (tree, error) {
	rng, err := rangeFactory.NewRange(0, t.rng.End(), append([][]byte(nil), t.rng.Hashes()...))
	if err != nil {
		return t, err
	}
	add := Seal{Fence: fence}
	visit := func(id compact.NodeID, hash []byte) {
		if id.Level > 0 {
			add.Nodes = append(add.Nodes, Node{Level: id.Level, Index: id.Index, Hash: hash})
		}
	}
	for _, l := range leaves {
		if len(l.EventHash) != HashSize {
			return t, fmt.Errorf("event at position %d has a hash of %d bytes, want %d", l.Position, len(l.EventHash), HashSize)
		}
		leaf := StoredLeaf{Index: rng.End(), Position: l.Position, Hash: LeafHash(l.EventHash)}
		if err := rng.Append(leaf.Hash, visit); err != nil {
			return t, err
		}
		add.Leaves = append(add.Leaves, leaf)
	}
	root, err := rng.GetRootHash(nil)
	if err != nil {
		return t, err
	}
	last := leaves[len(leaves)-1].Position
	if add.Checkpoint, err = s.key.Sign(rng.End(), root, last, s.now()); err != nil {
		return t, err
	}
	if err := s.store.Seal(ctx, add); err != nil {
		return t, fmt.Errorf("seal positions %d to %d: %w", leaves[0].Position, last, err)
	}
	s.logger.DebugContext(ctx, "sealed", "size", rng.End(), "position", last, "leaves", len(leaves))
	return tree{rng: rng, last: add.Checkpoint}, nil
}

// publish hands c to the publisher, if any and if c is a checkpoint; a
// failure is logged: the witness misses that checkpoint, and gets the
// newest again at the next leadership.
func (s *Sealer) publish(ctx context.Context, c Checkpoint) {
	if s.publisher == nil || c.Size == 0 {
		return
	}
	if err := s.publisher.Publish(ctx, c); err != nil && ctx.Err() == nil {
		s.logger.WarnContext(ctx, "publish checkpoint", "size", c.Size, "err", err)
	}
}

// stopped returns nil for an error caused by ctx ending, err otherwise.
func stopped(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// EventLog is the global event log, as eventstore.Store reads it.
type EventLog interface {
	ReadAll(ctx context.Context, after int64, limit int) ([]eventstore.Event, error)
}

// EventLeaves reads the event log as leaves: each event's stored hash, in
// position order. It implements Leaves.
type EventLeaves struct {
	Log EventLog
}

// ReadLeaves implements Leaves.
func (l EventLeaves) ReadLeaves(ctx context.Context, after int64, limit int) ([]Leaf, error) {
	events, err := l.Log.ReadAll(ctx, after, limit)
	if err != nil {
		return nil, err
	}
	leaves := make([]Leaf, len(events))
	for i, e := range events {
		leaves[i] = Leaf{Position: e.Position, EventHash: e.Hash[:]}
	}
	return leaves, nil
}
