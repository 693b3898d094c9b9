package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/shred"
)

// session makes the events of one session that the domain would accept:
// an escalation by the holder, a claim by the other user, an escalation by
// the new holder, and so on, so that the projector applies every one.
type session struct {
	account, team, id uuid.UUID
	stream            string
	users             [2]uuid.UUID
	version           int64
	handoff           uuid.UUID
	// key is the session's data key, once its first append made it.
	key   shred.DataKey
	keyed bool
}

func newSession(account, team uuid.UUID, users [2]uuid.UUID) *session {
	id := uuid.New()
	return &session{account: account, team: team, id: id, stream: eventcodec.StreamName(account, id), users: users}
}

// next returns the session's next event, ready to append.
func (s *session) next() (eventstore.NewEvent, error) {
	at := time.Now().UTC().Truncate(time.Microsecond)
	holder := s.users[(s.version/2)%2]
	var e domain.Event
	if s.version%2 == 0 {
		s.handoff = uuid.New()
		e = domain.HandoffEscalated{HandoffCreated: domain.HandoffCreated{
			HandoffID: s.handoff, SessionID: s.id, AccountID: s.account, TeamID: s.team, CreatedBy: holder,
			Notes: "customer VPN drops every 20 minutes; tried MTU 1400", Priority: domain.PriorityHigh, At: at,
		}}
	} else {
		e = domain.HandoffClaimed{HandoffID: s.handoff, SessionID: s.id, ClaimedBy: s.users[(s.version/2+1)%2], Role: domain.RoleEngineer, At: at}
	}
	s.version++
	typ, data, err := eventcodec.Encode(e)
	if err != nil {
		return eventstore.NewEvent{}, err
	}
	return eventstore.NewEvent{Type: typ, Data: data, Metadata: eventstore.Metadata{
		ActorID: holder.String(), AccountID: s.account.String(), TeamID: s.team.String(), Role: string(domain.RoleEngineer),
	}}, nil
}

// append appends the session's events made since its last append, sealed
// under its data key as the command handler seals them: its first append
// creates the key in the same statement, as a session's first handoff
// does.
func (s *session) append(ctx context.Context, t *Target, events []eventstore.NewEvent) error {
	var change eventstore.KeyChange
	key := s.key
	if !s.keyed {
		var err error
		if key, change.Create, err = t.Keys.NewDataKey(s.stream); err != nil {
			return err
		}
	}
	sealed, err := shred.Seal(key, events)
	if err != nil {
		return err
	}
	expected := eventstore.Exact(s.version - int64(len(events)))
	if _, err := t.Log.AppendKeyed(ctx, s.stream, expected, change, sealed, false); err != nil {
		return err
	}
	s.key, s.keyed = key, true
	return nil
}

// nextN returns the session's next n events.
func (s *session) nextN(n int) ([]eventstore.NewEvent, error) {
	events := make([]eventstore.NewEvent, n)
	for i := range events {
		var err error
		if events[i], err = s.next(); err != nil {
			return nil, err
		}
	}
	return events, nil
}

// tenant is an account and a team with two users, whose sessions the
// benchmark writes.
type tenant struct {
	account, team uuid.UUID
	users         [2]uuid.UUID
}

func newTenant() tenant {
	return tenant{account: uuid.New(), team: uuid.New(), users: [2]uuid.UUID{uuid.New(), uuid.New()}}
}

func (t tenant) session() *session { return newSession(t.account, t.team, t.users) }

// Sizes of the generated log.
const (
	// genStreamEvents is how many events each generated session gets, in
	// appends of genAppendEvents: a session with a long history, as a
	// busy one has (50 handoffs, the last one open), written in one
	// statement so that a million events take a minute or two rather than
	// many.
	genStreamEvents = 99
	genAppendEvents = 99
	// genWriters append the generated sessions at once.
	genWriters = 8
)

// fill appends generated sessions of tn until the log holds at least
// size events (counting from its head), from genWriters at a time, and
// reports progress to p. Every session ends on an open escalation, so that
// the team's queue grows with the log: at 10,000 events it is past the
// first page of 100.
func fill(ctx context.Context, t *Target, tn tenant, size int64, p *progress) error {
	head, err := t.Log.Head(ctx)
	if err != nil {
		return fmt.Errorf("read the head of the log: %w", err)
	}
	if head >= size {
		return nil
	}
	var written atomic.Int64
	written.Store(head)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	p.start(fmt.Sprintf("generating a log of %d events", size))
	for range genWriters {
		wg.Go(func() {
			for written.Load() < size {
				s := tn.session()
				for s.version < genStreamEvents {
					events, err := s.nextN(min(genAppendEvents, genStreamEvents-int(s.version)))
					if err == nil {
						err = s.append(ctx, t, events)
					}
					if err != nil {
						mu.Lock()
						errs = append(errs, fmt.Errorf("generate the log: %w", err))
						mu.Unlock()
						return
					}
					p.update(written.Add(int64(len(events))), size)
				}
			}
		})
	}
	wg.Wait()
	p.done()
	if len(errs) > 0 {
		return errs[0]
	}
	return nil
}
