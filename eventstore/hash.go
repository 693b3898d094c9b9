package eventstore

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"time"
)

// Hash is an event's hash: SHA-256 over what the store holds of the event
// and its stream predecessor's hash (see HashEvent and docs/audit.md). Its
// text form, in JSON too, is lower-case hex. The zero Hash, 32 zero bytes,
// is the previous hash of every stream's first event.
type Hash [sha256.Size]byte

// HashDomain opens every event's hash input, so that no other hash the
// ledger computes can be taken for an event's, and a later form of the
// input gets another name.
const HashDomain = "ledgerd-event-v1"

// TimeLayout is the form of a recorded time in an event's hash, and how the
// SQLite store keeps times: UTC with exactly six fractional digits (the
// microseconds PostgreSQL keeps), such as 2026-12-02T15:57:32.123456Z.
const TimeLayout = "2006-01-02T15:04:05.000000Z07:00"

// HashEvent returns the hash of e following prev, the hash of the event
// before it in its stream (the zero Hash for a stream's first event). It
// covers the bytes the store holds: e.ID, e.Stream, e.Version, e.Type,
// e.Data, e.RawMetadata and e.RecordedAt in TimeLayout; e.Position,
// e.Metadata, e.PrevHash and e.Hash are not read. The input is
//
//	HashDomain || prev || uint64(version) || field(id) || field(stream) ||
//	field(type) || field(data) || field(metadata) || field(recorded_at)
//
// where uint64 is 8 bytes big-endian and field(x) is uint64(len(x)) || x.
func HashEvent(prev Hash, e Event) Hash {
	return sha256.Sum256(AppendHashInput(make([]byte, 0, hashInputSize(&e)), prev, &e))
}

// AppendHashInput appends to b the whole hash input of e following prev
// (see HashEvent), for a caller that hashes many events with one buffer.
func AppendHashInput(b []byte, prev Hash, e *Event) []byte {
	b = append(b, HashDomain...)
	b = append(b, prev[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(e.Version))
	return appendHashFields(b, e)
}

// AppendHashFields appends to b the part of e's hash input that follows its
// version (see HashEvent), for a store that completes the input itself,
// such as an SQL statement that learns the previous hash and the version
// as it inserts.
func AppendHashFields(b []byte, e Event) []byte { return appendHashFields(b, &e) }

func appendHashFields(b []byte, e *Event) []byte {
	b = appendField(b, e.ID)
	b = appendField(b, e.Stream)
	b = appendField(b, e.Type)
	b = appendField(b, e.Data)
	b = appendField(b, e.RawMetadata)
	// The recorded time's length is known once it is formatted.
	at := len(b)
	b = binary.BigEndian.AppendUint64(b, 0)
	b = e.RecordedAt.UTC().AppendFormat(b, TimeLayout)
	binary.BigEndian.PutUint64(b[at:], uint64(len(b)-at-8))
	return b
}

// appendField appends f's length, 8 bytes big-endian, and f.
func appendField[T ~string | ~[]byte](b []byte, f T) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(len(f)))
	return append(b, f...)
}

func hashInputSize(e *Event) int {
	return len(HashDomain) + len(Hash{}) + 7*8 + len(e.ID) + len(e.Stream) + len(e.Type) + len(e.Data) + len(e.RawMetadata) + len(TimeLayout)
}

// RecordTime returns t as a store records it: in UTC, truncated to the
// microsecond, so that it reads back equal and hashes the same.
func RecordTime(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// String returns h in lower-case hex.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// MarshalText encodes h in lower-case hex.
func (h Hash) MarshalText() ([]byte, error) { return hex.AppendEncode(nil, h[:]), nil }

// UnmarshalText decodes h from hex.
func (h *Hash) UnmarshalText(text []byte) error {
	if hex.DecodedLen(len(text)) != len(h) {
		return fmt.Errorf("event hash %q: want %d hex digits", text, 2*len(h))
	}
	if _, err := hex.Decode(h[:], text); err != nil {
		return fmt.Errorf("event hash %q: %w", text, err)
	}
	return nil
}

// Scan implements sql.Scanner: a store reads a hash from its 32 bytes.
func (h *Hash) Scan(src any) error {
	b, ok := src.([]byte)
	if !ok || len(b) != len(h) {
		return fmt.Errorf("event hash: got %T of %d bytes, want %d bytes", src, len(b), len(h))
	}
	copy(h[:], b)
	return nil
}
