package relay

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
)

// Erasures
//
// A SessionDataErased event says a session's personal data was erased
// (docs/data-protection.md). The relay publishes it like any event, and
// once JetStream has stored it, purges every other message of the session
// (handoff.<account>.<session>.>) from the stream: the messages published
// before the erasure hold the notes and client addresses in plaintext.
// The erasure's own message stays, the session's last: subscribers erase
// their own copies when they see it (docs/nats.md), and it is the
// message the next event expects before it (Nats-Expected-Last-Msg-Id),
// so the purge never breaks the order check. The checkpoint passes the
// erasure only after the purge; a relay that stops in between finds the
// erasure as the stream's last event of the log when it starts again and
// purges before it moves the checkpoint up to it. Messages the purge
// removed are deleted, not foreign: the walk back from the end of the
// stream passes over them as it passes over messages gone with their age.

// isErasure reports whether e is a SessionDataErased.
func isErasure(e eventstore.Event) bool { return e.Type == domain.TypeSessionDataErased }

// erasureEnd returns how many of events to publish before purging: up to
// and including the first erasure, or all of them.
func erasureEnd(events []eventstore.Event) int {
	for i, e := range events {
		if isErasure(e) {
			return i + 1
		}
	}
	return len(events)
}

// purgeErased purges the messages of the session of the erasure e from
// the stream, but for the last one, e's own.
func (r *Relay) purgeErased(ctx context.Context, stream jetstream.Stream, e eventstore.Event) error {
	account, session, err := eventcodec.ParseStreamName(e.Stream)
	if err != nil {
		return fmt.Errorf("erasure %s at %d: %w", e.ID, e.Position, err)
	}
	if r.beforePurge != nil {
		r.beforePurge()
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.AckTimeout)
	defer cancel()
	subject := eventcodec.SubjectPrefix + "." + account.String() + "." + session.String() + ".>"
	if err := stream.Purge(ctx, jetstream.WithPurgeSubject(subject), jetstream.WithPurgeKeep(1)); err != nil {
		return fmt.Errorf("purge %s after erasure %s at %d: %w", subject, e.ID, e.Position, err)
	}
	r.logger.InfoContext(ctx, "purged an erased session's messages from the stream", "subject", subject, "position", e.Position)
	return nil
}
