package httpapi

import (
	"encoding/hex"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/resolutionflow/ledgerd/audit"
	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventstore"
)

// Audit is what the /audit routes need.
type Audit struct {
	// Prover answers heads and proofs from the Merkle tree.
	Prover *audit.Prover
	// Verifier is the public key that checks the checkpoints' signatures.
	Verifier string
	// Stored reads the event a receipt is for as the store holds it, its
	// personal data sealed (package shred): a receipt proves the stored
	// bytes, and its envelope shows them. Config.Events when nil.
	Stored EventLog
}

// routeAudit adds the /audit routes.
func (s *server) routeAudit(e *echo.Echo) {
	e.GET("/audit/key", s.auditKey)
	e.GET("/audit/head", s.auditHead, s.authenticate, mayAudit)
	e.GET("/audit/proof", s.auditProof, s.authenticate, mayAudit)
	e.GET("/audit/consistency", s.auditConsistency, s.authenticate, mayAudit)
}

// keyJSON answers GET /audit/key.
type keyJSON struct {
	Key string `json:"key"`
}

// auditKey answers GET /audit/key: the public key that verifies the
// checkpoints, which anybody may have.
func (s *server) auditKey(c echo.Context) error {
	return c.JSON(http.StatusOK, keyJSON{Key: s.audit.Verifier})
}

// headJSON answers GET /audit/head.
type headJSON struct {
	Position   int64  `json:"position"`
	Size       uint64 `json:"size"`
	Hash       string `json:"hash"`
	Checkpoint string `json:"checkpoint"`
}

// auditHead answers GET /audit/head: the newest checkpoint.
func (s *server) auditHead(c echo.Context) error {
	head, err := s.audit.Prover.Head(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, headJSON{Position: head.Position, Size: head.Size, Hash: hex.EncodeToString(head.Root), Checkpoint: head.Note})
}

// Receipt is the answer of GET /audit/proof: everything needed to check,
// offline, that an event is in the log a signed checkpoint describes
// (docs/audit-merkle.md). StoredData and StoredMetadata are the event's
// data and metadata as the store holds them, the bytes its hash covers,
// which the envelope's JSON need not reproduce byte for byte.
type Receipt struct {
	Event          eventstore.Event `json:"event"`
	PrevHash       eventstore.Hash  `json:"prev_hash"`
	EventHash      eventstore.Hash  `json:"event_hash"`
	StoredData     []byte           `json:"stored_data"`
	StoredMetadata []byte           `json:"stored_metadata"`
	LeafIndex      uint64           `json:"leaf_index"`
	LeafHash       string           `json:"leaf_hash"`
	TreeSize       uint64           `json:"tree_size"`
	RootHash       string           `json:"root_hash"`
	Proof          []string         `json:"proof"`
	Checkpoint     string           `json:"checkpoint"`
}

// auditProof answers GET /audit/proof?position=P[&size=S]: the receipt of
// the caller's account's event at P in the tree of the checkpoint of size
// S (the newest by default). An event of another account is 404, as one
// that does not exist.
func (s *server) auditProof(c echo.Context) error {
	position, err := intParam(c, "position", true)
	if err != nil {
		return err
	}
	size, err := intParam(c, "size", false)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	log := s.events
	if s.audit.Stored != nil {
		log = s.audit.Stored
	}
	events, err := log.ReadAccount(ctx, actorOf(c).AccountID, position-1, 1)
	if err != nil {
		return err
	}
	if len(events) == 0 || events[0].Position != position {
		return domain.Errorf(domain.ENOTFOUND, "No event of your account at position %d", position)
	}
	inc, err := s.audit.Prover.Inclusion(ctx, position, uint64(size))
	if err != nil {
		return err
	}
	e := events[0]
	return c.JSON(http.StatusOK, Receipt{
		Event:          e,
		PrevHash:       e.PrevHash,
		EventHash:      e.Hash,
		StoredData:     e.Data,
		StoredMetadata: e.RawMetadata,
		LeafIndex:      inc.Leaf.Index,
		LeafHash:       hex.EncodeToString(inc.Leaf.Hash),
		TreeSize:       inc.Checkpoint.Size,
		RootHash:       hex.EncodeToString(inc.Checkpoint.Root),
		Proof:          hexAll(inc.Hashes),
		Checkpoint:     inc.Checkpoint.Note,
	})
}

// consistencyJSON answers GET /audit/consistency.
type consistencyJSON struct {
	From       uint64   `json:"from"`
	To         uint64   `json:"to"`
	FromHash   string   `json:"from_hash"`
	ToHash     string   `json:"to_hash"`
	Proof      []string `json:"proof"`
	Checkpoint string   `json:"checkpoint"`
}

// auditConsistency answers GET /audit/consistency?from=S1[&to=S2]: the
// proof that the tree of S1 leaves is a prefix of that of S2 (the newest
// checkpoint's size by default), with both roots and the newest
// checkpoint.
func (s *server) auditConsistency(c echo.Context) error {
	from, err := intParam(c, "from", true)
	if err != nil {
		return err
	}
	to, err := intParam(c, "to", false)
	if err != nil {
		return err
	}
	p, err := s.audit.Prover.Consistency(c.Request().Context(), uint64(from), uint64(to))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, consistencyJSON{
		From: p.From, To: p.To, FromHash: hex.EncodeToString(p.FromRoot), ToHash: hex.EncodeToString(p.ToRoot),
		Proof: hexAll(p.Hashes), Checkpoint: p.Checkpoint.Note,
	})
}

// intParam reads a query parameter holding a positive integer; 0 when it
// is absent and not required.
func intParam(c echo.Context, name string, required bool) (int64, error) {
	values, ok := c.QueryParams()[name]
	if !ok && !required {
		return 0, nil
	}
	if !ok {
		return 0, domain.Errorf(domain.EINVALID, "%s is required", name)
	}
	n, err := strconv.ParseInt(values[0], 10, 64)
	if err != nil || len(values) != 1 || n < 1 {
		return 0, domain.Errorf(domain.EINVALID, "%s must be a positive integer", name)
	}
	return n, nil
}

func hexAll(hashes [][]byte) []string {
	out := make([]string, len(hashes))
	for i, h := range hashes {
		out[i] = hex.EncodeToString(h)
	}
	return out
}
