// Package idempotency remembers the responses of requests that carry an
// Idempotency-Key, so that a client retrying a request gets the first
// response again instead of running the command twice.
//
// A key belongs to one user of one account (an Owner): the same user id
// with the same key in another account is another key. A request with a
// key not seen yet (Lookup) runs, and a command stores its answer in the
// same transaction as its events (Answer, eventstore.WithAnswer); an
// answer no append carried, such as a rejection, is stored on its own
// (Save). Either store fails when another request took the key meanwhile,
// and the request then answers with that one's answer.
// Keys expire TTL after they were stored; an expired key is treated as
// never seen, and Sweep, which a serving process runs every SweepInterval
// (RunSweeps), deletes it. A record without an answer is pending: its
// request is taken as still in progress until the record is older than
// PendingTimeout, and the next request with the key then takes it over.
// Nothing writes pending records any more; a database may still hold ones
// that a process of an earlier version reserved and never completed.
package idempotency

import (
	"context"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/internal/poll"
)

const (
	// TTL is how long a key and its stored response are kept.
	TTL = 24 * time.Hour
	// PendingTimeout is how long a key held without a response blocks
	// other requests with the same key before it is taken as abandoned.
	PendingTimeout = time.Minute
	// MaxKeyLength bounds a key, in bytes.
	MaxKeyLength = 255
	// SweepInterval is how often a serving process deletes expired keys.
	SweepInterval = 10 * time.Minute
)

// Owner is whom a key belongs to: a user within an account. Tokens name
// the account and the user apart, so one user id may act in several
// accounts; its keys in one are never seen from another.
type Owner struct {
	Account uuid.UUID
	User    uuid.UUID
	// Session is the session the request's route names, uuid.Nil for
	// none. It is not part of the key: it is stored with the response,
	// so that erasing the session deletes it (DeleteSession).
	Session uuid.UUID
}

// Record is what a store knows about a key.
type Record struct {
	// RequestHash identifies the request that holds the key.
	RequestHash string
	// StatusCode is the stored response's status; 0 while the request that
	// holds the key has not stored one (Pending).
	StatusCode int
	// Response is the stored response body.
	Response []byte
}

// Pending reports whether the request that holds the key has not stored
// its response yet.
func (r Record) Pending() bool { return r.StatusCode == 0 }

// Store keeps idempotency keys and the responses they produced.
type Store interface {
	// Lookup returns the record of owner's key; found is false when there
	// is none, or only one that a new request may take over (expired, or
	// pending for longer than PendingTimeout).
	Lookup(ctx context.Context, owner Owner, key string) (rec Record, found bool, err error)
	// Save stores a request's answer under owner's key unless another
	// request holds the key, as an append's answer does. It returns saved
	// = true when it stored it; otherwise the record of the request that
	// holds the key.
	Save(ctx context.Context, owner Owner, key, requestHash string, status int, body []byte) (rec Record, saved bool, err error)
	// DeleteSession deletes every key whose stored response is of a
	// session of an account (Owner.Session), whoever owns it, and returns
	// how many it deleted: erasing a session's personal data erases the
	// responses that repeat it.
	DeleteSession(ctx context.Context, account, session uuid.UUID) (int64, error)
	// Sweep deletes every key older than TTL and returns how many it
	// deleted. Any number of processes may sweep at once.
	Sweep(ctx context.Context) (int64, error)
}

// Answer returns the answer of a request with owner's key, for an append
// to write with its events (eventstore.WithAnswer).
func Answer(owner Owner, key, requestHash string, status int, body []byte) eventstore.Answer {
	return eventstore.Answer{
		Account: owner.Account, User: owner.User, Session: owner.Session, Key: key, RequestHash: requestHash,
		Status: status, Body: body, TTL: TTL, PendingTimeout: PendingTimeout,
	}
}

// RunSweeps calls s.Sweep now and then every interval until ctx ends, then
// returns nil. A failed sweep is logged and tried again at the next
// interval: until then, expired keys only take room, since Lookup, Save
// and an append's answer treat them as absent.
func RunSweeps(ctx context.Context, s Store, interval time.Duration, logger *slog.Logger) error {
	for {
		n, err := s.Sweep(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			logger.WarnContext(ctx, "idempotency key sweep failed", "err", err, "retry_in", interval)
		case n > 0:
			logger.InfoContext(ctx, "swept expired idempotency keys", "keys", n)
		}
		if !poll.Sleep(ctx, interval, nil) {
			return nil
		}
	}
}
