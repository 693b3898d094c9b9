package idempotency

import (
	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/shred"
)

// An Option configures a store.
type Option func(*options)

type options struct {
	keys *shred.Keyring
}

// SealedBy makes a store keep the answers of requests on a session
// (Owner.Session) sealed under the session's data key (see
// docs/data-protection.md): a dump of the database holds no notes, and an
// answer whose key is gone (the session was erased) is never replayed.
// Without it, answers are stored as they are.
func SealedBy(keys *shred.Keyring) Option {
	return func(o *options) { o.keys = keys }
}

func newOptions(opts []Option) options {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// sealAnswer returns body as stored for a request of owner: sealed under
// its session's data key, stored as key (nil when the session has none,
// or the request names no session: body as it is).
func (o options) sealAnswer(owner Owner, key *eventstore.DataKey, body []byte) ([]byte, error) {
	if owner.Session == uuid.Nil {
		return body, nil
	}
	return o.keys.SealAnswer(eventcodec.StreamName(owner.Account, owner.Session), key, body)
}

// openAnswer returns a stored answer of a request of account on session
// (uuid.Nil for none) opened with the session's data key as read with it;
// ok is false when it cannot be opened: its key is gone.
func (o options) openAnswer(account, session uuid.UUID, key *eventstore.DataKey, stored []byte) (body []byte, ok bool) {
	if !shred.IsSealedAnswer(stored) {
		return stored, true
	}
	if session == uuid.Nil {
		return nil, false
	}
	return o.keys.OpenAnswer(eventcodec.StreamName(account, session), key, stored)
}

// storedKey is a data key's columns as a LEFT JOIN reads them: all NULL
// when there is none.
type storedKey struct {
	id, masterKeyID *string
	wrapped         []byte
}

// key returns the data key read, nil for none.
func (k storedKey) key() *eventstore.DataKey {
	if k.id == nil || k.masterKeyID == nil {
		return nil
	}
	return &eventstore.DataKey{ID: *k.id, Wrapped: k.wrapped, MasterKeyID: *k.masterKeyID}
}
