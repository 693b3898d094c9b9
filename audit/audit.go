// Package audit keeps an RFC 6962 Merkle tree over the global event log and
// serves its proofs, as transparency logs (Certificate Transparency, Go's
// checksum database) do: a sealer appends the events' hashes, in position
// order, as the tree's leaves and records signed checkpoints of it; a
// Prover answers the head, inclusion proofs (receipts) and consistency
// proofs from the stored nodes.
//
// # The tree
//
// Leaf i is the i-th event of the log in position order (positions may have
// holes, so each leaf records its position). Its hash is the RFC 6962 leaf
// hash of the event's 32-byte hash: SHA-256(0x00 || event hash). An inner
// node's hash is SHA-256(0x01 || left || right). The store keeps every leaf
// and every perfect subtree's root (level >= 1) as the sealer completes it,
// so any inclusion or consistency proof is a handful of stored nodes plus at
// most one ephemeral node rehashed from a few more (package
// github.com/transparency-dev/merkle/proof).
//
// # Checkpoints
//
// A checkpoint is a signed note (golang.org/x/mod/sumdb/note) whose text is
//
//	<origin>
//	<tree size, decimal>
//	<root hash, standard base64>
//	position <position of the last leaf's event, decimal>
//	time <sealing time, RFC 3339 UTC with nanoseconds>
//
// followed by a blank line and the Ed25519 signature line of the ledger's
// key; the origin is the key's name. docs/audit-merkle.md gives the tables,
// the formats and the routes in full.
package audit

import (
	"crypto/sha256"
	"errors"
	"time"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/resolutionflow/ledgerd/leader"
)

// HashSize is the size of an event hash, a leaf hash and a node hash.
const HashSize = sha256.Size

// hasher is the RFC 6962 hasher over SHA-256.
var hasher = rfc6962.DefaultHasher

// rangeFactory builds compact ranges with the RFC 6962 node hash.
var rangeFactory = &compact.RangeFactory{Hash: hasher.HashChildren}

// LeafHash returns the RFC 6962 leaf hash of an event's hash.
func LeafHash(eventHash []byte) []byte { return hasher.HashLeaf(eventHash) }

// Leaf is one event of the log as the tree sees it: its position and its
// 32-byte hash.
type Leaf struct {
	Position  int64
	EventHash []byte
}

// StoredLeaf is a leaf as stored: its index in the tree, its event's
// position and its RFC 6962 leaf hash.
type StoredLeaf struct {
	Index    uint64
	Position int64
	Hash     []byte
}

// Node is the root of a perfect subtree of level >= 1: it covers the
// leaves [Index << Level, (Index+1) << Level).
type Node struct {
	Level uint
	Index uint64
	Hash  []byte
}

// Checkpoint is a signed state of the tree.
type Checkpoint struct {
	// Size is the number of leaves.
	Size uint64
	// Root is the tree's root hash.
	Root []byte
	// Position is the position of the last leaf's event.
	Position int64
	// Time is when the checkpoint was made, in UTC.
	Time time.Time
	// Note is the signed note: the checkpoint's text and its signature.
	Note string
}

// Seal is what one sealing transaction stores: the new leaves, the nodes
// they complete and the checkpoint of the tree they make.
type Seal struct {
	// Fence is the sealer's leadership; the store checks it in the seal's
	// transaction (pgleader.CheckFence), so a deposed sealer seals nothing.
	Fence      leader.Fence
	Leaves     []StoredLeaf
	Nodes      []Node
	Checkpoint Checkpoint
}

// ErrStale is matched (errors.Is) by the error of Store.Seal when the
// tree has grown since the sealer read it: another sealer sealed first.
var ErrStale = errors.New("the tree has grown since it was read")

// ErrNotFound is matched (errors.Is) when a leaf, a node or a checkpoint
// asked for is not stored.
var ErrNotFound = errors.New("not in the tree")
