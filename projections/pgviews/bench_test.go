package pgviews

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/internal/pgtest"
	"github.com/resolutionflow/ledgerd/internal/ratiobench"
	"github.com/resolutionflow/ledgerd/leader"
	"github.com/resolutionflow/ledgerd/projections"
	"github.com/resolutionflow/ledgerd/shred"
)

// Sizes of BenchmarkQueueSealed.
const (
	benchQueueRows = 100 // a page of the queue by default (the REST API's)
	benchReaders   = 4
)

// plainQueueSQL is the queue's first page as it was read before the read
// model kept its notes sealed: no join, the notes as stored.
const plainQueueSQL = `SELECT ` + handoffColumns + ` FROM handoffs
WHERE account_id = $1 AND team_id = $2 AND status = 'open' ORDER BY queue_class, created_at, id LIMIT $3`

// BenchmarkQueueSealed times a first page of a team's queue (100 open
// handoffs of 100 sessions, from 4 readers) as the store reads it, its
// notes sealed and each row's data key joined and unwrapped (through the
// keyring's cache), against the same page of a team whose rows hold their
// notes in plaintext, read as before (plainQueueSQL), in alternating
// slices on the same database (ratiobench). baseline-ratio is the sealed
// page's throughput over the plain one's.
func BenchmarkQueueSealed(b *testing.B) {
	pool := pgtest.NewPool(b, benchReaders)
	keys, err := shred.NewScratchKeyring()
	if err != nil {
		b.Fatal(err)
	}
	sealed, plain := New(pool).WithKeys(keys), New(pool)
	account, sealedTeam, plainTeam := uuid.New(), uuid.New(), uuid.New()
	ctx := b.Context()
	fill := func(s *Store, team uuid.UUID, withKeys bool) {
		err := s.Update(ctx, leader.Fence{}, "bench-"+team.String(), 0, 1, func(tx projections.Tx) error {
			for i := range benchQueueRows {
				session := uuid.New()
				stream := eventcodec.StreamName(account, session)
				notes := "customer VPN drops every 20 minutes; tried MTU 1400"
				if withKeys {
					_, stored, err := keys.NewDataKey(stream)
					if err != nil {
						return err
					}
					if _, err := pool.Exec(ctx, `INSERT INTO data_keys (stream_id, key_id, wrapped, master_key_id) VALUES ($1, $2, $3, $4)`,
						stream, stored.ID, stored.Wrapped, stored.MasterKeyID); err != nil {
						return err
					}
					if notes, err = s.SealNotes(stream, stored, notes); err != nil {
						return err
					}
				}
				h := domain.Handoff{ID: uuid.New(), SessionID: session, AccountID: account, TeamID: team, Intent: domain.IntentEscalate,
					Notes: notes, Priority: domain.PriorityHigh, Status: domain.StatusOpen, CreatedBy: uuid.New(),
					CreatedAt: time.Now().UTC().Truncate(time.Microsecond).Add(time.Duration(i) * time.Microsecond)}
				if err := tx.PutHandoff(ctx, h, int64(i+1)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	fill(sealed, sealedTeam, true)
	fill(plain, plainTeam, false)
	if _, err := pool.Exec(ctx, `ANALYZE`); err != nil {
		b.Fatal(err)
	}
	page := projections.Page{Limit: benchQueueRows}
	check := func(hs []domain.Handoff) error {
		if len(hs) != benchQueueRows || hs[0].Notes == "" || hs[0].NotesErased {
			b.Errorf("a page of %d handoffs, the first %+v; want %d with their notes", len(hs), hs[0], benchQueueRows)
		}
		return nil
	}
	ratiobench.Run(b, benchReaders, func(ctx context.Context, _ int) error {
		// pgx.CollectRows reports the query's error.
		rows, _ := pool.Query(ctx, plainQueueSQL, pgUUID(account), pgUUID(plainTeam), page.Limit)
		hs, err := pgx.CollectRows(rows, scanHandoff)
		if err != nil {
			return err
		}
		return check(hs)
	}, func(ctx context.Context, _ int) error {
		hs, err := sealed.Queue(ctx, account, sealedTeam, page)
		if err != nil {
			return err
		}
		return check(hs)
	}, nil)
}
