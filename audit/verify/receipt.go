package verify

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/resolutionflow/ledgerd/audit"
	"github.com/resolutionflow/ledgerd/eventstore"
)

// Receipt is a receipt of GET /audit/proof, decoded: an event and the
// proof that it is in the tree a signed checkpoint describes.
type Receipt struct {
	// Event is the envelope, with Data and RawMetadata the stored bytes
	// (the receipt's stored_data and stored_metadata) and PrevHash and
	// Hash the stored hashes.
	Event eventstore.Event
	// EnvelopeData is the envelope's data as the receipt shows it, which
	// must be the stored data's JSON.
	EnvelopeData json.RawMessage
	LeafIndex    uint64
	LeafHash     []byte
	TreeSize     uint64
	RootHash     []byte
	Proof        [][]byte
	Checkpoint   []byte
}

// CheckReceipt checks r offline with the ledger's verifier key vkey: the
// checkpoint's signature, that it is the tree of the receipt's size and
// root, that the event's hash recomputes from its stored bytes (and the
// envelope shows those bytes), that the leaf is the event's, and the
// inclusion proof of the leaf in the checkpoint's tree. It returns an
// error saying the first that does not hold.
func CheckReceipt(r Receipt, vkey string) error {
	c, err := audit.OpenCheckpoint(r.Checkpoint, vkey)
	if err != nil {
		return fmt.Errorf("receipt: the checkpoint: %w", err)
	}
	if c.Size != r.TreeSize || !bytes.Equal(c.Root, r.RootHash) {
		return fmt.Errorf("receipt: the checkpoint signs size %d, root %x, not the receipt's size %d, root %x", c.Size, c.Root, r.TreeSize, r.RootHash)
	}
	e := r.Event
	if h := eventstore.HashEvent(e.PrevHash, e); h != e.Hash {
		return fmt.Errorf("receipt: the event at position %d hashes to %s, not its event_hash %s", e.Position, h, e.Hash)
	}
	if err := sameJSON(r.EnvelopeData, e.Data); err != nil {
		return fmt.Errorf("receipt: the envelope's data is not the stored data: %w", err)
	}
	var meta eventstore.Metadata
	if err := json.Unmarshal(e.RawMetadata, &meta); err != nil || meta != e.Metadata {
		return fmt.Errorf("receipt: the envelope's metadata is not the stored metadata")
	}
	if leaf := audit.LeafHash(e.Hash[:]); !bytes.Equal(leaf, r.LeafHash) {
		return fmt.Errorf("receipt: the leaf hash %x is not the event's %x", r.LeafHash, leaf)
	}
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, r.LeafIndex, r.TreeSize, r.LeafHash, r.Proof, c.Root); err != nil {
		return fmt.Errorf("receipt: the inclusion proof of leaf %d in the tree of size %d: %w", r.LeafIndex, r.TreeSize, err)
	}
	return nil
}

// sameJSON reports whether a and b are the same JSON value: the same
// members, in any order, and the same numbers as written.
func sameJSON(a, b []byte) error {
	va, err := decodeJSON(a)
	if err != nil {
		return err
	}
	vb, err := decodeJSON(b)
	if err != nil {
		return err
	}
	if !reflect.DeepEqual(va, vb) {
		return fmt.Errorf("%s differs from %s", a, b)
	}
	return nil
}

func decodeJSON(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}
