package relay

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
)

// SubjectPrefix is the first token of every subject the relay publishes on.
const SubjectPrefix = "handoff"

// Headers of every published message, besides jetstream.MsgIDHeader (the
// event id).
const (
	HeaderEventType     = "Ledger-Event-Type"
	HeaderStream        = "Ledger-Stream"
	HeaderStreamVersion = "Ledger-Stream-Version"
	HeaderPosition      = "Ledger-Position"
	HeaderAccount       = "Ledger-Account"
	HeaderSession       = "Ledger-Session"
)

// Subject returns the subject of an event of a session of an account:
// handoff.<account>.<session>.<eventType>. Empty arguments become the
// wildcard "*", so Subject("", "", "HandoffClaimed") selects every claim.
func Subject(account, session, eventType string) string {
	tokens := []string{SubjectPrefix, account, session, eventType}
	for i, t := range tokens {
		if t == "" {
			tokens[i] = "*"
		}
	}
	return strings.Join(tokens, ".")
}

// message returns the message that publishes e.
func message(e eventstore.Event) (*nats.Msg, error) {
	account, session, err := eventcodec.ParseStreamName(e.Stream)
	if err != nil {
		return nil, fmt.Errorf("event %s at %d: %w", e.ID, e.Position, err)
	}
	if !ValidToken(e.Type) {
		return nil, fmt.Errorf("event %s at %d: type %q cannot be a subject token", e.ID, e.Position, e.Type)
	}
	body, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encode event %s: %w", e.ID, err)
	}
	m := nats.NewMsg(Subject(account.String(), session.String(), e.Type))
	m.Data = body
	m.Header.Set(HeaderEventType, e.Type)
	m.Header.Set(HeaderStream, e.Stream)
	m.Header.Set(HeaderStreamVersion, strconv.FormatInt(e.Version, 10))
	m.Header.Set(HeaderPosition, strconv.FormatInt(e.Position, 10))
	m.Header.Set(HeaderAccount, account.String())
	m.Header.Set(HeaderSession, session.String())
	return m, nil
}

// ValidToken reports whether s can be one token of a subject, such as an
// event type.
func ValidToken(s string) bool {
	return s != "" && !strings.ContainsAny(s, ".*> \t\r\n")
}

// expected is what the stream's last message must be when the next event
// lands, so that JetStream refuses an event that would not follow the one
// before it: the previous event, by its id, or at the start of a session
// the stream's last sequence, whatever message holds it (0: a stream that
// has never held a message, when nothing is expected).
type expected struct {
	id  string
	seq uint64
}

// options returns the publish options that expect x.
func (x expected) options() []jetstream.PublishOpt {
	switch {
	case x.id != "":
		return []jetstream.PublishOpt{jetstream.WithExpectLastMsgID(x.id)}
	case x.seq > 0:
		return []jetstream.PublishOpt{jetstream.WithExpectLastSequence(x.seq)}
	}
	return nil
}

// publish publishes events in order, the first expecting prev and each
// other the one before it to be the stream's last message, and waits for
// the acknowledgements. It returns how many leading events JetStream
// acknowledged, and the error that stopped the others.
func (r *Relay) publish(ctx context.Context, events []eventstore.Event, prev expected) (int, error) {
	futures := make([]jetstream.PubAckFuture, 0, len(events))
	var sendErr error
	for _, e := range events {
		f, err := r.publishAsync(e, prev)
		if err != nil {
			sendErr = err
			break
		}
		futures = append(futures, f)
		prev = expected{id: e.ID}
	}
	for i, f := range futures {
		select {
		case ack := <-f.Ok():
			r.acked(ack.Duplicate, time.Since(events[i].RecordedAt))
		case err := <-f.Err():
			return i, fmt.Errorf("publish event %s at %d: %w", events[i].ID, events[i].Position, err)
		case <-ctx.Done():
			return i, ctx.Err()
		}
	}
	return len(futures), sendErr
}

// publishAsync sends one event, expecting prev to be the stream's last
// message.
func (r *Relay) publishAsync(e eventstore.Event, prev expected) (jetstream.PubAckFuture, error) {
	m, err := message(e)
	if err != nil {
		return nil, err
	}
	opts := append([]jetstream.PublishOpt{jetstream.WithMsgID(e.ID), jetstream.WithExpectStream(r.cfg.Stream)}, prev.options()...)
	f, err := r.js.PublishMsgAsync(m, opts...)
	if err != nil {
		return nil, fmt.Errorf("publish event %s at %d: %w", e.ID, e.Position, err)
	}
	return f, nil
}
