package eventstore

import (
	"encoding/json"
	"unicode/utf8"
)

// AppendJSON appends m's JSON form to b: the object json.Marshal gives,
// field for field, built without reflection. Every append encodes one, so
// the stores use this instead of json.Marshal.
func (m Metadata) AppendJSON(b []byte) []byte {
	b = append(b, '{')
	n := len(b)
	for _, f := range [...]struct{ key, value string }{
		{`"actor_id":`, m.ActorID},
		{`"account_id":`, m.AccountID},
		{`"team_id":`, m.TeamID},
		{`"role":`, m.Role},
		{`"correlation_id":`, m.CorrelationID},
		{`"causation_id":`, m.CausationID},
		{`"request_id":`, m.RequestID},
		{`"client_request_id":`, m.ClientRequestID},
		{`"client_correlation_id":`, m.ClientCorrelationID},
		{`"client_ip":`, m.ClientIP},
		{`"client_ip_sealed":`, m.ClientIPSealed},
	} {
		if f.value == "" {
			continue // omitempty
		}
		if len(b) > n {
			b = append(b, ',')
		}
		b = append(b, f.key...)
		b = appendJSONString(b, f.value)
	}
	return append(b, '}')
}

// appendJSONString appends s as a JSON string. Strings of printable ASCII
// that need no escape, such as ids and role names, are copied as they are;
// any other goes through json.Marshal, which escapes it.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			quoted, _ := json.Marshal(s) // a string always encodes
			return append(b, quoted...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
