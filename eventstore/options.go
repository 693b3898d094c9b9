package eventstore

import (
	"errors"
	"time"

	"github.com/google/uuid"
)

// AppendOption adds to an append what its caller knows or wants written
// with it.
type AppendOption func(*AppendOptions)

// AppendOptions are what an append's options say; a store reads them
// with Options.
type AppendOptions struct {
	// PrevHash, when not nil, is the hash of the stream's event at the
	// expected version, as the caller read it (AfterHash).
	PrevHash *Hash
	// Answer, when not nil, is written in the same transaction as the
	// events (WithAnswer).
	Answer *Answer
}

// Options returns what opts say.
func Options(opts []AppendOption) AppendOptions {
	var o AppendOptions
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// AfterHash tells an append expecting an exact version above NoStream the
// hash of the stream's event at that version, which its caller has just
// read, so that the store hashes the new events itself instead of reading
// that hash as it inserts. The store still checks that the stream's event
// at the expected version has this hash: an append given a wrong one is a
// *ConflictError and writes nothing, so the chain never breaks. Ignored
// for other expected versions.
func AfterHash(h Hash) AppendOption {
	return func(o *AppendOptions) { o.PrevHash = &h }
}

// Answer is a request's answer stored under its Idempotency-Key (see
// package idempotency), written in the same transaction as the events the
// request appended, so that the events and the answer that reports them
// are durable together, in one commit.
type Answer struct {
	Account uuid.UUID
	User    uuid.UUID
	Key     string
	// Session is the session the request's route names (uuid.Nil for
	// none), stored with the answer so that erasing the session deletes
	// it.
	Session     uuid.UUID
	RequestHash string
	Status      int
	Body        []byte
	// TTL is how long a key is kept; an older key is taken over.
	TTL time.Duration
	// PendingTimeout is how long a key held without an answer (pending)
	// blocks it; an older one is taken over.
	PendingTimeout time.Duration
}

// WithAnswer writes a with the append's events, in the same transaction.
// When a's key is held by another request (it has an answer, or is
// pending for less than a.PendingTimeout) the append writes nothing and
// returns an error matching ErrAnswerTaken.
func WithAnswer(a Answer) AppendOption {
	return func(o *AppendOptions) { o.Answer = &a }
}

// ErrAnswerTaken is matched (errors.Is) by the error of an append whose
// answer's key another request holds; nothing was written.
var ErrAnswerTaken = errors.New("idempotency key held by another request")
