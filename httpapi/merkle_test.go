package httpapi_test

import (
	"encoding/hex"
	"fmt"
	"net/http"
	"testing"

	"github.com/google/uuid"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/resolutionflow/ledgerd/audit"
	"github.com/resolutionflow/ledgerd/audit/audittest"
	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/httpapi"
)

func TestMerkle_SQLite(t *testing.T) { testMerkle(t, newSQLiteBackend) }

func TestMerkle_Postgres(t *testing.T) { testMerkle(t, newPostgresBackend) }

// testMerkle seals the events of two accounts and checks the /audit routes:
// roles, parameters, receipts verified with the library against the signed
// head, tenancy of receipts, and consistency proofs.
func testMerkle(t *testing.T, nb NewBackend) {
	s := startServer(t, nb)
	a, b := newTeam(), newTeam()
	for range 3 {
		s.create(t, a.user(domain.RoleEngineer), uuid.New(), `{"intent": "park"}`)
		s.create(t, b.user(domain.RoleEngineer), uuid.New(), `{"intent": "escalate"}`)
	}
	auditor := a.user(domain.RoleAuditor)
	s.expectError(t, as(t, auditor, http.MethodGet, "/audit/head", ""), http.StatusNotFound, "No checkpoint yet: the log has not been sealed")

	audittest.SealUntil(t, audit.EventLeaves{Log: s.Backend.Log}, 6, s.Backend.Audit, testAuditKey)
	events, err := s.Backend.Log.ReadAll(t.Context(), 0, 100)
	if err != nil {
		t.Fatal(err)
	}

	key := decode[struct {
		Key string `json:"key"`
	}](t, s.do(t, request{method: http.MethodGet, path: "/audit/key"}, http.StatusOK))
	head := decode[struct {
		Position   int64  `json:"position"`
		Size       uint64 `json:"size"`
		Hash       string `json:"hash"`
		Checkpoint string `json:"checkpoint"`
	}](t, s.do(t, as(t, auditor, http.MethodGet, "/audit/head", ""), http.StatusOK))
	c, err := audit.OpenCheckpoint([]byte(head.Checkpoint), key.Key)
	if err != nil {
		t.Fatalf("the head's checkpoint does not verify with /audit/key: %v", err)
	}
	if c.Size != 6 || head.Size != 6 || hex.EncodeToString(c.Root) != head.Hash || head.Position != events[5].Position {
		t.Fatalf("head %+v, checkpoint %+v; want 6 leaves up to position %d", head, c, events[5].Position)
	}

	for i, e := range events {
		path := fmt.Sprintf("/audit/proof?position=%d", e.Position)
		if e.Metadata.AccountID != a.account.String() {
			s.expectError(t, as(t, auditor, http.MethodGet, path, ""), http.StatusNotFound, fmt.Sprintf("No event of your account at position %d", e.Position))
			continue
		}
		r := decode[httpapi.Receipt](t, s.do(t, as(t, auditor, http.MethodGet, path, ""), http.StatusOK))
		if r.Event.ID != e.ID || r.LeafIndex != uint64(i) || r.TreeSize != 6 || r.Checkpoint != head.Checkpoint {
			t.Fatalf("receipt of position %d: %+v", e.Position, r)
		}
		stored := r.Event
		stored.Data, stored.RawMetadata = r.StoredData, r.StoredMetadata
		if r.EventHash != e.Hash || r.PrevHash != e.PrevHash || eventstore.HashEvent(r.PrevHash, stored) != r.EventHash {
			t.Fatalf("receipt of position %d: the event's hash does not follow from its stored bytes", e.Position)
		}
		leaf, _ := hex.DecodeString(r.LeafHash)
		if string(leaf) != string(audit.LeafHash(r.EventHash[:])) {
			t.Fatalf("receipt of position %d: leaf hash %s is not the leaf hash of the event's hash", e.Position, r.LeafHash)
		}
		hashes := make([][]byte, len(r.Proof))
		for j, h := range r.Proof {
			hashes[j], _ = hex.DecodeString(h)
		}
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, r.LeafIndex, r.TreeSize, leaf, hashes, c.Root); err != nil {
			t.Fatalf("receipt of position %d does not verify: %v", e.Position, err)
		}
	}

	cons := decode[struct {
		From       uint64   `json:"from"`
		To         uint64   `json:"to"`
		FromHash   string   `json:"from_hash"`
		ToHash     string   `json:"to_hash"`
		Proof      []string `json:"proof"`
		Checkpoint string   `json:"checkpoint"`
	}](t, s.do(t, as(t, auditor, http.MethodGet, "/audit/consistency?from=2", ""), http.StatusOK))
	hashes := make([][]byte, len(cons.Proof))
	for j, h := range cons.Proof {
		hashes[j], _ = hex.DecodeString(h)
	}
	root1, _ := hex.DecodeString(cons.FromHash)
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, 2, 6, hashes, root1, c.Root); err != nil || cons.To != 6 || cons.ToHash != head.Hash {
		t.Fatalf("consistency from 2: %+v: %v", cons, err)
	}

	for _, bad := range []struct{ path, detail string }{
		{"/audit/proof", "position is required"},
		{"/audit/proof?position=x", "position must be a positive integer"},
		{"/audit/proof?position=0", "position must be a positive integer"},
		{fmt.Sprintf("/audit/proof?position=%d&size=-1", events[0].Position), "size must be a positive integer"},
		{"/audit/consistency", "from is required"},
		{"/audit/consistency?from=3&to=2", "from: must be between 1 and to (2)"},
		{"/audit/consistency?from=1&to=7", "to: 7 is beyond the newest checkpoint's size 6"},
	} {
		s.expectError(t, as(t, auditor, http.MethodGet, bad.path, ""), http.StatusUnprocessableEntity, bad.detail)
	}
	s.expectError(t, as(t, a.user(domain.RoleEngineer), http.MethodGet, "/audit/head", ""), http.StatusForbidden, domain.MsgAuditRoleNeeded)
}
