package eventcodec_test

import (
	"testing"

	"github.com/resolutionflow/ledgerd/eventcodec"
)

func TestSubject_FillsWildcards(t *testing.T) {
	for _, c := range []struct{ account, session, typ, want string }{
		{"a", "s", "HandoffClaimed", "handoff.a.s.HandoffClaimed"},
		{"a", "", "", "handoff.a.*.*"},
		{"", "s", "", "handoff.*.s.*"},
		{"", "", "HandoffParked", "handoff.*.*.HandoffParked"},
	} {
		if got := eventcodec.Subject(c.account, c.session, c.typ); got != c.want {
			t.Errorf("Subject(%q, %q, %q) = %q, want %q", c.account, c.session, c.typ, got, c.want)
		}
	}
}
