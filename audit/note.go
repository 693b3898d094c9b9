package audit

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
)

// GenerateKey returns a new Ed25519 signer key named name, in the note
// format ("PRIVATE+KEY+<name>+<hash>+<key>"), and its verifier key
// ("<name>+<hash>+<key>"), the public key that checks its signatures.
func GenerateKey(name string) (signer, verifier string, err error) {
	signer, verifier, err = note.GenerateKey(rand.Reader, name)
	if err != nil {
		return "", "", fmt.Errorf("generate audit key %q: %w", name, err)
	}
	return signer, verifier, nil
}

// Key signs the ledger's checkpoints.
type Key struct {
	signer   note.Signer
	verifier string
}

// ParseKey parses a signer key made by GenerateKey.
func ParseKey(skey string) (*Key, error) {
	signer, err := note.NewSigner(strings.TrimSpace(skey))
	if err != nil {
		return nil, fmt.Errorf("audit key: not a note signer key (PRIVATE+KEY+<name>+<hash>+<key>, made by `ledgerd audit keygen`): %w", err)
	}
	verifier, err := verifierOf(strings.TrimSpace(skey))
	if err != nil {
		return nil, err
	}
	return &Key{signer: signer, verifier: verifier}, nil
}

// verifierOf derives the verifier key from a signer key: the name, the key
// hash and the public half of the Ed25519 key.
func verifierOf(skey string) (string, error) {
	// skey is PRIVATE+KEY+<name>+<hash>+<base64(alg || seed)>, already
	// checked by note.NewSigner.
	parts := strings.SplitN(skey, "+", 5)
	raw, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil || len(raw) != 1+32 {
		return "", errors.New("audit key: malformed key")
	}
	public := ed25519.NewKeyFromSeed(raw[1:]).Public().(ed25519.PublicKey)
	vkey, err := note.NewEd25519VerifierKey(parts[2], public)
	if err != nil {
		return "", fmt.Errorf("audit key: %w", err)
	}
	return vkey, nil
}

// Verifier returns the public verifier key, "<name>+<hash>+<key>".
func (k *Key) Verifier() string { return k.verifier }

// Origin returns the checkpoints' origin line: the key's name.
func (k *Key) Origin() string { return k.signer.Name() }

// checkpointText returns the text of a checkpoint's note.
func checkpointText(origin string, size uint64, root []byte, position int64, at time.Time) string {
	return fmt.Sprintf("%s\n%d\n%s\nposition %d\ntime %s\n",
		origin, size, base64.StdEncoding.EncodeToString(root), position, at.UTC().Format(time.RFC3339Nano))
}

// Sign returns the checkpoint of a tree of size leaves with root hash
// root, whose last leaf is the event at position, made at at.
func (k *Key) Sign(size uint64, root []byte, position int64, at time.Time) (Checkpoint, error) {
	at = at.UTC().Truncate(time.Microsecond)
	msg, err := note.Sign(&note.Note{Text: checkpointText(k.Origin(), size, root, position, at)}, k.signer)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("sign checkpoint of size %d: %w", size, err)
	}
	return Checkpoint{Size: size, Root: root, Position: position, Time: at, Note: string(msg)}, nil
}

// OpenCheckpoint checks a checkpoint's signature with the verifier key
// vkey and returns what it says. It fails for a note not signed by that
// key, and for a text that is not a checkpoint of the key's origin.
func OpenCheckpoint(signed []byte, vkey string) (Checkpoint, error) {
	verifier, err := note.NewVerifier(strings.TrimSpace(vkey))
	if err != nil {
		return Checkpoint{}, fmt.Errorf("verifier key: %w", err)
	}
	n, err := note.Open(signed, note.VerifierList(verifier))
	if err != nil {
		return Checkpoint{}, fmt.Errorf("open checkpoint: %w", err)
	}
	c, err := parseCheckpoint(n.Text, verifier.Name())
	if err != nil {
		return Checkpoint{}, err
	}
	c.Note = string(signed)
	return c, nil
}

// parseCheckpoint parses a checkpoint's text, which must be exactly what
// checkpointText makes for origin.
func parseCheckpoint(text, origin string) (Checkpoint, error) {
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(lines) != 5 || lines[0] != origin {
		return Checkpoint{}, fmt.Errorf("checkpoint: want 5 lines with origin %q", origin)
	}
	var c Checkpoint
	var err error
	if c.Size, err = strconv.ParseUint(lines[1], 10, 64); err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint size: %w", err)
	}
	if c.Root, err = base64.StdEncoding.DecodeString(lines[2]); err != nil || len(c.Root) != HashSize {
		return Checkpoint{}, fmt.Errorf("checkpoint root: want %d bytes in base64", HashSize)
	}
	pos, ok := strings.CutPrefix(lines[3], "position ")
	if c.Position, err = strconv.ParseInt(pos, 10, 64); !ok || err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint: line 4 is not \"position <n>\"")
	}
	at, ok := strings.CutPrefix(lines[4], "time ")
	if c.Time, err = time.Parse(time.RFC3339Nano, at); !ok || err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint: line 5 is not \"time <RFC 3339>\"")
	}
	if checkpointText(origin, c.Size, c.Root, c.Position, c.Time) != text {
		return Checkpoint{}, fmt.Errorf("checkpoint: text is not in canonical form")
	}
	return c, nil
}
