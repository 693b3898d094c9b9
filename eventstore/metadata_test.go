package eventstore_test

import (
	"encoding/json"
	"testing"

	"github.com/resolutionflow/ledgerd/eventstore"
)

// TestMetadata_AppendJSON checks that AppendJSON gives exactly what
// json.Marshal gives, for plain values, empty fields and strings that need
// escaping.
func TestMetadata_AppendJSON(t *testing.T) {
	for name, m := range map[string]eventstore.Metadata{
		"Empty": {},
		"Full": {
			ActorID: "9a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d", AccountID: "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
			TeamID: "2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e", Role: "engineer", CorrelationID: "c-1",
			CausationID: "01JDJ0000000000000000000", RequestID: "r 2",
			ClientRequestID: "client-r", ClientCorrelationID: "client-c", ClientIP: "2001:db8::1",
		},
		"Sparse":     {Role: "viewer", RequestID: "x"},
		"OnlyLast":   {ClientIP: "192.0.2.7"},
		"Escapes":    {ActorID: `quote " and \ backslash`, Role: "tab\there\nline", RequestID: "<b>&</b>"},
		"Unicode":    {CorrelationID: "café ✓", CausationID: "\u2028"},
		"BadUTF8":    {RequestID: "bad \xff byte"},
		"Control":    {TeamID: "\x00\x1f\x7f"},
		"OnlyEscape": {ActorID: `"`},
	} {
		t.Run(name, func(t *testing.T) {
			want, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			got := m.AppendJSON([]byte("prefix"))
			if string(got) != "prefix"+string(want) {
				t.Fatalf("AppendJSON = %s, want prefix%s", got, want)
			}
		})
	}
}
