package projections

import (
	"bytes"
	"cmp"
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/domain"
)

// MaxPageSize is the most handoffs a client may ask for in one page.
const MaxPageSize = 500

// Page selects part of a list of handoffs: at most Limit of them (Limit >=
// 1), the first ones that come after After in the list's order, or from
// the start of the list when After is nil. Pages are keyset pages: a page
// starts after a sort key, not at an offset, so rows added or removed
// while a client pages through never shift the pages after them.
type Page struct {
	Limit int
	After *Cursor
}

// Cursor is a place in a list: the sort key of the handoff a page ended
// with. Every field of it is immutable for a handoff, and the id makes it
// unique. The queue sorts on (Class, CreatedAt, ID) ascending; the history
// on (CreatedAt, ID) descending, where Class is 0.
type Cursor struct {
	Class     int
	CreatedAt time.Time
	ID        uuid.UUID
}

// QueueClasses is the number of queue classes: QueueClass is in [0,
// QueueClasses).
const QueueClasses = 8

// QueueClass is a handoff's place in the queue before its creation time:
// escalations (0 to 3) before parks (4 to 7), each from the highest
// priority to the lowest. The read-model stores compute the same number in
// SQL, as the generated column queue_class.
func QueueClass(intent domain.Intent, priority domain.Priority) int {
	class := 3 - priority.Rank()
	if intent != domain.IntentEscalate {
		class += 4
	}
	return class
}

// QueueCursor is the place of h in its team's queue.
func QueueCursor(h domain.Handoff) Cursor {
	return Cursor{Class: QueueClass(h.Intent, h.Priority), CreatedAt: h.CreatedAt, ID: h.ID}
}

// HistoryCursor is the place of h in its session's history.
func HistoryCursor(h domain.Handoff) Cursor {
	return Cursor{CreatedAt: h.CreatedAt, ID: h.ID}
}

// Compare orders cursors as the queue lists them: by Class, then
// CreatedAt, then ID, each ascending (the bytes of the ID, as both stores
// order UUIDs). The history lists its handoffs in the opposite order.
// It returns -1, 0 or +1.
func (c Cursor) Compare(d Cursor) int {
	return cmp.Or(
		cmp.Compare(c.Class, d.Class),
		c.CreatedAt.Compare(d.CreatedAt),
		bytes.Compare(c.ID[:], d.ID[:]),
	)
}
