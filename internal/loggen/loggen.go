// Package loggen writes a large event log straight into a PostgreSQL
// ledger database, for the benchmarks of the readers of the log (the relay's
// drain, the rebuild of the read models). The events are what commands
// append: each handoff is escalated or parked, then claimed (two in three)
// or withdrawn, with the metadata a REST command records and a valid hash
// chain, so that every reader takes them as real.
package loggen

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
)

// Notes are a typical escalation's notes.
const Notes = "customer VPN drops every 20 minutes; tried MTU 1400"

// Events returns n events of n/2 handoffs (n rounded up to an even
// number) on sessions spread over accounts accounts, each with a few
// teams, recorded from at on, with their hashes chained.
func Events(n, accounts int, at time.Time) ([]eventstore.Event, error) {
	accts := make([]uuid.UUID, max(accounts, 1))
	for i := range accts {
		accts[i] = uuid.New()
	}
	teams := [4]uuid.UUID{uuid.New(), uuid.New(), uuid.New(), uuid.New()}
	events := make([]eventstore.Event, 0, n+1)
	for i := 0; len(events) < n; i++ {
		account, team := accts[i%len(accts)], teams[i%len(teams)]
		session, handoff, holder := uuid.New(), uuid.New(), uuid.New()
		at = at.Add(time.Millisecond)
		created := domain.HandoffCreated{HandoffID: handoff, SessionID: session, AccountID: account, TeamID: team,
			CreatedBy: holder, Notes: Notes, Priority: domain.PriorityHigh, At: at}
		var first domain.Event = domain.HandoffEscalated{HandoffCreated: created}
		if i%2 == 1 {
			first = domain.HandoffParked{HandoffCreated: created}
		}
		var second domain.Event = domain.HandoffClaimed{HandoffID: handoff, SessionID: session, ClaimedBy: uuid.New(), Role: domain.RoleEngineer, At: at}
		if i%3 == 2 {
			second = domain.HandoffWithdrawn{HandoffID: handoff, SessionID: session, WithdrawnBy: holder, At: at}
		}
		stream := eventcodec.StreamName(account, session)
		var prev eventstore.Hash
		for v, d := range []domain.Event{first, second} {
			typ, data, err := eventcodec.Encode(d)
			if err != nil {
				return nil, err
			}
			meta := eventstore.Metadata{ActorID: holder.String(), AccountID: account.String(), TeamID: team.String(),
				Role: string(domain.RoleEngineer), RequestID: ulid.Make().String(), ClientIP: "192.0.2." + strconv.Itoa(i%250+1)}
			e := eventstore.Event{ID: ulid.Make().String(), Type: typ, Stream: stream, Version: int64(v + 1),
				RecordedAt: eventstore.RecordTime(at), Data: data, Metadata: meta, RawMetadata: meta.AppendJSON(nil), PrevHash: prev}
			e.Hash = eventstore.HashEvent(prev, e)
			prev = e.Hash
			events = append(events, e)
		}
	}
	return events, nil
}

// Postgres appends n events made by Events to the log of the migrated
// ledger database pool is on, with COPY, and returns them with the
// positions they got. It is far quicker than n appends, and bypasses the
// store: use it only to fill a database for a benchmark.
func Postgres(ctx context.Context, pool *pgxpool.Pool, n, accounts int) ([]eventstore.Event, error) {
	events, err := Events(n, accounts, time.Now().Add(-time.Hour))
	if err != nil {
		return nil, err
	}
	var first int64
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		// Positions drawn by one transaction, in order: events land in
		// the log as one append would put them.
		if err := tx.QueryRow(ctx, `SELECT nextval('events_position_seq')`).Scan(&first); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, fmt.Sprintf(`SELECT setval('events_position_seq', %d)`, first+int64(len(events))-1)); err != nil {
			return err
		}
		rows := make([][]any, len(events))
		for i := range events {
			e := &events[i]
			e.Position = first + int64(i)
			rows[i] = []any{e.Position, e.ID, e.Stream, e.Version, e.Type, string(e.Data), string(e.RawMetadata), e.RecordedAt, e.PrevHash[:], e.Hash[:]}
		}
		_, err := tx.CopyFrom(ctx, pgx.Identifier{"events"},
			[]string{"position", "id", "stream", "version", "type", "data", "metadata", "recorded_at", "prev_hash", "hash"},
			pgx.CopyFromRows(rows))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("write %d events: %w", len(events), err)
	}
	return events, nil
}
