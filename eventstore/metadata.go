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

// ParseMetadata decodes stored metadata as json.Unmarshal does. Every
// event read from a store decodes its metadata, so the form AppendJSON
// writes (no spaces, known keys each at most once, values of printable
// ASCII with nothing to unescape) is decoded without reflection; any other
// JSON goes through encoding/json.
func ParseMetadata(b []byte) (Metadata, error) {
	var m Metadata
	if decodeMetadata(b, &m) {
		return m, nil
	}
	err := json.Unmarshal(b, &m)
	return m, err
}

// decodeMetadata decodes b into m, and reports whether it could: false,
// with m unchanged, when b is not in the form AppendJSON writes. The
// values share one copy of b.
func decodeMetadata(b []byte, m *Metadata) bool {
	if len(b) < 2 || b[0] != '{' || b[len(b)-1] != '}' {
		return false
	}
	out := *m
	var seen uint16
	rest := string(b[1 : len(b)-1])
	for len(rest) > 0 {
		key, value, tail, ok := nextPair(rest)
		if !ok {
			return false
		}
		var field *string
		var bit uint16
		switch key {
		case "actor_id":
			field, bit = &out.ActorID, 1<<0
		case "account_id":
			field, bit = &out.AccountID, 1<<1
		case "team_id":
			field, bit = &out.TeamID, 1<<2
		case "role":
			field, bit = &out.Role, 1<<3
		case "correlation_id":
			field, bit = &out.CorrelationID, 1<<4
		case "causation_id":
			field, bit = &out.CausationID, 1<<5
		case "request_id":
			field, bit = &out.RequestID, 1<<6
		case "client_request_id":
			field, bit = &out.ClientRequestID, 1<<7
		case "client_correlation_id":
			field, bit = &out.ClientCorrelationID, 1<<8
		case "client_ip":
			field, bit = &out.ClientIP, 1<<9
		case "client_ip_sealed":
			field, bit = &out.ClientIPSealed, 1<<10
		default:
			return false
		}
		if seen&bit != 0 {
			return false
		}
		seen |= bit
		*field = value
		rest = tail
		if len(rest) > 0 {
			if rest[0] != ',' || len(rest) == 1 {
				return false
			}
			rest = rest[1:]
		}
	}
	*m = out
	return true
}

// nextPair reads `"key":"value"` from the start of s, both plain strings
// (see plainString), and returns what follows it.
func nextPair(s string) (key, value, rest string, ok bool) {
	key, s, ok = plainString(s)
	if !ok || len(s) == 0 || s[0] != ':' {
		return "", "", "", false
	}
	value, rest, ok = plainString(s[1:])
	return key, value, rest, ok
}

// plainString reads a JSON string from the start of s whose characters
// are printable ASCII other than '"' and '\', so that its text is its
// bytes, and returns what follows it.
func plainString(s string) (text, rest string, ok bool) {
	if len(s) == 0 || s[0] != '"' {
		return "", "", false
	}
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			return s[1:i], s[i+1:], true
		case c < 0x20 || c > 0x7e || c == '\\':
			return "", "", false
		}
	}
	return "", "", false
}
