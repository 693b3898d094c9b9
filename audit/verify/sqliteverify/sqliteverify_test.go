package sqliteverify_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/resolutionflow/ledgerd/audit/verify"
	"github.com/resolutionflow/ledgerd/audit/verify/sqliteverify"
	"github.com/resolutionflow/ledgerd/audit/verify/verifytest"
	"github.com/resolutionflow/ledgerd/internal/sqlitetest"
)

// readings are the ways of splitting the read that the tests try: one
// reader and one chunk, as a small log is read by default, and several
// readers taking small chunks in turn, whose rows the checks must put
// back in order.
var readings = []struct {
	readers int
	chunk   int64
}{{1, 1 << 14}, {2, 7}, {3, 1}, {4, 100}}

// TestVerify_ChunksInOrder verifies a log of 1,500 events over 37 streams
// (two checkpoints and a tail) read in every way: each gives the same
// counts as the log holds.
func TestVerify_ChunksInOrder(t *testing.T) {
	const events, streams = 1500, 37
	store := sqlitetest.Open(t)
	key := writeLog(t, store.DB(), events, streams, nil)
	for _, r := range readings {
		t.Run(fmt.Sprintf("readers=%d/chunk=%d", r.readers, r.chunk), func(t *testing.T) {
			defer sqliteverify.SetChunks(r.readers, r.chunk)()
			res, err := sqliteverify.Verify(t.Context(), store.ReadDB(), verify.Options{Key: key.Verifier()})
			want := verify.Result{Events: events, Streams: streams, Leaves: events, Checkpoints: events/verifytest.CheckpointEvery + 1}
			if err != nil || res != want {
				t.Fatalf("verify: %+v, %v; want %+v", res, err, want)
			}
		})
	}
}

// TestVerify_ChunksNameTheFirstFailure alters two events far apart: read
// in any way, the verification names the first of them, though a later
// chunk may have been read before it.
func TestVerify_ChunksNameTheFirstFailure(t *testing.T) {
	store := sqlitetest.Open(t)
	key := writeLog(t, store.DB(), 1500, 37, map[int64]bool{1234: true, 321: true})
	for _, r := range readings {
		t.Run(fmt.Sprintf("readers=%d/chunk=%d", r.readers, r.chunk), func(t *testing.T) {
			defer sqliteverify.SetChunks(r.readers, r.chunk)()
			_, err := sqliteverify.Verify(t.Context(), store.ReadDB(), verify.Options{Key: key.Verifier()})
			var f *verify.Failure
			if !errors.As(err, &f) || f.Position != 321 {
				t.Fatalf("verify: %v; want the failure at position 321", err)
			}
		})
	}
}
