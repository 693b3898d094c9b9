package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/internal/alternate"
)

// lagWriters append the events whose publish lag is measured.
const lagWriters = 4

// publishLag appends LagEvents events (each a new session's escalation,
// from lagWriters at a time) while the relay runs, and measures for each
// the time from the end of its append, when it was committed, to its
// delivery from the JetStream stream to a subscriber, which JetStream
// makes only once it has stored the message and acknowledged it to the
// relay.
func (r *runner) publishLag(ctx context.Context) error {
	r.p.start(fmt.Sprintf("publish lag, %d events", r.cfg.LagEvents))
	tn := newTenant()
	js, err := jetstream.New(r.t.NATS)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	setup, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(setup, r.t.Stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{eventcodec.Subject(tn.account.String(), "", "")},
	})
	if err != nil {
		return fmt.Errorf("subscribe to %s: %w", r.t.Stream, err)
	}
	var (
		mu        sync.Mutex
		committed = map[string]time.Time{}
		received  = map[string]time.Time{}
		all       = make(chan struct{})
	)
	sub, err := cons.Consume(func(m jetstream.Msg) {
		now := time.Now()
		id := m.Headers().Get(jetstream.MsgIDHeader)
		if id == "" {
			var e struct {
				ID string `json:"id"`
			}
			if json.Unmarshal(m.Data(), &e) == nil {
				id = e.ID
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if _, seen := received[id]; !seen {
			received[id] = now
			if len(received) == r.cfg.LagEvents {
				close(all)
			}
		}
	})
	if err != nil {
		return fmt.Errorf("consume %s: %w", r.t.Stream, err)
	}
	defer sub.Stop()
	start := time.Now()
	_, _, err = alternate.Calls(ctx, lagWriters, r.cfg.LagEvents, func(ctx context.Context, _ int) error {
		s := tn.session()
		e, err := s.next()
		if err != nil {
			return err
		}
		e.ID = ulid.Make().String()
		if err := s.append(ctx, r.t, []eventstore.NewEvent{e}); err != nil {
			return err
		}
		now := time.Now()
		mu.Lock()
		committed[e.ID] = now
		mu.Unlock()
		return nil
	})
	if err != nil {
		return fmt.Errorf("publish lag: append: %w", err)
	}
	wait, cancelWait := context.WithTimeout(ctx, r.cfg.CatchUpTimeout)
	defer cancelWait()
	select {
	case <-all:
	case <-wait.Done():
		mu.Lock()
		got := len(received)
		mu.Unlock()
		return fmt.Errorf("publish lag: %d of %d events arrived on NATS within %s: %w", got, r.cfg.LagEvents, r.cfg.CatchUpTimeout, wait.Err())
	}
	took := time.Since(start)
	mu.Lock()
	defer mu.Unlock()
	lags := make([]time.Duration, 0, len(committed))
	for id, at := range committed {
		got, ok := received[id]
		if !ok {
			return fmt.Errorf("publish lag: event %s never arrived on NATS", id)
		}
		lags = append(lags, max(0, got.Sub(at)))
	}
	slices.Sort(lags)
	f := Figure{Name: "publish_lag", Case: fmt.Sprintf("writers=%d (commit to delivery from JetStream)", lagWriters), Unit: "events",
		Calls: len(lags), Rate: rate(len(lags), took), LogEvents: r.head(ctx)}
	f.latencies(lags)
	r.add(f)
	return nil
}

func sortDurations(d []time.Duration) { slices.Sort(d) }
