package relay

import (
	"context"
	"time"
)

// Status is a snapshot of the relay, for readiness checks, logs and metrics.
type Status struct {
	// Leading is true while this process holds the relay's lock; the other
	// processes' relays stand by.
	Leading bool
	// Degraded is true while the leading relay cannot publish (NATS or the
	// database is unreachable, or JetStream refuses the stream); appends
	// go on and pile up in the backlog.
	Degraded bool
	// DegradedSince is when the current degradation began.
	DegradedSince time.Time
	// LastError is the error of the last failed attempt, nil if none.
	LastError error
	// StreamProblem, when not empty, is what the leading relay found wrong
	// with the stream as its last round started, and what to do about
	// it: the stream lacks events the relay published, or ends with
	// another ledger's events. Publishing goes on regardless.
	StreamProblem string

	// Checkpoint is the position of the last event published and recorded.
	Checkpoint int64
	// Head is the highest position of the log known to be committed: the
	// last event the relay read, or the log's head as last measured (after
	// each full batch, and before each log line that reports the backlog),
	// whichever is higher.
	Head int64
	// Backlog is Head - Checkpoint: an upper bound of the events waiting to
	// be published (rolled-back appends leave gaps in positions).
	Backlog int64

	// Published counts the events JetStream acknowledged since start,
	// including Duplicates.
	Published uint64
	// Duplicates counts the acknowledgements JetStream marked duplicate:
	// events published again after a crash or failover.
	Duplicates uint64
	// Foreign counts the messages found in the stream that are not events
	// of this log (another client published them), each once since start:
	// the relay logs each, skips it and publishes on after it.
	Foreign uint64
	// LastLag is the time from the commit of the last event published to
	// its acknowledgement; MaxLag is the highest since start.
	LastLag, MaxLag time.Duration
}

// stats is the relay's mutable state behind Status.
type stats struct {
	Status
	// interval* accumulate between two reports.
	intervalPublished uint64
	intervalMaxLag    time.Duration
	// foreignSeq is the stream's last sequence when foreign messages were
	// last counted; those up to it are not counted again.
	foreignSeq uint64
}

// Status returns a snapshot of the relay. It does no I/O.
func (r *Relay) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats.Status
}

func (r *Relay) update(f func(s *Status)) Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(&r.stats.Status)
	r.stats.Backlog = max(0, r.stats.Head-r.stats.Checkpoint)
	return r.stats.Status
}

func (r *Relay) setLeading(leading bool) {
	r.update(func(s *Status) {
		s.Leading = leading
		if !leading {
			s.Degraded, s.DegradedSince, s.LastError = false, time.Time{}, nil
		}
	})
}

func (r *Relay) setCheckpoint(pos int64) {
	r.update(func(s *Status) { s.Checkpoint = pos })
}

// setHead raises the head to pos; the log's head never moves back.
func (r *Relay) setHead(pos int64) {
	r.update(func(s *Status) { s.Head = max(s.Head, pos) })
}

func (r *Relay) markDegraded(err error) Status {
	return r.update(func(s *Status) {
		if !s.Degraded {
			s.Degraded, s.DegradedSince = true, time.Now()
		}
		s.LastError = err
	})
}

// recovered clears a degradation after a successful step.
func (r *Relay) recovered(ctx context.Context) {
	prev := r.Status()
	if !prev.Degraded {
		return
	}
	r.measureHead(ctx)
	st := r.update(func(s *Status) { s.Degraded, s.DegradedSince = false, time.Time{} })
	r.logger.InfoContext(ctx, "relay recovered", "degraded_for", time.Since(prev.DegradedSince).Round(time.Millisecond),
		"checkpoint", st.Checkpoint, "backlog", st.Backlog)
}

// acked records the acknowledgement of an event.
func (r *Relay) acked(duplicate bool, lag time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := &r.stats
	s.Published++
	if duplicate {
		s.Duplicates++
	}
	s.LastLag, s.MaxLag = lag, max(s.MaxLag, lag)
	s.intervalPublished++
	s.intervalMaxLag = max(s.intervalMaxLag, lag)
}

// report logs the statistics of the leading relay every StatsInterval,
// unless it was idle, until ctx ends.
func (r *Relay) report(ctx context.Context) {
	t := time.NewTicker(r.cfg.StatsInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if r.Status().Leading {
			r.measureHead(ctx)
		}
		r.mu.Lock()
		st, published, maxLag := r.stats.Status, r.stats.intervalPublished, r.stats.intervalMaxLag
		r.stats.intervalPublished, r.stats.intervalMaxLag = 0, 0
		r.mu.Unlock()
		if !st.Leading || (published == 0 && st.Backlog == 0 && !st.Degraded) {
			continue // nothing to say
		}
		r.logger.InfoContext(ctx, "relay stats", "published", published, "max_lag", maxLag,
			"last_lag", st.LastLag, "checkpoint", st.Checkpoint, "backlog", st.Backlog, "degraded", st.Degraded, "foreign", st.Foreign)
	}
}
