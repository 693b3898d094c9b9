package shred

import (
	"context"
	"fmt"
	"strings"

	"github.com/resolutionflow/ledgerd/eventstore"
)

// KeyStore is the table of data keys, as key rotation and the check at
// start see it; pgkeys and sqlitekeys implement it.
type KeyStore interface {
	// MasterKeyIDs returns how many data keys each master key wraps.
	MasterKeyIDs(ctx context.Context) (map[string]int64, error)
	// Rewrap replaces, in one transaction, every data key wrapped by the
	// master key from with rewrap's result, and returns how many it
	// replaced. The events are not touched.
	Rewrap(ctx context.Context, from string, rewrap func(stream string, key *eventstore.DataKey) (*eventstore.DataKey, error)) (int64, error)
}

// CheckMasterKey returns an error unless every data key in store is
// wrapped by the keyring's master key: a server given the wrong master key
// (or one whose rotation was interrupted) would fail to read every session
// it could not unwrap, and says so at start instead.
func CheckMasterKey(ctx context.Context, store KeyStore, k *Keyring) error {
	ids, err := store.MasterKeyIDs(ctx)
	if err != nil {
		return err
	}
	var others []string
	for id, n := range ids {
		if id != k.MasterKeyID() {
			others = append(others, fmt.Sprintf("%d wrapped by master key %s", n, id))
		}
	}
	if others != nil {
		return fmt.Errorf("the master key given is %s, but the database holds data keys it does not wrap (%s): give the master key file they were made with, "+
			"or, after an interrupted `ledgerd keys rotate`, run it again with the same files", k.MasterKeyID(), strings.Join(others, ", "))
	}
	return nil
}

// Rotate rewraps every data key of store wrapped by from's master key with
// to's, and returns how many it rewrapped. Data keys already wrapped by
// to's are left as they are, so an interrupted rotation can be run again.
func Rotate(ctx context.Context, store KeyStore, from, to *Keyring) (int64, error) {
	return store.Rewrap(ctx, from.MasterKeyID(), func(stream string, key *eventstore.DataKey) (*eventstore.DataKey, error) {
		return from.Rewrap(stream, key, to)
	})
}
