package httpapi

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
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

// readyz runs every check: 503 when one that is not Degrading fails, 200
// otherwise, with status "degraded" when a Degrading one fails. Failures
// are logged with their error; the body only names them.
func (s *server) readyz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), readyTimeout)
	defer cancel()
	body := readyBody{Status: stateOK, Checks: make(map[string]string, len(s.checks))}
	var down []string
	for _, check := range s.checks {
		if err := check.Func(ctx); err != nil {
			s.log.WarnContext(ctx, "readiness check failed", "check", check.Name, "err", err)
			body.Checks[check.Name] = checkFailing
			if check.Degrading {
				body.Status = stateDegraded
			} else {
				down = append(down, check.Name)
			}
			continue
		}
		body.Checks[check.Name] = checkOK
	}
	if len(down) > 0 {
		body.Status = stateDown
		body.Detail = "Not ready: " + strings.Join(down, ", ") + " failing"
		return c.JSON(http.StatusServiceUnavailable, body)
	}
	return c.JSON(http.StatusOK, body)
}
