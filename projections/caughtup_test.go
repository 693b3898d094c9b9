package projections_test

import (
	"github.com/google/uuid"

	"testing"

	"github.com/resolutionflow/ledgerd/commands"
	"github.com/resolutionflow/ledgerd/internal/pgtest"
	"github.com/resolutionflow/ledgerd/projections"
	"github.com/resolutionflow/ledgerd/projections/storetest"
)

// TestCaughtUp_ReadsSeeEarlierCommands sends commands that do not wait for
// the read models and reads right after each through CaughtUp: every read
// must show every command that returned before it, with the projector in
// this process and in another one.
func TestCaughtUp_ReadsSeeEarlierCommands(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	local := newProcess(t, url, "local", processOptions{})
	local.start(t)
	remote := newProcess(t, url, "remote", processOptions{}) // its projector never runs
	for _, p := range []*process{local, remote} {
		t.Run(p.name, func(t *testing.T) {
			noWait := commands.NewHandler(p.events, nil)
			reads := projections.CaughtUp(p.views, p.events, p.projector, settle)
			sc := newScope()
			for i := range 20 {
				session, _, err := storetest.Story(t.Context(), noWait, sc.account, sc.team, i)
				if err != nil {
					t.Fatalf("story %d: %v", i, err)
				}
				storetest.AssertHistories(t, noWait, reads, sc.account, []uuid.UUID{session})
			}
		})
	}
}
