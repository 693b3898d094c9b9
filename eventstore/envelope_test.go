package eventstore_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/resolutionflow/ledgerd/eventstore"
)

// TestEvent_AppendJSON checks that an event's envelope is what json.Marshal
// gives of it, with the data and the stored metadata as they are.
func TestEvent_AppendJSON(t *testing.T) {
	meta := eventstore.Metadata{ActorID: "9a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d", Role: "engineer", RequestID: "<r&1>", ClientIP: "192.0.2.1"}
	at := time.Date(2026, 12, 2, 15, 57, 32, 123456000, time.UTC)
	base := eventstore.Event{ID: "01JDJ0000000000000000000", Type: "HandoffEscalated", Stream: "session:a:b", Version: 3,
		Position: 1 << 40, RecordedAt: at, Data: json.RawMessage(`{"handoff_id":"x","engineer_notes":"caf\u00e9 \u003cb\u003e","n":[1,2]}`),
		Metadata: meta, RawMetadata: meta.AppendJSON(nil)}
	cases := map[string]func(e *eventstore.Event){
		"Stored":          func(*eventstore.Event) {},
		"NoRawMetadata":   func(e *eventstore.Event) { e.RawMetadata = nil },
		"SealedClientIP":  func(e *eventstore.Event) { e.Metadata.ClientIP, e.Metadata.ClientIPSealed = "", "c2VhbGVk" },
		"EscapedStrings":  func(e *eventstore.Event) { e.ID, e.Type, e.Stream = `a"b\c`, "tab\there", "<s>&\u2028 café \xff" },
		"WholeSecond":     func(e *eventstore.Event) { e.RecordedAt = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) },
		"NoData":          func(e *eventstore.Event) { e.Data = nil },
		"ZeroEvent":       func(e *eventstore.Event) { *e = eventstore.Event{} },
		"NegativeNumbers": func(e *eventstore.Event) { e.Version, e.Position = -1, -2 },
	}
	for name, change := range cases {
		t.Run(name, func(t *testing.T) {
			e := base
			change(&e)
			want, err := json.Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			if got := e.AppendJSON([]byte("prefix")); string(got) != "prefix"+string(want) {
				t.Fatalf("AppendJSON =\n prefix%s\nwant prefix%s", got[len("prefix"):], want)
			}
		})
	}
	// Data stored in another form is passed through as it is; the
	// metadata is the event's as readers see it, not the stored bytes.
	e := base
	e.Data = json.RawMessage(`{"notes": "<b>"}`)
	e.RawMetadata = json.RawMessage(`{"role": "engineer", "client_ip_sealed": "x"}`)
	var got struct{ Data, Metadata json.RawMessage }
	if err := json.Unmarshal(e.AppendJSON(nil), &got); err != nil {
		t.Fatal(err)
	}
	if string(got.Data) != string(e.Data) || string(got.Metadata) != string(meta.AppendJSON(nil)) {
		t.Fatalf("envelope's data %s and metadata %s, want the stored %s and %s", got.Data, got.Metadata, e.Data, meta.AppendJSON(nil))
	}
}
