package leader_test

import (
	"testing"

	"github.com/resolutionflow/ledgerd/leader"
	"github.com/resolutionflow/ledgerd/leader/lockertest"
)

// TestLocal runs the conformance suite on the one process's locker, twice
// the same, as two jobs of one process share it.
func TestLocal(t *testing.T) {
	lockertest.Run(t, func(testing.TB) (a, b leader.Locker) {
		l := leader.NewLocal()
		return l, l
	}, false)
}
