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

// TestParseMetadata checks that ParseMetadata decodes every input as
// json.Unmarshal does: the form AppendJSON writes (decoded without
// reflection) and every other (handed to encoding/json).
func TestParseMetadata(t *testing.T) {
	full := eventstore.Metadata{ActorID: "a", AccountID: "b", TeamID: "c", Role: "engineer", CorrelationID: "d",
		CausationID: "e", RequestID: "f", ClientRequestID: "g", ClientCorrelationID: "h", ClientIP: "2001:db8::1"}
	inputs := []string{
		string(full.AppendJSON(nil)),
		`{}`,
		`{"role":"viewer"}`,
		`{"client_ip":"192.0.2.7","actor_id":"x"}`,
		`{"role":"viewer","client_ip_sealed":"AAEC+/9="}`,
		`{ "role": "viewer" }`,
		`{"role":"viewer","role":"admin"}`,
		`{"Role":"viewer"}`,
		`{"unknown":"x","role":"viewer"}`,
		`{"unknown":{"a":[1,2]},"role":"viewer"}`,
		`{"role":"tab\there"}`,
		`{"role":"caf\u00e9"}`,
		"{\"role\":\"café\"}",
		"{\"role\":\"bad \xff byte\"}",
		`{"role":null}`,
		`{"role":1}`,
		`{"role":"viewer",}`,
		`{"role":"viewer"`,
		`{"role"}`,
		`{"role":"viewer" "team_id":"x"}`,
		`null`,
		`[]`,
		`""`,
		`{"role":"a\"b"}`,
		`{"role":"a"}x`,
	}
	for _, in := range inputs {
		var want eventstore.Metadata
		wantErr := json.Unmarshal([]byte(in), &want)
		got, gotErr := eventstore.ParseMetadata([]byte(in))
		if (gotErr == nil) != (wantErr == nil) || got != want {
			t.Errorf("ParseMetadata(%s) = %+v, %v; want %+v, %v", in, got, gotErr, want, wantErr)
		}
	}
}

// BenchmarkParseMetadata decodes the metadata a REST command records, as
// every read of the log does for every event, with ParseMetadata and with
// json.Unmarshal.
func BenchmarkParseMetadata(b *testing.B) {
	raw := eventstore.Metadata{ActorID: "9a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d", AccountID: "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
		TeamID: "2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e", Role: "engineer", RequestID: "01JDJ0000000000000000000", ClientIP: "192.0.2.1"}.AppendJSON(nil)
	b.Run("ParseMetadata", func(b *testing.B) {
		for b.Loop() {
			if _, err := eventstore.ParseMetadata(raw); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("json.Unmarshal", func(b *testing.B) {
		for b.Loop() {
			var m eventstore.Metadata
			if err := json.Unmarshal(raw, &m); err != nil {
				b.Fatal(err)
			}
		}
	})
}
