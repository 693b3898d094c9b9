package idempotency

import (
	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/shred"
)

// An Option configures a store.
type Option func(*Sealing)

// Sealing is how a store keeps answers: sealed by Keys, or as they are
// when Keys is nil. The stores make it with NewSealing.
type Sealing struct {
	Keys *shred.Keyring
}

// SealedBy makes a store keep the answers of requests on a session
// (Owner.Session) sealed under the session's data key (see
// docs/data-protection.md): a dump of the database holds no notes, and an
// answer whose key is gone (the session was erased) is never replayed.
// Without it, answers are stored as they are.
func SealedBy(keys *shred.Keyring) Option {
	return func(o *Sealing) { o.Keys = keys }
}

// NewSealing returns the Sealing that opts set.
func NewSealing(opts []Option) Sealing {
	var o Sealing
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// SealAnswer returns body as stored for a request of owner: sealed under
// its session's data key, stored as key (nil when the session has none,
// or the request names no session: body as it is).
func (o Sealing) SealAnswer(owner Owner, key *eventstore.DataKey, body []byte) ([]byte, error) {
	if owner.Session == uuid.Nil {
		return body, nil
	}
	return o.Keys.SealAnswer(eventcodec.StreamName(owner.Account, owner.Session), key, body)
}

// OpenAnswer returns a stored answer of a request of account on session
// (uuid.Nil for none) opened with the session's data key as read with it;
// ok is false when it cannot be opened: its key is gone.
func (o Sealing) OpenAnswer(account, session uuid.UUID, key *eventstore.DataKey, stored []byte) (body []byte, ok bool) {
	if !shred.IsSealedAnswer(stored) {
		return stored, true
	}
	if session == uuid.Nil {
		return nil, false
	}
	return o.Keys.OpenAnswer(eventcodec.StreamName(account, session), key, stored)
}

// StoredKey is a data key's columns as a LEFT JOIN reads them: all NULL
// when there is none.
type StoredKey struct {
	ID, MasterKeyID *string
	Wrapped         []byte
}

// Key returns the data key read, nil for none.
func (k StoredKey) Key() *eventstore.DataKey {
	if k.ID == nil || k.MasterKeyID == nil {
		return nil
	}
	return &eventstore.DataKey{ID: *k.ID, Wrapped: k.Wrapped, MasterKeyID: *k.MasterKeyID}
}
