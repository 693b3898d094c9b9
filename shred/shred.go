// Package shred keeps the personal data of the event log erasable:
// crypto-shredding. Each session stream's personal data, the engineer
// notes of its handoffs and the client address of its events, is stored
// encrypted (AES-256-GCM) under a data key of the stream; the data key is
// stored wrapped (AES-256-GCM) by a master key that never enters the
// database. Erasing a session destroys its data key: the events stay as
// they were written, their hashes still check, and what they hold of the
// person can no longer be read by anyone.
//
// A Keyring holds the master key. The command handler seals the personal
// data of new events (Keyring.Seal) and creates a stream's key with its
// first event; Store opens what every reader of the log gets
// (Keyring.Open), so that clients see the plaintext exactly as before
// while the key exists, and engineer_notes null with notes_erased true
// once it is gone. See docs/data-protection.md.
package shred

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
)

// KeySize is the size of master and data keys, in bytes (AES-256).
const KeySize = 32

// MasterKey is the key that wraps every data key.
type MasterKey struct {
	key [KeySize]byte
	id  string
}

// ParseMasterKey reads a master key from its text form: 64 hex digits.
func ParseMasterKey(text string) (MasterKey, error) {
	raw, err := hex.DecodeString(strings.TrimSpace(text))
	if err != nil || len(raw) != KeySize {
		return MasterKey{}, fmt.Errorf("a master key is %d hex digits (make one with: openssl rand -hex 32)", 2*KeySize)
	}
	var m MasterKey
	copy(m.key[:], raw)
	sum := sha256.Sum256(append([]byte("ledgerd master key id\x00"), raw...))
	m.id = hex.EncodeToString(sum[:8])
	return m, nil
}

// NewMasterKey returns a new random master key in its text form.
func NewMasterKey() (string, error) {
	raw := make([]byte, KeySize)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("make master key: %w", err)
	}
	return hex.EncodeToString(raw), nil
}

// ID names the master key without revealing it: the data keys it wraps
// record it, so a server given another master key says so at start.
func (m MasterKey) ID() string { return m.id }

// Keyring seals and opens personal data with data keys wrapped by a master
// key.
type Keyring struct {
	master MasterKey
	wrap   cipher.AEAD
	// cache holds the data keys Unwrap returned, by stream, key id
	// and wrapped bytes: a key is unwrapped once however many events and
	// rows of its stream are read, and only from the very row that was
	// unwrapped before (a destroyed key is no longer read with the rows,
	// so the cache never opens what the database no longer holds a key
	// for).
	cache *lru.Cache[string, DataKey]
}

// NewScratchKeyring returns a keyring of a new random master key that no
// file keeps: for a ledger whose data need not outlive the process, a
// benchmark's scratch ledger or a test's.
func NewScratchKeyring() (*Keyring, error) {
	text, err := NewMasterKey()
	if err != nil {
		return nil, err
	}
	m, err := ParseMasterKey(text)
	if err != nil {
		return nil, err
	}
	return NewKeyring(m), nil
}

// unwrappedKeys bounds the keyring's cache of unwrapped data keys.
const unwrappedKeys = 4096

// NewKeyring returns a keyring of the master key m.
func NewKeyring(m MasterKey) *Keyring {
	cache, err := lru.New[string, DataKey](unwrappedKeys)
	if err != nil {
		panic(err) // only for a size that is not positive
	}
	return &Keyring{master: m, wrap: newGCM(m.key[:]), cache: cache}
}

// MasterKeyID is the ID of the keyring's master key.
func (k *Keyring) MasterKeyID() string { return k.master.id }

func newGCM(key []byte) cipher.AEAD {
	block, err := aes.NewCipher(key)
	if err != nil {
		panic(err) // only for a key that is not 32 bytes, which never happens
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return gcm
}

// ErrWrongMasterKey is matched (errors.Is) by the error of unwrapping a
// data key wrapped by another master key, or altered.
var ErrWrongMasterKey = errors.New("data key not wrapped by this master key")

// DataKey is a stream's unwrapped data key.
type DataKey struct {
	stream string
	id     string
	aead   cipher.AEAD
}

// ID names the key.
func (d DataKey) ID() string { return d.id }

// NewDataKey makes a new data key for stream and returns it with its
// stored form, to append with the stream's next events
// (eventstore.KeyChange.Create).
func (k *Keyring) NewDataKey(stream string) (DataKey, *eventstore.DataKey, error) {
	raw := make([]byte, KeySize+8)
	if _, err := rand.Read(raw); err != nil {
		return DataKey{}, nil, fmt.Errorf("make data key: %w", err)
	}
	key, id := raw[:KeySize], hex.EncodeToString(raw[KeySize:])
	stored := &eventstore.DataKey{ID: id, MasterKeyID: k.master.id, Wrapped: k.wrapKey(stream, id, key)}
	return DataKey{stream: stream, id: id, aead: newGCM(key)}, stored, nil
}

// wrapKey encrypts a data key under the master key, bound to its stream
// and id, so that a wrapped key moved to another stream's row does not
// unwrap.
func (k *Keyring) wrapKey(stream, id string, key []byte) []byte {
	nonce := make([]byte, k.wrap.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		panic(fmt.Errorf("read random nonce: %w", err)) // crypto/rand does not fail
	}
	return k.wrap.Seal(nonce, nonce, key, wrapAAD(stream, id))
}

func wrapAAD(stream, id string) []byte {
	return []byte("ledgerd data key\x00" + stream + "\x00" + id)
}

// Unwrap returns the data key of stream from its stored form. Keys are
// cached (a bounded LRU): reading a stream's key again costs a lookup.
func (k *Keyring) Unwrap(stream string, stored *eventstore.DataKey) (DataKey, error) {
	if stored.MasterKeyID != k.master.id {
		_, err := k.unwrapKey(stream, stored)
		return DataKey{}, err
	}
	id := stream + "\x00" + stored.ID + "\x00" + string(stored.Wrapped)
	if dk, ok := k.cache.Get(id); ok {
		return dk, nil
	}
	key, err := k.unwrapKey(stream, stored)
	if err != nil {
		return DataKey{}, err
	}
	dk := DataKey{stream: stream, id: stored.ID, aead: newGCM(key)}
	k.cache.Add(id, dk)
	return dk, nil
}

func (k *Keyring) unwrapKey(stream string, stored *eventstore.DataKey) ([]byte, error) {
	n := k.wrap.NonceSize()
	if stored.MasterKeyID != k.master.id || len(stored.Wrapped) < n {
		return nil, fmt.Errorf("data key %s of stream %q: %w %s (it names master key %s)", stored.ID, stream, ErrWrongMasterKey, k.master.id, stored.MasterKeyID)
	}
	key, err := k.wrap.Open(nil, stored.Wrapped[:n], stored.Wrapped[n:], wrapAAD(stream, stored.ID))
	if err != nil {
		return nil, fmt.Errorf("data key %s of stream %q: %w %s: %w", stored.ID, stream, ErrWrongMasterKey, k.master.id, err)
	}
	return key, nil
}

// Rewrap returns stored, wrapped by the master key of next instead of
// k's: rotating the master key rewraps every data key, and changes no
// event.
func (k *Keyring) Rewrap(stream string, stored *eventstore.DataKey, next *Keyring) (*eventstore.DataKey, error) {
	key, err := k.unwrapKey(stream, stored)
	if err != nil {
		return nil, err
	}
	return &eventstore.DataKey{ID: stored.ID, MasterKeyID: next.master.id, Wrapped: next.wrapKey(stream, stored.ID, key)}, nil
}

// Sealed values are "<key id>.<base64url(nonce | ciphertext)>", bound to
// their stream and field (the additional data), so that none can be
// moved to another stream or field.
const sealSep = "."

// Field names the personal-data fields in the additional data.
const (
	fieldNotes    = "engineer_notes"
	fieldClientIP = "client_ip"
)

func (d DataKey) seal(field, plaintext string) string {
	nonce := make([]byte, d.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		panic(fmt.Errorf("read random nonce: %w", err))
	}
	sealed := d.aead.Seal(nonce, nonce, []byte(plaintext), sealAAD(d.stream, field))
	return d.id + sealSep + base64.RawURLEncoding.EncodeToString(sealed)
}

func sealAAD(stream, field string) []byte {
	return []byte("ledgerd personal data\x00" + stream + "\x00" + field)
}

// ErrUnreadable is matched (errors.Is) by the error of opening a value
// sealed under the stream's current key that does not decrypt: it was
// altered.
var ErrUnreadable = errors.New("sealed value does not decrypt")

// open returns the plaintext of a value sealed under d, or ok false when
// it was sealed under another key of the stream, one since destroyed.
func (d *DataKey) open(field, sealed string) (string, bool, error) {
	id, body, found := strings.Cut(sealed, sealSep)
	if !found {
		return "", false, fmt.Errorf("%s of stream %q: %w: not a sealed value", field, d.streamName(), ErrUnreadable)
	}
	if d == nil || id != d.id {
		return "", false, nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(body)
	n := d.aead.NonceSize()
	if err != nil || len(raw) < n {
		return "", false, fmt.Errorf("%s of stream %q: %w", field, d.stream, ErrUnreadable)
	}
	plain, err := d.aead.Open(nil, raw[:n], raw[n:], sealAAD(d.stream, field))
	if err != nil {
		return "", false, fmt.Errorf("%s of stream %q: %w: %w", field, d.stream, ErrUnreadable, err)
	}
	return string(plain), true, nil
}

func (d *DataKey) streamName() string {
	if d == nil {
		return ""
	}
	return d.stream
}

// Seal returns events with their personal data sealed under key: the
// notes of a new handoff and the client address of each.
func Seal(key DataKey, events []eventstore.NewEvent) ([]eventstore.NewEvent, error) {
	out := make([]eventstore.NewEvent, len(events))
	for i, e := range events {
		data, err := eventcodec.SealNotes(e.Type, e.Data, func(notes string) (string, error) {
			return key.seal(fieldNotes, notes), nil
		})
		if err != nil {
			return nil, err
		}
		e.Data = data
		if e.Metadata.ClientIP != "" {
			e.Metadata.ClientIPSealed, e.Metadata.ClientIP = key.seal(fieldClientIP, e.Metadata.ClientIP), ""
		}
		out[i] = e
	}
	return out, nil
}

// Open returns e as readers see it: its sealed personal data replaced by
// the plaintext when its stream's key (e.DataKey, as read with it) sealed
// it, or shown as erased otherwise (engineer_notes null, notes_erased
// true, no client_ip). The stored bytes the hashes cover, RawMetadata,
// PrevHash and Hash, are left as they are; Data becomes the opened JSON.
//
// Open never fails, so that no event stops the readers of the log: data
// it cannot parse is left as it is (the readers skip it, as any event they
// cannot decode), and a sealed value it cannot open, under a key this
// keyring cannot unwrap or altered since it was sealed, is shown as
// erased. `ledgerd verify` reports an altered event; a server refuses to
// start with a master key that does not wrap the database's data keys.
func (k *Keyring) Open(e eventstore.Event) eventstore.Event {
	if e.Metadata.ClientIPSealed == "" && !eventcodec.HasNotes(e.Type) {
		return e
	}
	var key *DataKey
	if e.DataKey != nil {
		if dk, err := k.Unwrap(e.Stream, e.DataKey); err == nil {
			key = &dk
		}
	}
	data, err := eventcodec.OpenNotes(e.Type, e.Data, func(sealed string) (string, bool, error) {
		notes, ok, err := key.open(fieldNotes, sealed)
		return notes, ok && err == nil, nil
	})
	if err == nil {
		e.Data = data
	}
	if sealed := e.Metadata.ClientIPSealed; sealed != "" {
		ip, ok, err := key.open(fieldClientIP, sealed)
		if !ok || err != nil {
			ip = ""
		}
		e.Metadata.ClientIP, e.Metadata.ClientIPSealed = ip, ""
	}
	return e
}

// OpenAll opens each of events (Open) in place and returns them.
func (k *Keyring) OpenAll(events []eventstore.Event) []eventstore.Event {
	for i := range events {
		events[i] = k.Open(events[i])
	}
	return events
}
