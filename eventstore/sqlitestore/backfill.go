package sqlitestore

import (
	"database/sql/driver"
	"fmt"
	"time"

	"modernc.org/sqlite"

	"github.com/resolutionflow/ledgerd/eventstore"
)

// hashFunction is the SQL function with which the migration that gives
// events their hashes (sqlite/00008_event_hashes.sql) hashes the events
// recorded before it: ledgerd_event_hash(prev_hash, id, stream, version,
// type, data, metadata, recorded_at) is eventstore.HashEvent of that row.
// SQLite has no SHA-256 of its own; every connection the driver opens once
// this package is initialized has the function.
const hashFunction = "ledgerd_event_hash"

func init() {
	sqlite.MustRegisterDeterministicScalarFunction(hashFunction, 8, hashRow)
}

// hashRow computes ledgerd_event_hash from its arguments, as they are
// stored: the hash as a blob, the version as an integer, the rest as text.
func hashRow(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
	var prev eventstore.Hash
	if err := prev.Scan(args[0]); err != nil {
		return nil, fmt.Errorf("%s: %w", hashFunction, err)
	}
	version, ok := args[3].(int64)
	if !ok {
		return nil, fmt.Errorf("%s: version is %T, want an integer", hashFunction, args[3])
	}
	texts := make([]string, len(args))
	for _, i := range []int{1, 2, 4, 5, 6, 7} {
		if texts[i], ok = args[i].(string); !ok {
			return nil, fmt.Errorf("%s: argument %d is %T, want text", hashFunction, i+1, args[i])
		}
	}
	at, err := time.Parse(TimeLayout, texts[7])
	if err != nil {
		return nil, fmt.Errorf("%s: recorded time of event %s: %w", hashFunction, texts[1], err)
	}
	e := eventstore.Event{
		ID: texts[1], Stream: texts[2], Version: version, Type: texts[4],
		Data: []byte(texts[5]), RawMetadata: []byte(texts[6]), RecordedAt: at,
	}
	hash := eventstore.HashEvent(prev, e)
	return hash[:], nil
}
