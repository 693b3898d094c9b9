package shred

import (
	"fmt"
	"strings"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
)

// The ledger keeps two copies of a session's notes besides its events:
// the read model's rows (projections) and the stored answers of requests
// sent with an Idempotency-Key. Both are sealed under the session's data
// key, as the events are, so that a dump of the database holds no notes
// and destroying the key erases these copies too. Their stored form is
// tagged, so that rows and answers stored in plaintext before they were
// sealed still read as they are.
const (
	// sealedTag starts a sealed copy: the tag, then a value sealed as the
	// events' are ("<key id>.<base64url(nonce | ciphertext)>").
	sealedTag = "sealed:"
	// plainTag starts the notes of a row of a session that has no data
	// key (its events predate encryption) which would otherwise read as
	// tagged: the tag, then the notes as they are.
	plainTag = "plain:"
)

// fieldAnswer names stored answers in the additional data.
const fieldAnswer = "idempotent answer"

// SealNotes returns the stored form of the notes of a read-model row of
// stream: sealed under the stream's data key, stored as key (as read with
// the event the notes come from), or, without a key (a session whose
// events predate encryption, whose notes are in plaintext in the log
// too), the notes as they are. OpenNotes reads it back. Empty notes stay
// empty. On a nil keyring it returns the notes as they are (tagged only
// if they would read as tagged).
func (k *Keyring) SealNotes(stream string, key *eventstore.DataKey, notes string) (string, error) {
	if notes == "" {
		return "", nil
	}
	if k == nil || key == nil {
		if strings.HasPrefix(notes, sealedTag) || strings.HasPrefix(notes, plainTag) {
			return plainTag + notes, nil
		}
		return notes, nil
	}
	dk, err := k.Unwrap(stream, key)
	if err != nil {
		return "", fmt.Errorf("seal the notes of a row of %q: %w", stream, err)
	}
	return sealedTag + dk.seal(fieldNotes, notes), nil
}

// OpenNotes returns the notes of a read-model row of stream from their
// stored form (SealNotes), opened with the stream's data key as read with
// the row (nil when it has none). erased is true when the notes were
// sealed under a key that is gone (the session was erased) or that this
// keyring cannot unwrap, or were altered: the row then shows its notes as
// erased. It never fails, so that no row stops a read.
func (k *Keyring) OpenNotes(stream string, key *eventstore.DataKey, stored string) (notes string, erased bool) {
	if rest, ok := strings.CutPrefix(stored, plainTag); ok {
		return rest, false
	}
	sealed, ok := strings.CutPrefix(stored, sealedTag)
	if !ok {
		return stored, false
	}
	dk := k.unwrapped(stream, key)
	notes, ok, err := dk.open(fieldNotes, sealed)
	if !ok || err != nil {
		return "", true
	}
	return notes, false
}

// OpenHandoff returns a read-model row h with its notes, as stored
// (SealNotes), opened by its session's data key as read with the row (nil
// for none): shown as erased (empty, NotesErased) when they were sealed
// under a key that is gone.
func (k *Keyring) OpenHandoff(h domain.Handoff, key *eventstore.DataKey) domain.Handoff {
	notes, erased := k.OpenNotes(eventcodec.StreamName(h.AccountID, h.SessionID), key, h.Notes)
	if erased {
		notes, h.NotesErased = "", true
	}
	h.Notes = notes
	return h
}

// SealAnswer returns the stored form of the answer (a response body) of
// a request with an Idempotency-Key on a session stream: sealed under the
// stream's data key, stored as key, or as it is when the stream has no
// key (nil). OpenAnswer reads it back.
func (k *Keyring) SealAnswer(stream string, key *eventstore.DataKey, body []byte) ([]byte, error) {
	if k == nil || key == nil {
		return body, nil
	}
	dk, err := k.Unwrap(stream, key)
	if err != nil {
		return nil, fmt.Errorf("seal an answer of %q: %w", stream, err)
	}
	return []byte(sealedTag + dk.seal(fieldAnswer, string(body))), nil
}

// OpenAnswer returns an answer from its stored form (SealAnswer), opened
// with the stream's data key as read with it (nil for none); ok is false
// when it was sealed under a key that is gone or that this keyring cannot
// unwrap, or was altered. An answer stored in plaintext (JSON, which
// never starts with the tag) is returned as it is.
func (k *Keyring) OpenAnswer(stream string, key *eventstore.DataKey, stored []byte) (body []byte, ok bool) {
	sealed, tagged := strings.CutPrefix(string(stored), sealedTag)
	if !tagged {
		return stored, true
	}
	dk := k.unwrapped(stream, key)
	plain, ok, err := dk.open(fieldAnswer, sealed)
	if !ok || err != nil {
		return nil, false
	}
	return []byte(plain), true
}

// IsSealedAnswer reports whether stored is a sealed answer.
func IsSealedAnswer(stored []byte) bool { return strings.HasPrefix(string(stored), sealedTag) }

// unwrapped returns the data key of stream stored as key, or nil when
// there is none or it does not unwrap (a nil *DataKey opens nothing).
func (k *Keyring) unwrapped(stream string, key *eventstore.DataKey) *DataKey {
	if k == nil || key == nil {
		return nil
	}
	dk, err := k.Unwrap(stream, key)
	if err != nil {
		return nil
	}
	return &dk
}
