package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/resolutionflow/ledgerd/projections"
)

// readyTimeout bounds one run of the readiness checks.
const readyTimeout = 5 * time.Second

// Check results and overall states in the /readyz body.
const (
	checkOK       = "ok"
	checkFailing  = "failing"
	stateOK       = "ok"
	stateDegraded = "degraded"
	stateDown     = "unavailable"
)

type readyBody struct {
	Detail string            `json:"detail,omitempty"`
	Status string            `json:"status"`
	Checks map[string]string `json:"checks"`
}

// healthz answers as long as the process serves HTTP.
func healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": stateOK})
}

// Notice is the error of a check whose text /readyz shows in its detail,
// such as how many events a projector skipped; the text of any other error
// is only logged, as it may hold internals.
type Notice string

func (n Notice) Error() string { return string(n) }

// SkippedEventsCheck is the readiness check of the events a projector
// skipped because it could not apply them: while any are recorded, it
// fails, degrading, with a Notice that names the projector and says how
// many it skipped and their first and last positions.
func SkippedEventsCheck(store interface {
	Skips(ctx context.Context, name string) (projections.Skips, error)
}, projector string) Check {
	return Check{Name: "projector", Degrading: true, Func: func(ctx context.Context) error {
		skips, err := store.Skips(ctx, projector)
		if err != nil || skips.Count == 0 {
			return err
		}
		events := "events"
		if skips.Count == 1 {
			events = "event"
		}
		return Notice(fmt.Sprintf("projector %s skipped %d %s it cannot apply, positions %d to %d",
			projector, skips.Count, events, skips.First.Position, skips.Last.Position))
	}}
}

// StallCheck is the readiness check named name (such as "projector" or
// "relay") of a checkpoint that has stalled (see projections.StallWatch):
// while it stands still behind the log's head, it fails, degrading, with a
// Notice such as "projector handoffs: checkpoint 120 has not moved for 20s
// while the log's head is 480".
//
// It degrades rather than making the process unready: the checkpoint is
// shared by every process, so each of them sees the same stall and none
// would serve better; a 503 on every process would take commands, which
// still work, out of a load balancer's rotation too. A stalled projector
// makes reads answer 503 once they have waited --read-wait-timeout; a
// stalled relay delays NATS, while commands and reads work.
func StallCheck(name string, watch *projections.StallWatch) Check {
	return Check{Name: name, Degrading: true, Func: func(ctx context.Context) error {
		stall, stalled, err := watch.Check(ctx)
		if err != nil || !stalled {
			return err
		}
		return Notice(fmt.Sprintf("%s %s: checkpoint %d has not moved for %s while the log's head is %d",
			name, watch.Name(), stall.Checkpoint, stall.For.Round(100*time.Millisecond), stall.Head))
	}}
}

// readyz runs every check: 503 when one that is not Degrading fails, 200
// otherwise, with status "degraded" when a Degrading one fails. Checks
// that share a name (such as the projector's skipped events and its stall)
// show as one, failing when any of them fails. Failures
// are logged with their error; the body only names them, and gives the
// text of a Notice in its detail.
func (s *server) readyz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), readyTimeout)
	defer cancel()
	body := readyBody{Status: stateOK, Checks: make(map[string]string, len(s.checks))}
	var down, notices []string
	for _, check := range s.checks {
		if err := check.Func(ctx); err != nil {
			s.log.WarnContext(ctx, "readiness check failed", "check", check.Name, "err", err)
			body.Checks[check.Name] = checkFailing
			var notice Notice
			if errors.As(err, &notice) {
				notices = append(notices, string(notice))
			}
			if check.Degrading {
				body.Status = stateDegraded
			} else {
				down = append(down, check.Name)
			}
			continue
		}
		if body.Checks[check.Name] != checkFailing {
			// Several checks may share a name: it fails if any fails.
			body.Checks[check.Name] = checkOK
		}
	}
	if len(down) > 0 {
		body.Status = stateDown
		body.Detail = strings.Join(append([]string{"Not ready: " + strings.Join(down, ", ") + " failing"}, notices...), "; ")
		return c.JSON(http.StatusServiceUnavailable, body)
	}
	body.Detail = strings.Join(notices, "; ")
	return c.JSON(http.StatusOK, body)
}
