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
	b := make([]byte, 0, len(HashDomain)+len(prev)+8+hashFieldsSize(e))
	b = append(b, HashDomain...)
	b = append(b, prev[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(e.Version))
	return sha256.Sum256(AppendHashFields(b, e))
}

// AppendHashFields appends to b the part of e's hash input that follows its
// version (see HashEvent), for a store that completes the input itself,
// such as an SQL statement that learns the previous hash and the version
// as it inserts.
func AppendHashFields(b []byte, e Event) []byte {
	for _, f := range [...][]byte{[]byte(e.ID), []byte(e.Stream), []byte(e.Type), e.Data, e.RawMetadata, recordedAt(e)} {
		b = binary.BigEndian.AppendUint64(b, uint64(len(f)))
		b = append(b, f...)
	}
	return b
}

func hashFieldsSize(e Event) int {
	return 6*8 + len(e.ID) + len(e.Stream) + len(e.Type) + len(e.Data) + len(e.RawMetadata) + len(TimeLayout)
}

func recordedAt(e Event) []byte {
	return e.RecordedAt.UTC().AppendFormat(make([]byte, 0, len(TimeLayout)), TimeLayout)
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
