// Package relay publishes the ledger's event log to a NATS JetStream stream:
// it is the transactional outbox relay. Commands never talk to NATS; they
// commit events to the log, and the relay tails the gap-safe global log from
// a durable checkpoint, publishes each event, and moves the checkpoint only
// after JetStream has acknowledged the events before it.
//
// # Subjects
//
// Each event is published on
//
//	handoff.<account>.<session>.<EventType>
//
// where account and session are the UUIDs of the session stream
// ("session:<account>:<session>") and EventType is the event's type name
// (HandoffParked, HandoffEscalated, HandoffClaimed, HandoffWithdrawn,
// SessionDataErased: see erase.go for what the relay does on an erasure).
// Wildcards select a slice: handoff.<account>.> is one account,
// handoff.*.<session>.* one session, handoff.*.*.HandoffClaimed one type.
// The stream (default name LEDGER) captures handoff.>.
//
// # Messages
//
// The body is the JSON envelope of eventstore.Event, the same the audit API
// returns: id, type, stream, version, position, recorded_at, data,
// metadata, written by eventstore.Event.AppendJSON. The headers repeat
// what a subscriber filters or orders on:
//
//	Nats-Msg-Id            the event id (a ULID), used for de-duplication
//	Ledger-Event-Type      the event type
//	Ledger-Stream          the event stream, session:<account>:<session>
//	Ledger-Stream-Version  the event's version within its stream
//	Ledger-Position        the event's position in the global log
//	Ledger-Account         the account UUID
//	Ledger-Session         the session UUID
//
// # Delivery guarantee
//
// The relay publishes in rounds: each sets the stream up and publishes
// from the checkpoint until something fails; the next starts after a
// backoff.
//
// Every committed event is published, in global log order, and no event
// that was rolled back is ever published (the log is read gap-safely). Each
// event is stored in the JetStream stream once:
//
//   - The relay sends a batch without waiting, reads the next batch from
//     the log while JetStream stores it, and moves its checkpoint (stored
//     in the "checkpoints" table under Name) only over events JetStream
//     has acknowledged, with every event before them: every 100 ms while
//     events keep coming, at once when it has published all it found or
//     when a publish fails. A refused, timed-out or unsent event ends the
//     round, and the next publishes again from the first event not
//     acknowledged. If it stops before a move, the next leader starts by finding the
//     stream's last event of this log: when that event (its
//     Ledger-Position and Nats-Msg-Id) is in the log beyond the
//     checkpoint, the checkpoint moves up to it, so the batch is not
//     published again, however long the relay was stopped. A stream whose
//     last event is behind the checkpoint, or that has never held a
//     message while the checkpoint is past 0, lacks events published
//     before; the relay logs an error saying so at each start and
//     publishes on from the checkpoint.
//   - Each message also carries Nats-Expected-Last-Msg-Id, the id of the
//     event before it (the first of a round, Nats-Expected-Last-Sequence,
//     the stream's last sequence), so JetStream refuses a message that would
//     land out of order (for example one whose predecessor was lost when the
//     connection dropped); the relay then resumes from the first event not
//     acknowledged.
//   - Each message's Nats-Msg-Id is its event id, so JetStream drops a
//     repeat that reaches it within the stream's duplicate window
//     (Config.DuplicateWindow, default 2h): an event sent again after an
//     acknowledgement was lost in transit, or by a relay that lost its
//     lease while another took over.
//
// # Foreign messages
//
// Only the relay should publish on handoff.> (see docs/nats.md for the
// permissions that ensure it). A message another client publishes into the
// stream anyway is foreign: the relay's next publish is refused, since the
// stream's last message is no longer the event it expects, and the round
// that follows walks back from the end of the stream over every message
// that is not an event of this log (its Ledger-Position, Nats-Msg-Id and
// subject must match the log's event at that position), logs each at
// ERROR with its subject and sequence, counts it once in Status.Foreign,
// and publishes on after it. A forged Ledger-Position cannot make the
// relay skip events, nor a forged Nats-Msg-Id mark one as published: the
// id must be that of the log's event at the claimed position, a ULID the
// store made at random and that nobody outside the ledger sees before the
// relay publishes it. The walk examines at most 1,000 messages; a stream
// that ends with more that are not this log's (another ledger's stream)
// is logged as such and published into after them.
//
// Only one relay publishes at a time: Run holds the leader lease Name
// while it publishes, and another process's relay takes over within
// seconds when the holder dies or freezes. Each checkpoint move is fenced
// by the lease (leader.Fence), so a relay that lost its lease, for example
// one frozen while its lease expired, cannot move the checkpoint once its
// successor holds it: the move fails with leader.ErrDeposed and the relay
// stops. What such a relay may still publish before that move fails is
// harmless: an event the successor has already published is dropped by
// JetStream as a duplicate (its Nats-Msg-Id), and one it has not is
// refused unless it is the stream's next event in log order
// (Nats-Expected-Last-Msg-Id), in which case the successor's own publish of
// it is the duplicate. While NATS is unreachable, appends carry on (the
// relay never touches the write path), the relay retries with backoff, and
// Status reports it degraded, naming the outage (the connection's status
// and last error), with the backlog; the relay wakes from its backoff as
// soon as the connection is back, and the backlog drains in order.
package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/internal/poll"
	"github.com/resolutionflow/ledgerd/leader"
)

// Name is the name of the relay's checkpoint and of its leader lease.
const Name = "relay.nats"

// Log is the global event log the relay tails; pgstore.Store and
// sqlitestore.Store satisfy it.
type Log interface {
	// ReadAll returns up to limit events with a position greater than
	// after, in position order, never skipping one that commits late.
	ReadAll(ctx context.Context, after int64, limit int) ([]eventstore.Event, error)
	// Head returns the position of the last committed event, for the
	// relay's backlog.
	Head(ctx context.Context) (int64, error)
}

// Checkpoints stores how far the relay has published; the read-model
// stores (pgviews.Store, sqliteviews.Store) satisfy it, keeping the
// relay's checkpoint beside the projectors'.
type Checkpoints interface {
	// Checkpoint returns the named position; 0 before the first Move.
	Checkpoint(ctx context.Context, name string) (int64, error)
	// Move moves the named position from `from` to `to`, and fails with
	// an error matching projections.ErrStaleCheckpoint when the position
	// is not at `from`, or leader.ErrDeposed when fence is no longer
	// valid.
	Move(ctx context.Context, fence leader.Fence, name string, from, to int64) error
}

// Deps are what a relay works with.
type Deps struct {
	// NATS is the connection the relay publishes through (see Connect).
	NATS *nats.Conn
	// Log is the event log it publishes.
	Log Log
	// Checkpoints keeps how far it has published.
	Checkpoints Checkpoints
	// Locker hands out its leadership.
	Locker leader.Locker
	// Wake, when not nil, returns a channel closed at the next append
	// made in this process (pgstore.Store.Appended); appends made
	// elsewhere are found by polling every Config.PollInterval.
	Wake func() <-chan struct{}
	// Logger may be nil for slog.Default().
	Logger *slog.Logger
}

// Relay publishes the event log to JetStream. Run it in every process; the
// leader lease makes one publish at a time.
type Relay struct {
	nc          *nats.Conn
	js          jetstream.JetStream
	log         Log
	checkpoints Checkpoints
	locker      leader.Locker
	wake        func() <-chan struct{}
	logger      *slog.Logger
	cfg         Config

	// reconnected is notified each time the connection to NATS is made
	// again, to cut a backoff short.
	reconnected poll.Signal

	mu    sync.Mutex
	stats stats
	// lostWith is the error that last cut the connection to NATS, which
	// the client forgets (nats.Conn.LastError) while it reconnects.
	lostWith error

	// beforeCheckpoint, when set (by tests), runs after events have been
	// acknowledged and before the checkpoint moves over them, to the
	// position it is given.
	beforeCheckpoint func(to int64)
	// beforePurge, when set (by tests), runs after an erasure has been
	// published, before the purge of its session's messages.
	beforePurge func()
}

// New returns a relay publishing deps.Log through deps.NATS, keeping its
// position in deps.Checkpoints and its leadership in deps.Locker. Zero
// fields of cfg take their defaults.
func New(deps Deps, cfg Config) (*Relay, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	nc, logger, wake := deps.NATS, deps.Logger, deps.Wake
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(cfg.AckTimeout),
		jetstream.WithPublishAsyncMaxPending(window*cfg.BatchSize))
	if err != nil {
		return nil, fmt.Errorf("relay: jetstream: %w", err)
	}
	if logger == nil {
		logger = slog.Default()
	}
	if wake == nil {
		wake = func() <-chan struct{} { return nil }
	}
	r := &Relay{
		nc: nc, js: js, log: deps.Log, checkpoints: deps.Checkpoints, locker: deps.Locker, wake: wake,
		logger: logger.With("component", "relay", "stream", cfg.Stream), cfg: cfg,
	}
	onDisconnect := nc.Opts.DisconnectedErrCB // Connect's, which logs
	nc.SetDisconnectErrHandler(func(c *nats.Conn, err error) {
		r.mu.Lock()
		r.lostWith = err
		r.mu.Unlock()
		if onDisconnect != nil {
			onDisconnect(c, err)
		}
	})
	return r, nil
}

// Run publishes the log until ctx ends, then returns nil. It waits for the
// leader lease, publishes while it holds it, and waits again when it loses
// it. Failures are logged, reported by Status and retried with backoff.
func (r *Relay) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Go(func() { r.report(ctx) })
	wg.Go(func() { r.watchReconnects(ctx) })
	for {
		lease, err := r.locker.Acquire(ctx, Name)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("relay: %w", err)
		}
		r.lead(lease.Context(), lease.Fence())
		lease.Release()
		r.setLeading(false)
		if ctx.Err() != nil {
			return nil
		}
		r.logger.WarnContext(ctx, "relay lost leadership")
	}
}

// watchReconnects notifies r.reconnected each time the connection to NATS
// is made again, until ctx ends.
func (r *Relay) watchReconnects(ctx context.Context) {
	connected := r.nc.StatusChanged(nats.CONNECTED)
	defer r.nc.RemoveStatusListener(connected)
	for {
		select {
		case <-ctx.Done():
			return
		case <-connected:
			r.reconnected.Notify()
		}
	}
}

// lead publishes while ctx, the lease's context, lasts, starting a new
// round after each failure, and returns when the lease is lost: when ctx
// ends or a checkpoint move finds the fence no longer valid. A failed
// round is retried after a backoff that doubles up to MaxBackoff, or at
// once when the connection to NATS is made again meanwhile (even while the
// round was failing): an outage then ends for the relay within the
// reconnect, not the backoff.
func (r *Relay) lead(ctx context.Context, fence leader.Fence) {
	r.setLeading(true)
	r.logger.InfoContext(ctx, "relay leading")
	backoff := r.cfg.MinBackoff
	for {
		reconnected := r.reconnected.Wait()
		progressed, err := r.round(ctx, fence)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, leader.ErrDeposed) {
			r.logger.WarnContext(ctx, "relay deposed: its lease expired or passed to another process", "err", err)
			return
		}
		if progressed {
			backoff = r.cfg.MinBackoff
		}
		r.fail(ctx, err, backoff)
		if !poll.Sleep(ctx, backoff, reconnected) {
			return
		}
		select {
		case <-reconnected:
			r.logger.InfoContext(ctx, "relay retrying at once: the connection to NATS is back", "server", r.nc.ConnectedUrlRedacted())
			backoff = r.cfg.MinBackoff
		default:
			backoff = min(2*backoff, r.cfg.MaxBackoff)
		}
	}
}

// round sets the stream up, then publishes the log from the checkpoint
// until something fails. It reports whether it published anything.
func (r *Relay) round(ctx context.Context, fence leader.Fence) (progressed bool, err error) {
	pos, err := r.checkpoints.Checkpoint(ctx, Name)
	if err != nil {
		return false, fmt.Errorf("read checkpoint: %w", err)
	}
	r.setCheckpoint(pos) // for the backlog, even while NATS is down
	if err := r.disconnected(); err != nil {
		return false, err
	}
	stream, err := r.ensureStream(ctx)
	if err != nil {
		return false, err
	}
	r.update(func(s *Status) { s.StreamProblem = "" })
	end, err := r.end(ctx, stream)
	if err != nil {
		return false, err
	}
	if pos, err = r.reconcile(ctx, fence, stream, pos, end.tip, end.tipPos, end.erasure); err != nil {
		return false, err
	}
	return r.pump(ctx, fence, stream, pos, expected{seq: end.seq})
}

// window is how many batches the relay has sent and not seen
// acknowledged. It reads the next batch while JetStream stores the one in
// flight, and sends it once that one is acknowledged. With two or four
// batches in flight the relay drained no faster on this project's
// machines, and a three-node cluster that lost the stream's leader under
// that load often took more than 30 seconds to elect another (the
// cluster test), where with one it takes a few.
const window = 1

// checkpointEvery is how often the checkpoint moves while events keep
// coming; it moves at once when the relay has published every event it
// found, and when a publish fails.
const checkpointEvery = 100 * time.Millisecond

// pump publishes the log from position pos, the first event expecting
// expect to be the stream's last message, until something fails. It
// reports whether it moved the checkpoint.
//
// It sends each batch without waiting for JetStream, each event expecting
// the one before it to be the stream's last message (so JetStream refuses
// any that would land out of order), reads the next batch from the log
// while JetStream stores it, and moves the checkpoint only over events
// JetStream has acknowledged, every one before them acknowledged too:
// every checkpointEvery while events keep coming, so that the database's
// commit does not hold up publishing, and as soon as it has published
// every event it found. When an event is refused, times out or cannot be
// sent, the checkpoint moves up to the event before it and pump returns
// the error: the next round publishes again from the first event not
// acknowledged (JetStream drops the repeats of those that were stored
// after all, by their Nats-Msg-Id; see reconcile for those stored before
// the relay stopped).
//
// An erasure ends the batch it is in (erase.go): once JetStream has
// acknowledged it, the session's earlier messages are purged, before
// anything after it is sent and before the checkpoint passes it; when the
// purge fails, the checkpoint stays before the erasure, so that the next
// round purges again.
func (r *Relay) pump(ctx context.Context, fence leader.Fence, stream jetstream.Stream, pos int64, expect expected) (progressed bool, err error) {
	var (
		inFlight []*batch
		ahead    []eventstore.Event // read and not sent yet
	)
	read, acked := pos, pos // the last event read; the last acknowledged, with every one before it
	var moved time.Time     // when the checkpoint last moved
	for {
		wake := r.wake()
		var caughtUp, idle bool
		if ahead == nil {
			events, err := r.log.ReadAll(ctx, read, r.cfg.BatchSize)
			if err != nil {
				return progressed, fmt.Errorf("read log after %d: %w", read, err)
			}
			r.seen(ctx, read, events)
			caughtUp, idle = len(events) < r.cfg.BatchSize, len(events) == 0
			if len(events) > 0 {
				ahead, read = events, events[len(events)-1].Position
			}
		}
		if ahead != nil && len(inFlight) < window {
			part := ahead[:erasureEnd(ahead)]
			b := r.send(part, expect)
			inFlight = append(inFlight, b)
			expect, ahead = expected{id: part[len(part)-1].ID}, ahead[len(part):]
			if len(ahead) == 0 {
				ahead = nil
			}
			if b.sendErr == nil && !caughtUp && ahead == nil {
				continue // read the next batch while JetStream stores this one
			}
		}
		var newEvents <-chan struct{} // cuts the wait for acknowledgements short
		if caughtUp {
			newEvents = wake
		}
		err := r.await(ctx, inFlight, newEvents)
		done, last, ok := acknowledged(inFlight)
		for _, b := range inFlight[:done] {
			erasure := b.events[len(b.events)-1]
			if !isErasure(erasure) {
				continue
			}
			if perr := r.purgeErased(ctx, stream, erasure); perr != nil {
				// The checkpoint stays before the erasure.
				err, ok = perr, len(b.events) > 1
				if ok {
					last = b.events[len(b.events)-2]
				}
				done = 0
				break
			}
		}
		if ok {
			acked = max(acked, last.Position)
		}
		inFlight = inFlight[done:]
		settled := idle && len(inFlight) == 0
		if acked > pos && (err != nil || settled || time.Since(moved) >= checkpointEvery) {
			if cerr := r.checkpoint(ctx, fence, pos, acked); cerr != nil {
				return progressed, cerr
			}
			pos, moved, progressed = acked, time.Now(), true
		}
		if err != nil {
			return progressed, err
		}
		if ok { // published: whatever failed before works again
			r.recovered(ctx)
		}
		if settled {
			r.recovered(ctx)
			if !poll.Sleep(ctx, r.cfg.PollInterval, wake) {
				return progressed, ctx.Err()
			}
		}
	}
}

// ensureStream returns the JetStream stream, creating it when it does not
// exist. An existing stream is left as it is: updating it from this
// process's flags could delete events (a shorter max age) or undo what an
// operator set; a difference from the flags is logged.
func (r *Relay) ensureStream(ctx context.Context) (jetstream.Stream, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.AckTimeout)
	defer cancel()
	want := r.cfg.streamConfig()
	stream, err := r.js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		stream, err = r.js.CreateStream(ctx, want)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) { // another process was first
			stream, err = r.js.Stream(ctx, want.Name)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("open or create stream %s: %w", want.Name, err)
	}
	if diff := configDiff(stream.CachedInfo().Config, want); diff != nil {
		r.logger.WarnContext(ctx, "the stream's configuration differs from this process's flags; it is left as it is (change it with the nats tool)", diff...)
	}
	return stream, nil
}

// configDiff returns, as slog attributes, the settings of the flags that an
// existing stream does not have; nil when it has them all.
func configDiff(have, want jetstream.StreamConfig) []any {
	var diff []any
	add := func(name string, have, want any) {
		if have != want {
			diff = append(diff, slog.Group(name, "stream", have, "flags", want))
		}
	}
	add("storage", have.Storage.String(), want.Storage.String())
	add("replicas", have.Replicas, want.Replicas)
	add("duplicate_window", have.Duplicates, want.Duplicates)
	add("max_age", have.MaxAge, want.MaxAge)
	add("subjects", strings.Join(have.Subjects, ","), strings.Join(want.Subjects, ","))
	return diff
}

// maxWalk bounds how many messages at the end of the stream a round
// examines, as it starts, to find the last event of this log.
const maxWalk = 1000

// streamEnd is the end of the stream as a round starts.
type streamEnd struct {
	// seq is the stream's last sequence, which the round's first publish
	// expects; 0 for a stream that has never held a message.
	seq uint64
	// tip is the Nats-Msg-Id (the event id) of the last message in the
	// stream that is an event of this log, and tipPos its log position;
	// "" and 0 when there is none among the last maxWalk messages.
	tip    string
	tipPos int64
	// erasure is the tip's event when it is a SessionDataErased.
	erasure *eventstore.Event
}

// end finds the stream's last message that is an event of this log,
// walking back over at most maxWalk messages that are not (see ours).
// Those it passes are foreign: published by another client, not by a
// relay of this log. Each is logged and counted once, and skipped: the
// round publishes after them.
func (r *Relay) end(ctx context.Context, stream jetstream.Stream) (streamEnd, error) {
	state := stream.CachedInfo().State
	end, foreign, err := r.walk(ctx, stream, state)
	if err != nil {
		return end, err // the next round reads the foreign messages again
	}
	r.countForeign(ctx, state.LastSeq, foreign)
	return end, nil
}

// foreignMsg describes a foreign message for the log.
type foreignMsg struct {
	seq                   uint64
	subject, id, position string
}

// walk walks back from the end of the stream, as state describes it, to
// the last event of this log, and returns the foreign messages it passed.
func (r *Relay) walk(ctx context.Context, stream jetstream.Stream, state jetstream.StreamState) (streamEnd, []foreignMsg, error) {
	end := streamEnd{seq: state.LastSeq}
	var foreign []foreignMsg
	for seq := state.LastSeq; seq > 0 && seq >= state.FirstSeq; seq-- {
		if state.LastSeq-seq == maxWalk {
			r.streamProblem(ctx, "the stream's last messages are not events of this log: it holds another ledger's events "+
				"(such as a data directory's left from the embedded mode), or other clients published into it; publishing goes on after them. "+
				"To keep this ledger's events apart, give it a stream of its own (--nats-stream) or, for the embedded NATS server, a fresh data directory",
				"examined", maxWalk, "last_seq", state.LastSeq)
			return end, foreign, nil
		}
		msg, err := r.getMsg(ctx, stream, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) { // deleted, or gone with its age
			continue
		}
		if err != nil {
			return end, nil, err
		}
		event, ok, err := r.ours(ctx, msg)
		if err != nil {
			return end, nil, err
		}
		if ok {
			end.tip, end.tipPos = event.ID, event.Position
			if isErasure(event) {
				end.erasure = &event
			}
			return end, foreign, nil
		}
		foreign = append(foreign, foreignMsg{seq: seq, subject: msg.Subject,
			id: msg.Header.Get(jetstream.MsgIDHeader), position: msg.Header.Get(eventcodec.HeaderPosition)})
	}
	return end, foreign, nil
}

// getMsg reads the message at seq of the stream.
func (r *Relay) getMsg(ctx context.Context, stream jetstream.Stream, seq uint64) (*jetstream.RawStreamMsg, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.AckTimeout)
	defer cancel()
	msg, err := stream.GetMsg(ctx, seq)
	if err != nil {
		return nil, fmt.Errorf("read message %d of stream %s: %w", seq, r.cfg.Stream, err)
	}
	return msg, nil
}

// ours reports whether msg is the message a relay of this log published
// for one of its events: its Ledger-Position names a position of the log
// whose event has msg's Nats-Msg-Id (a ULID the store made at random, which
// no other client can know before the event is published) and msg's
// subject. A message that claims a position and an id the log does not
// have together is foreign, so it can neither make the relay skip events
// nor pass for an event not yet published.
func (r *Relay) ours(ctx context.Context, msg *jetstream.RawStreamMsg) (eventstore.Event, bool, error) {
	id := msg.Header.Get(jetstream.MsgIDHeader)
	pos, err := strconv.ParseInt(msg.Header.Get(eventcodec.HeaderPosition), 10, 64)
	if id == "" || err != nil || pos < 1 {
		return eventstore.Event{}, false, nil
	}
	events, err := r.log.ReadAll(ctx, pos-1, 1)
	if err != nil {
		return eventstore.Event{}, false, fmt.Errorf("read log at %d: %w", pos, err)
	}
	if len(events) == 0 || events[0].Position != pos || events[0].ID != id {
		return eventstore.Event{}, false, nil
	}
	want, err := message(events[0])
	return events[0], err == nil && want.Subject == msg.Subject, nil
}

// countForeign logs and counts the foreign messages a round found at the
// end of the stream (which ended at lastSeq then), each only once across
// rounds.
func (r *Relay) countForeign(ctx context.Context, lastSeq uint64, foreign []foreignMsg) {
	r.mu.Lock()
	seen := r.stats.foreignSeq
	if lastSeq < seen { // the stream was made again
		seen = 0
	}
	var counted []foreignMsg
	for _, m := range foreign {
		if m.seq > seen {
			counted = append(counted, m)
		}
	}
	r.stats.Foreign += uint64(len(counted))
	r.stats.foreignSeq = max(seen, lastSeq)
	total := r.stats.Foreign
	r.mu.Unlock()
	for _, m := range slices.Backward(counted) {
		r.logger.ErrorContext(ctx, "the stream holds a message that is not an event of this log: another client published it; it is skipped",
			"subject", m.subject, "seq", m.seq, "msg_id", m.id, "claimed_position", m.position, "foreign_total", total)
	}
}

// reconcile compares the last event of this log in the stream (tip, the
// id of the event at log position tipPos; "" when there is none) with the
// checkpoint pos, and returns the position to publish from:
//
//   - When it is beyond the checkpoint, JetStream stored it before the
//     checkpoint could record it (the relay stopped in between): the
//     checkpoint moves up to it, so that it is not published again, however
//     long ago that was.
//   - When it is behind the checkpoint, or the stream has never held a
//     message while the checkpoint is past 0, the stream lacks events
//     published before (it was deleted and made again, restored from an
//     older copy, kept in memory across a restart, or is on another
//     server). That is logged as an error, and publishing goes on from the
//     checkpoint.
//
// tipErased is the tip's event when it is a SessionDataErased, nil
// otherwise.
func (r *Relay) reconcile(ctx context.Context, fence leader.Fence, stream jetstream.Stream, pos int64, tip string, tipPos int64, tipErased *eventstore.Event) (int64, error) {
	switch {
	case tipPos > pos:
		if tipErased != nil {
			// The relay stopped between storing an erasure and purging
			// the session's messages before it: purge them now.
			if err := r.purgeErased(ctx, stream, *tipErased); err != nil {
				return pos, err
			}
		}
		if err := r.checkpoint(ctx, fence, pos, tipPos); err != nil {
			return pos, err
		}
		r.logger.InfoContext(ctx, "checkpoint moved to the stream's last event, published before the relay stopped", "from", pos, "to", tipPos)
		return tipPos, nil
	case tip != "" && tipPos < pos, tip == "" && pos > 0 && stream.CachedInfo().State.LastSeq == 0:
		r.streamProblem(ctx, "the stream lacks events the relay has published: it was deleted and made again, restored from an older copy, "+
			"kept in memory across a restart, or is on another server; publishing goes on from the checkpoint. "+
			"If another process publishes to another NATS server, give every process on the database the same --nats-url; "+
			"subscribers can read the missing events from GET /events",
			"stream_last_position", tipPos, "checkpoint", pos)
	}
	return pos, nil
}

// streamProblem logs at ERROR what is wrong with the stream and what to do
// about it, and keeps it in Status.StreamProblem for /readyz.
func (r *Relay) streamProblem(ctx context.Context, msg string, args ...any) {
	r.logger.ErrorContext(ctx, msg, args...)
	r.update(func(s *Status) { s.StreamProblem = msg })
}

// checkpoint moves the relay's checkpoint from `from` to `to`, fenced by the
// relay's lease.
func (r *Relay) checkpoint(ctx context.Context, fence leader.Fence, from, to int64) error {
	if r.beforeCheckpoint != nil {
		r.beforeCheckpoint(to)
	}
	if err := r.checkpoints.Move(ctx, fence, Name, from, to); err != nil {
		return fmt.Errorf("move checkpoint from %d to %d: %w", from, to, err)
	}
	r.setCheckpoint(to)
	return nil
}

// fail records a failed round and logs it, with its cause.
func (r *Relay) fail(ctx context.Context, err error, retryIn time.Duration) {
	r.measureHead(ctx)
	st := r.markDegraded(r.cause(err))
	r.logger.WarnContext(ctx, "relay degraded, retrying", "err", st.LastError, "retry_in", retryIn,
		"checkpoint", st.Checkpoint, "backlog", st.Backlog)
}

// errDisconnected is the cause of a failure while the connection to NATS
// is down.
var errDisconnected = errors.New("NATS disconnected")

// disconnected returns an error naming the outage, with the connection's
// status and last error, while the connection to NATS is down; nil while
// it is up.
func (r *Relay) disconnected() error {
	if r.nc.IsConnected() {
		return nil
	}
	last := r.nc.LastError()
	if last == nil {
		r.mu.Lock()
		last = r.lostWith
		r.mu.Unlock()
	}
	if last == nil {
		return fmt.Errorf("%w: connection %s", errDisconnected, r.nc.Status())
	}
	return fmt.Errorf("%w: connection %s, last error: %w", errDisconnected, r.nc.Status(), last)
}

// cause returns why a round failed, as an operator should read it. While
// the connection to NATS is down, the client's own errors hide the outage:
// it refuses a publish with "outbound buffer limit exceeded" (Connect
// makes it fail fast rather than queue), and a request times out. The
// cause is then the outage itself.
func (r *Relay) cause(err error) error {
	down := r.disconnected()
	switch {
	case errors.Is(err, errDisconnected):
		return err
	case errors.Is(err, nats.ErrReconnectBufExceeded):
		if down == nil { // back already
			return fmt.Errorf("%w while publishing: %w", errDisconnected, err)
		}
		return down
	case down != nil:
		return fmt.Errorf("%w (the attempt failed with: %w)", down, err)
	}
	return err
}

// measureHead updates the log head.
func (r *Relay) measureHead(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.AckTimeout)
	defer cancel()
	head, err := r.log.Head(ctx)
	if err != nil {
		r.logger.DebugContext(ctx, "relay cannot read log head", "err", err)
		return
	}
	r.setHead(head)
}

// seen notes the events read after pos: the head is at least the last of
// them. A batch that is not full does not end at the head: ReadAll stops
// before a position whose append is still open, however many events
// follow it. So the head is measured after a full batch, and before every
// report (recovered, fail, report).
func (r *Relay) seen(ctx context.Context, pos int64, events []eventstore.Event) {
	if len(events) > 0 {
		pos = events[len(events)-1].Position
	}
	r.setHead(pos)
	if len(events) == r.cfg.BatchSize {
		r.measureHead(ctx)
	}
}
