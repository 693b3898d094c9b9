package httpapi

import (
	"net/url"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/resolutionflow/ledgerd/domain"
)

// Answers to an as_of parameter that names no instant of the past.
const (
	msgBadAsOf    = "as_of must be an RFC 3339 time, such as 2026-01-02T15:04:05Z (a + in an offset is sent as %2B)"
	msgFutureAsOf = "as_of must not be in the future"
)

// instant is the instant a list answers as of: the zero value answers
// from the read models, as the ledger stands now.
type instant struct {
	at   time.Time
	past bool
}

// asOf reads the as_of query parameter, an RFC 3339 time at or before the
// server's clock: the answer is then the ledger as it stood at that
// instant. An instant in the future is refused rather than answered as
// now, so that the answer for an instant never changes once given (but
// for appends still committing at that instant; see docs/audit-past.md).
func asOf(c echo.Context) (instant, error) {
	values, ok := c.QueryParams()["as_of"]
	if !ok {
		return instant{}, nil
	}
	at, err := time.Parse(time.RFC3339Nano, values[0])
	switch {
	case err != nil || len(values) != 1:
		return instant{}, domain.Errorf(domain.EINVALID, "%s", msgBadAsOf)
	case at.After(time.Now()):
		return instant{}, domain.Errorf(domain.EINVALID, "%s", msgFutureAsOf)
	}
	return instant{at: at.UTC(), past: true}, nil
}

// query is the start of the query string of the list at path as of i,
// to which writePage adds the limit and the cursor of the next page.
func (i instant) query(path string) string {
	if !i.past {
		return path + "?"
	}
	return path + "?as_of=" + url.QueryEscape(i.at.Format(time.RFC3339Nano)) + "&"
}
