package eventcodec

import "strings"

// The names a subscriber of the ledger's JetStream stream sees: the relay
// publishes each event on Subject(account, session, type), with the
// headers below, into the stream DefaultNATSStream unless configured
// otherwise. They live here, beside the stream names and the envelope,
// so that a subscriber (package tail) need not import the relay.

// DefaultNATSStream is the default name of the JetStream stream.
const DefaultNATSStream = "LEDGER"

// SubjectPrefix is the first token of every subject the relay publishes on.
const SubjectPrefix = "handoff"

// Headers of every published message, besides jetstream.MsgIDHeader (the
// event id).
const (
	HeaderEventType     = "Ledger-Event-Type"
	HeaderStream        = "Ledger-Stream"
	HeaderStreamVersion = "Ledger-Stream-Version"
	HeaderPosition      = "Ledger-Position"
	HeaderAccount       = "Ledger-Account"
	HeaderSession       = "Ledger-Session"
)

// Subject returns the subject of an event of a session of an account:
// handoff.<account>.<session>.<eventType>. Empty arguments become the
// wildcard "*", so Subject("", "", "HandoffClaimed") selects every claim.
func Subject(account, session, eventType string) string {
	tokens := []string{SubjectPrefix, account, session, eventType}
	for i, t := range tokens {
		if t == "" {
			tokens[i] = "*"
		}
	}
	return strings.Join(tokens, ".")
}

// ValidSubjectToken reports whether s can be one token of a subject, such
// as an event type.
func ValidSubjectToken(s string) bool {
	return s != "" && !strings.ContainsAny(s, ".*> \t\r\n")
}
