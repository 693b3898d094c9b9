package eventstore_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/resolutionflow/ledgerd/eventstore"
)

// TestHashEvent_KnownAnswers pins the hash input docs/audit.md describes:
// the expected hashes were computed from that description alone, outside
// Go. The recorded time is given in another zone and with nanoseconds
// beyond the microsecond, which the hash does not see.
func TestHashEvent_KnownAnswers(t *testing.T) {
	e := eventstore.Event{
		ID: "01JDJ00000000000000000000A", Stream: "séssion-1", Type: "HandoffClaimed",
		Data: json.RawMessage(`{"by": "bob"}`), RawMetadata: json.RawMessage(`{"role":"admin"}`),
		RecordedAt: time.Date(2026, 12, 2, 16, 57, 32, 123456789, time.FixedZone("CET", 3600)),
		// Neither read: the hash covers what is stored of the event.
		Position: 99, Metadata: eventstore.Metadata{Role: "owner"}, Hash: eventstore.Hash{9},
	}
	var prev eventstore.Hash
	for i := range prev {
		prev[i] = byte(i + 1)
	}
	cases := []struct {
		name    string
		prev    eventstore.Hash
		version int64
		want    string
	}{
		{"FirstEvent", eventstore.Hash{}, 1, "080e57227c0601a99afb25eaac407fa219348c8ab8167c8db9416a37004944cf"},
		{"Chained", prev, 2, "df94de8d99b7484f8f890423940693c6d20818a60f5fffbccf161cb11c01f004"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.Version = c.version
			if got := eventstore.HashEvent(c.prev, e).String(); got != c.want {
				t.Errorf("HashEvent = %s, want %s", got, c.want)
			}
		})
	}
}

// TestHash_Text checks a hash's hex text form both ways, and that a text
// of another length or not hex is refused.
func TestHash_Text(t *testing.T) {
	h := eventstore.Hash{0xab, 0x01}
	text, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	if want := `"ab01` + strings.Repeat("0", 60) + `"`; string(text) != want {
		t.Errorf("JSON %s, want %s", text, want)
	}
	var back eventstore.Hash
	if err := json.Unmarshal(text, &back); err != nil || back != h {
		t.Errorf("decoded %s, %v; want %s", back, err, h)
	}
	for _, bad := range []string{`"ab"`, `"` + h.String() + `00"`, `"zz` + h.String()[2:] + `"`} {
		if err := json.Unmarshal([]byte(bad), &back); err == nil {
			t.Errorf("decoding %s succeeded", bad)
		}
	}
}
