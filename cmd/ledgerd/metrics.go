package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/resolutionflow/ledgerd/metrics"
	"github.com/resolutionflow/ledgerd/projections"
	"github.com/resolutionflow/ledgerd/relay"
)

// newMetrics returns the process's metrics, watching the backend's pool
// (PostgreSQL), the projector's and the relay's checkpoints, the events
// the projector skipped and the relay's status.
func newMetrics(b *backend, r *relay.Relay) (*metrics.Metrics, error) {
	m := metrics.New()
	position := func(name string) func(context.Context) (metrics.Position, error) {
		return func(ctx context.Context) (metrics.Position, error) {
			// The checkpoint is read first, so that it never passes the
			// head read after it.
			cp, err := b.views.Checkpoint(ctx, name)
			if err != nil {
				return metrics.Position{}, err
			}
			head, err := b.events.Head(ctx)
			return metrics.Position{Checkpoint: cp, Head: head}, err
		}
	}
	skipped := func(ctx context.Context) (int64, error) {
		skips, err := b.views.Skips(ctx, projections.HandoffsProjector)
		return int64(skips.Count), err
	}
	relayStatus := func() metrics.RelayStatus {
		s := r.Status()
		return metrics.RelayStatus{Leading: s.Leading, Degraded: s.Degraded, Published: s.Published, Duplicates: s.Duplicates, Foreign: s.Foreign, LastLag: s.LastLag}
	}
	errs := []error{
		m.WatchCheckpoints(map[string]func(context.Context) (metrics.Position, error){
			projections.HandoffsProjector: position(projections.HandoffsProjector),
			relay.Name:                    position(relay.Name),
		}),
		m.WatchSkipped(skipped),
		m.WatchRelay(relayStatus),
	}
	if b.pool != nil {
		errs = append(errs, m.WatchPool(func() metrics.PoolStats {
			s := b.pool.Stat()
			return metrics.PoolStats{
				Acquired: s.AcquiredConns(), Idle: s.IdleConns(), Total: s.TotalConns(), Max: s.MaxConns(),
				Acquires: s.AcquireCount(), EmptyAcquires: s.EmptyAcquireCount(), CanceledAcquires: s.CanceledAcquireCount(),
				AcquireWait: s.AcquireDuration(),
			}
		}))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	return m, nil
}

// metricsHandler serves m at GET /metrics and nothing else, for the
// listener of --metrics-addr.
func metricsHandler(m *metrics.Metrics) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	return mux
}
