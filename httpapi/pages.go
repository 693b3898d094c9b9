package httpapi

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/projections"
)

// defaultPageSize is the page size of a list request without a limit.
const defaultPageSize = 100

// Page cursors are opaque to clients: base64url (no padding) of the sort
// key of the last handoff of the page before, followed by a MAC of the
// key, the list and its scope. The server checks the MAC before it uses a
// cursor, so a cursor that was altered, made up, or made for another list
// (another account's queue, another session's history) is refused with
// 422. The account, the team and the session always come from the token
// and the path, never from the cursor: even a valid cursor only says where
// in the caller's own list a page starts.
const (
	cursorKeyLen = 1 + 8 + 16 // class, created_at in Unix microseconds, id
	cursorMACLen = 16
)

// listKind names a list in a cursor's MAC, so that a queue cursor is not
// valid for a history and the other way round.
type listKind byte

const (
	queueList        listKind = 'q'
	historyList      listKind = 'h'
	accountQueueList listKind = 'a'
)

// msgBadCursor answers a cursor the server did not make for this list.
const msgBadCursor = "cursor is not valid for this list"

// newCursorKey derives the key of cursor MACs from the token secret, so
// that every server of a deployment accepts the cursors of the others.
func newCursorKey(secret []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("ledgerd page cursor v1"))
	return m.Sum(nil)
}

// cursorMAC is the MAC of a cursor's sort key for a list of a scope (the
// account and team of a queue, the account and session of a history).
func (s *server) cursorMAC(kind listKind, scope [2]uuid.UUID, key []byte) []byte {
	m := hmac.New(sha256.New, s.cursorKey)
	m.Write([]byte{byte(kind)})
	m.Write(scope[0][:])
	m.Write(scope[1][:])
	m.Write(key)
	return m.Sum(nil)[:cursorMACLen]
}

// encodeCursor returns the opaque form of a cursor of a list of a scope.
func (s *server) encodeCursor(kind listKind, scope [2]uuid.UUID, c projections.Cursor) string {
	key := make([]byte, cursorKeyLen)
	key[0] = byte(c.Class)
	binary.BigEndian.PutUint64(key[1:9], uint64(c.CreatedAt.UnixMicro()))
	copy(key[9:], c.ID[:])
	return base64.RawURLEncoding.EncodeToString(append(key, s.cursorMAC(kind, scope, key)...))
}

// decodeCursor returns the cursor whose opaque form is text, if the server
// made it for this list of this scope; otherwise a 422.
func (s *server) decodeCursor(kind listKind, scope [2]uuid.UUID, text string) (*projections.Cursor, error) {
	raw, err := base64.RawURLEncoding.Strict().DecodeString(text)
	if err != nil || len(raw) != cursorKeyLen+cursorMACLen {
		return nil, domain.Errorf(domain.EINVALID, msgBadCursor)
	}
	key, mac := raw[:cursorKeyLen], raw[cursorKeyLen:]
	if !hmac.Equal(mac, s.cursorMAC(kind, scope, key)) || int(key[0]) >= projections.QueueClasses {
		return nil, domain.Errorf(domain.EINVALID, msgBadCursor)
	}
	c := &projections.Cursor{
		Class:     int(key[0]),
		CreatedAt: time.UnixMicro(int64(binary.BigEndian.Uint64(key[1:9]))).UTC(),
	}
	copy(c.ID[:], key[9:])
	return c, nil
}

// pageLimit reads the limit query parameter: an integer from 1 to
// projections.MaxPageSize, defaultPageSize when absent.
func pageLimit(c echo.Context) (int, error) {
	limit, err := queryInt(c, "limit", defaultPageSize, 1, projections.MaxPageSize,
		"limit must be an integer from 1 to "+strconv.Itoa(projections.MaxPageSize))
	return int(limit), err
}

// pageCursor reads the cursor query parameter: nil when absent.
func (s *server) pageCursor(c echo.Context, kind listKind, scope [2]uuid.UUID) (*projections.Cursor, error) {
	values, ok := c.QueryParams()["cursor"]
	if !ok {
		return nil, nil
	}
	if len(values) != 1 {
		return nil, domain.Errorf(domain.EINVALID, msgBadCursor)
	}
	return s.decodeCursor(kind, scope, values[0])
}

// writePage answers a list request with at most limit of handoffs, which
// the store read with a limit of limit+1: when it found more, a Link header
// (rel="next") gives the path of the next page, whose cursor is the place
// of the page's last handoff. query is the path and the start of the query
// string of the next page (instant.query), to which it adds the limit and
// the cursor.
func (s *server) writePage(c echo.Context, query string, kind listKind, scope [2]uuid.UUID, limit int, hs []domain.Handoff, place func(domain.Handoff) projections.Cursor) error {
	if len(hs) > limit {
		hs = hs[:limit]
		next := s.encodeCursor(kind, scope, place(hs[limit-1]))
		c.Response().Header().Set("Link", "<"+query+"limit="+strconv.Itoa(limit)+"&cursor="+next+`>; rel="next"`)
	}
	return c.JSON(http.StatusOK, HandoffsJSON(hs))
}
