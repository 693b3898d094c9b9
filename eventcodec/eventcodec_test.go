package eventcodec_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventcodec"
)

func TestEncodeDecode_RoundTripsEveryEvent(t *testing.T) {
	at := time.Date(2026, 11, 25, 12, 0, 0, 123456000, time.UTC)
	created := domain.HandoffCreated{
		HandoffID: uuid.New(), SessionID: uuid.New(), AccountID: uuid.New(), TeamID: uuid.New(),
		CreatedBy: uuid.New(), Notes: "VPN drops", Priority: domain.PriorityHigh, At: at,
	}
	for _, e := range []domain.Event{
		domain.HandoffParked{HandoffCreated: created},
		domain.HandoffEscalated{HandoffCreated: created},
		domain.HandoffClaimed{HandoffID: uuid.New(), SessionID: uuid.New(), ClaimedBy: uuid.New(), Role: domain.RoleAdmin, At: at},
		domain.HandoffWithdrawn{HandoffID: uuid.New(), SessionID: uuid.New(), WithdrawnBy: uuid.New(), At: at},
	} {
		t.Run(e.EventType(), func(t *testing.T) {
			typ, data, err := eventcodec.Encode(e)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if typ != e.EventType() || !json.Valid(data) {
				t.Fatalf("Encode = %q, %s", typ, data)
			}
			back, err := eventcodec.Decode(typ, data)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !reflect.DeepEqual(back, e) {
				t.Fatalf("round trip = %#v, want %#v", back, e)
			}
		})
	}
}

// TestEncode_FieldNames pins the JSON field names: they are stored and
// published, so renaming one breaks readers of the log.
func TestEncode_FieldNames(t *testing.T) {
	_, data, err := eventcodec.Encode(domain.HandoffEscalated{HandoffCreated: domain.HandoffCreated{Priority: domain.PriorityUrgent}})
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	var fields map[string]any
	if err := json.Unmarshal(data, &fields); err != nil {
		t.Fatalf("unmarshal: %v", err)
	}
	for _, name := range []string{"handoff_id", "session_id", "account_id", "team_id", "created_by", "engineer_notes", "priority", "at"} {
		if _, ok := fields[name]; !ok {
			t.Errorf("field %q missing from %s", name, data)
		}
	}
}

func TestDecode_UnknownTypeAndBadData(t *testing.T) {
	if _, err := eventcodec.Decode("HandoffSnoozed", []byte(`{}`)); !errors.Is(err, eventcodec.ErrUnknownType) {
		t.Errorf("unknown type: err = %v, want ErrUnknownType", err)
	}
	if _, err := eventcodec.Decode(domain.TypeHandoffClaimed, []byte(`{"claimed_by": 7}`)); err == nil || errors.Is(err, eventcodec.ErrUnknownType) {
		t.Errorf("bad data: err = %v, want a decoding error", err)
	}
}

func TestStreamName_RoundTrips(t *testing.T) {
	account, session := uuid.New(), uuid.New()
	a, s, err := eventcodec.ParseStreamName(eventcodec.StreamName(account, session))
	if err != nil || a != account || s != session {
		t.Fatalf("ParseStreamName = %v, %v, %v", a, s, err)
	}
	if eventcodec.StreamName(account, session) == eventcodec.StreamName(uuid.New(), session) {
		t.Fatal("two accounts share a stream name for one session")
	}
	for _, bad := range []string{"", "session:", "session:x:y", "other:" + account.String() + ":" + session.String(), "session:" + account.String()} {
		if _, _, err := eventcodec.ParseStreamName(bad); err == nil {
			t.Errorf("ParseStreamName(%q) succeeded", bad)
		}
	}
}
