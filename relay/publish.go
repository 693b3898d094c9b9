package relay

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
)

// message returns the message that publishes e, its body e's envelope
// (eventstore.Event.AppendJSON) with e's data and stored metadata as they
// are. The headers are set in the map directly: each name is already in
// its canonical form, which nats.Header.Set would work out again each time.
func message(e eventstore.Event) (*nats.Msg, error) {
	account, session, err := eventcodec.ParseStreamName(e.Stream)
	if err != nil {
		return nil, fmt.Errorf("event %s at %d: %w", e.ID, e.Position, err)
	}
	if !eventcodec.ValidSubjectToken(e.Type) {
		return nil, fmt.Errorf("event %s at %d: type %q cannot be a subject token", e.ID, e.Position, e.Type)
	}
	a, s := account.String(), session.String()
	return &nats.Msg{
		Subject: eventcodec.Subject(a, s, e.Type),
		Data:    e.AppendJSON(make([]byte, 0, envelopeSize(e))),
		Header: nats.Header{
			eventcodec.HeaderEventType:     {e.Type},
			eventcodec.HeaderStream:        {e.Stream},
			eventcodec.HeaderStreamVersion: {strconv.FormatInt(e.Version, 10)},
			eventcodec.HeaderPosition:      {strconv.FormatInt(e.Position, 10)},
			eventcodec.HeaderAccount:       {a},
			eventcodec.HeaderSession:       {s},
			jetstream.MsgIDHeader:          {e.ID},
		},
	}, nil
}

// envelopeSize is about the size of e's envelope, enough for it unless its
// strings need escaping.
func envelopeSize(e eventstore.Event) int {
	const fixed = len(`{"id":"","type":"","stream":"","version":,"position":,"recorded_at":"","data":,"metadata":}`) + 2*20 + len(time.RFC3339Nano)
	return fixed + len(e.ID) + len(e.Type) + len(e.Stream) + len(e.Data) + len(e.RawMetadata) + 16
}

// expected is what the stream's last message must be when the next event
// lands, so that JetStream refuses an event that would not follow the one
// before it: the previous event, by its id, or at the start of a round
// the stream's last sequence, whatever message holds it (0: a stream that
// has never held a message, when nothing is expected).
type expected struct {
	id  string
	seq uint64
}

// setHeaders sets on m the headers that make JetStream store it in stream
// only if x is its last message.
func (x expected) setHeaders(m *nats.Msg, stream string) {
	m.Header[jetstream.ExpectedStreamHeader] = []string{stream}
	switch {
	case x.id != "":
		m.Header[jetstream.ExpectedLastMsgIDHeader] = []string{x.id}
	case x.seq > 0:
		m.Header[jetstream.ExpectedLastSeqHeader] = []string{strconv.FormatUint(x.seq, 10)}
	}
}

// batch is events published together and not yet recorded by the
// checkpoint: the futures of their acknowledgements, in order.
type batch struct {
	events  []eventstore.Event
	futures []jetstream.PubAckFuture
	// acked counts the leading futures acknowledged so far.
	acked int
	// sendErr is why events[len(futures)] could not be sent, which
	// stopped the batch short; nil when every event was sent.
	sendErr error
}

// send publishes events in order without waiting for JetStream, the first
// expecting prev and each other the one before it to be the stream's last
// message. A send that fails stops the batch: the events after it are not
// sent.
func (r *Relay) send(events []eventstore.Event, prev expected) *batch {
	b := &batch{events: events, futures: make([]jetstream.PubAckFuture, 0, len(events))}
	for _, e := range events {
		f, err := r.publishAsync(e, prev)
		if err != nil {
			b.sendErr = err
			break
		}
		b.futures = append(b.futures, f)
		prev = expected{id: e.ID}
	}
	return b
}

// done reports whether every event of b was sent and acknowledged.
func (b *batch) done() bool { return b.sendErr == nil && b.acked == len(b.events) }

// await collects acknowledgements of the batches in window, oldest first:
// it waits for the acknowledgements of the first batch, then takes those
// of the later batches that have arrived already, and stops at the first
// that has not. A signal on stop (nil: none) ends the wait early. It
// returns the error of the first event not acknowledged (refused, timed
// out, or not sent), if any; the events before it are acknowledged.
func (r *Relay) await(ctx context.Context, window []*batch, stop <-chan struct{}) error {
	for i, b := range window {
		for b.acked < len(b.futures) {
			f, e := b.futures[b.acked], b.events[b.acked]
			var ack *jetstream.PubAck
			var err error
			if i == 0 {
				select {
				case ack = <-f.Ok():
				case err = <-f.Err():
				case <-stop:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			} else {
				select {
				case ack = <-f.Ok():
				case err = <-f.Err():
				default:
					return nil // later batches are collected next time
				}
			}
			if err != nil {
				return fmt.Errorf("publish event %s at %d: %w", e.ID, e.Position, err)
			}
			r.acked(ack.Duplicate, time.Since(e.RecordedAt))
			b.acked++
		}
		if b.sendErr != nil {
			return b.sendErr
		}
	}
	return nil
}

// acknowledged returns how many leading batches of window are wholly
// acknowledged and the last event of the window's acknowledged prefix; ok
// is false when no event is acknowledged.
func acknowledged(window []*batch) (done int, last eventstore.Event, ok bool) {
	for _, b := range window {
		if b.acked > 0 {
			last, ok = b.events[b.acked-1], true
		}
		if !b.done() {
			break
		}
		done++
	}
	return done, last, ok
}

// publishAsync sends one event, expecting prev to be the stream's last
// message.
func (r *Relay) publishAsync(e eventstore.Event, prev expected) (jetstream.PubAckFuture, error) {
	m, err := message(e)
	if err != nil {
		return nil, err
	}
	prev.setHeaders(m, r.cfg.Stream)
	f, err := r.js.PublishMsgAsync(m)
	if err != nil {
		return nil, fmt.Errorf("publish event %s at %d: %w", e.ID, e.Position, err)
	}
	return f, nil
}
