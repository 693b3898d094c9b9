// Package tail is the reference downstream subscriber of the ledger's
// JetStream stream, behind `ledgerd tail`: it prints each event as one JSON
// line (the envelope the relay publishes) as it arrives, optionally only
// those of one account, one session or one event type, starting from the
// beginning of the stream, a stream sequence, a time or new events only.
//
// Without a consumer name it reads through an ordered consumer, which the
// server forgets when the subscriber goes away. With a name it uses a
// durable consumer of that name: events are acknowledged once printed, and
// the next run with the same name resumes after the last one acknowledged
// (an event printed just as the subscriber stopped may be printed again).
// The start position and filter apply when the durable consumer is created;
// remove it with `nats consumer rm <stream> <name>` to start over.
package tail

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventcodec"
)

// Filter selects events; empty fields select everything.
type Filter struct {
	Account string // account UUID
	Session string // session UUID
	Type    string // event type, such as HandoffClaimed
}

// Subject returns the subject filter that selects f's events.
func (f Filter) Subject() (string, error) {
	account, err := uuidToken("account", f.Account)
	if err != nil {
		return "", err
	}
	session, err := uuidToken("session", f.Session)
	if err != nil {
		return "", err
	}
	if types := domain.EventTypes(); f.Type != "" && !slices.Contains(types, f.Type) {
		return "", fmt.Errorf("event type %q: not one of %s", f.Type, strings.Join(types, ", "))
	}
	return eventcodec.Subject(account, session, f.Type), nil
}

// uuidToken returns the canonical form of a UUID, as published, or "".
func uuidToken(what, s string) (string, error) {
	if s == "" {
		return "", nil
	}
	u, err := uuid.Parse(s)
	if err != nil {
		return "", fmt.Errorf("%s %q: %w", what, s, err)
	}
	return u.String(), nil
}

// Start is where a subscriber starts reading the stream. The zero value is
// the beginning.
type Start struct {
	policy jetstream.DeliverPolicy
	seq    uint64
	time   time.Time
}

// StartNew starts with the events published after the subscriber started.
var StartNew = Start{policy: jetstream.DeliverNewPolicy}

// StartAtSequence starts at a stream sequence (1 is the first message).
func StartAtSequence(seq uint64) Start {
	return Start{policy: jetstream.DeliverByStartSequencePolicy, seq: seq}
}

// StartAtTime starts with the first message stored at or after t.
func StartAtTime(t time.Time) Start {
	return Start{policy: jetstream.DeliverByStartTimePolicy, time: t}
}

// ParseStart parses a start position: "all" (or ""), "new", a stream
// sequence such as "42", a time in RFC 3339 such as
// "2026-01-02T15:04:05Z", or a duration such as "15m" meaning that long
// ago.
func ParseStart(s string, now time.Time) (Start, error) {
	switch s {
	case "", "all":
		return Start{}, nil
	case "new":
		return StartNew, nil
	}
	if seq, err := strconv.ParseUint(s, 10, 64); err == nil {
		if seq == 0 {
			return Start{}, errors.New("start sequence 0: sequences start at 1")
		}
		return StartAtSequence(seq), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return StartAtTime(t), nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return StartAtTime(now.Add(-d)), nil
	}
	return Start{}, fmt.Errorf("start %q: want all, new, a stream sequence, an RFC 3339 time or a duration", s)
}

// Options say what to read.
type Options struct {
	// Stream is the JetStream stream (eventcodec.DefaultNATSStream when empty).
	Stream string
	// Filter selects the events.
	Filter Filter
	// Start is where to start; for a durable consumer, only when it is
	// created.
	Start Start
	// Durable names a durable consumer to read through and resume; empty
	// for an ordered consumer that starts afresh each time.
	Durable string
	// Logger receives warnings (nil for slog.Default()).
	Logger *slog.Logger
}

// durableAckWait is how long the server waits for the acknowledgement of
// an event delivered to a durable consumer before delivering it again,
// such as one that was on its way when the subscriber stopped.
const durableAckWait = 10 * time.Second

// Run prints the selected events to w, one JSON line each, as they
// arrive, until ctx ends; then it returns nil. It returns an error when it
// cannot set up the consumer or write to w.
func Run(ctx context.Context, js jetstream.JetStream, opts Options, w io.Writer) error {
	if opts.Stream == "" {
		opts.Stream = eventcodec.DefaultNATSStream
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	subject, err := opts.Filter.Subject()
	if err != nil {
		return err
	}
	stream, err := js.Stream(ctx, opts.Stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", opts.Stream, err)
	}
	var consumer jetstream.Consumer
	if opts.Durable == "" {
		consumer, err = stream.OrderedConsumer(ctx, opts.ordered(subject))
	} else {
		consumer, err = durable(ctx, stream, opts, subject)
	}
	if err != nil {
		return err
	}
	return consume(ctx, consumer, opts, w)
}

func (o Options) ordered(subject string) jetstream.OrderedConsumerConfig {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}, DeliverPolicy: o.Start.policy}
	cfg.OptStartSeq, cfg.OptStartTime = o.Start.opts()
	return cfg
}

func (s Start) opts() (uint64, *time.Time) {
	if s.policy == jetstream.DeliverByStartTimePolicy {
		return 0, &s.time
	}
	return s.seq, nil
}

// durable returns the named durable consumer, creating it when it does not
// exist. It delivers one event at a time, so a redelivered event is never
// overtaken by a later one.
func durable(ctx context.Context, stream jetstream.Stream, opts Options, subject string) (jetstream.Consumer, error) {
	c, err := stream.Consumer(ctx, opts.Durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		cfg := jetstream.ConsumerConfig{
			Durable:       opts.Durable,
			Description:   "ledgerd tail",
			FilterSubject: subject,
			DeliverPolicy: opts.Start.policy,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       durableAckWait,
			MaxAckPending: 1,
		}
		cfg.OptStartSeq, cfg.OptStartTime = opts.Start.opts()
		c, err = stream.CreateConsumer(ctx, cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("durable consumer %s: %w", opts.Durable, err)
	}
	cfg := c.CachedInfo().Config
	if filters := append([]string{cfg.FilterSubject}, cfg.FilterSubjects...); !slices.Contains(filters, subject) {
		return nil, fmt.Errorf("durable consumer %s exists with filters %q, not %q: use another name or remove it", opts.Durable, filters, subject)
	}
	return c, nil
}

// consume prints the consumer's messages until ctx ends.
func consume(ctx context.Context, consumer jetstream.Consumer, opts Options, w io.Writer) error {
	msgs, err := consumer.Messages()
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	defer msgs.Stop()
	var line bytes.Buffer
	for {
		msg, err := msgs.Next(jetstream.NextContext(ctx))
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, jetstream.ErrMsgIteratorClosed):
			return fmt.Errorf("consume: %w", err)
		case err != nil:
			// Missing heartbeats while NATS is away and the like: the
			// iterator carries on by itself.
			opts.Logger.WarnContext(ctx, "tail: waiting for events", "err", err)
			continue
		}
		err = writeLine(&line, msg, w)
		if errors.Is(err, errWrite) {
			return err
		}
		if err != nil {
			opts.Logger.WarnContext(ctx, "tail: skipping a message", "subject", msg.Subject(), "err", err)
		}
		if opts.Durable != "" {
			if err := msg.DoubleAck(ctx); err != nil && ctx.Err() == nil {
				return fmt.Errorf("acknowledge: %w", err)
			}
		}
	}
}

// errWrite marks a failure to write the output, which ends the run.
var errWrite = errors.New("write")

// writeLine writes the message's body as one JSON line.
func writeLine(line *bytes.Buffer, msg jetstream.Msg, w io.Writer) error {
	line.Reset()
	if err := json.Compact(line, msg.Data()); err != nil {
		return fmt.Errorf("body is not JSON: %w", err)
	}
	line.WriteByte('\n')
	if _, err := w.Write(line.Bytes()); err != nil {
		return fmt.Errorf("%w: %w", errWrite, err)
	}
	return nil
}
