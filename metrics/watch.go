package metrics

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// readTimeout bounds the reads a scrape makes of the database.
const readTimeout = 2 * time.Second

// Position is where a worker that follows the log (the projector, the
// relay) stands.
type Position struct {
	// Checkpoint is the position of the last event it has handled.
	Checkpoint int64
	// Head is the position of the log's last committed event.
	Head int64
}

// checkpoints reports, on each scrape, the position of named workers, read
// from the database, and how far behind the log's head they are.
type checkpoints struct {
	read     map[string]func(context.Context) (Position, error)
	position *prometheus.Desc
	lag      *prometheus.Desc
	lagTime  *prometheus.Desc

	mu sync.Mutex
	// caughtUp is when each worker was last seen at the head.
	caughtUp map[string]time.Time
}

// WatchCheckpoints reports on each scrape, for each worker named in read,
// ledger_checkpoint_position, ledger_checkpoint_lag_events (head minus
// checkpoint) and ledger_checkpoint_lag_seconds: how long the worker has
// been behind the head, 0 when it is at the head (an upper bound of the
// age of the oldest event it has yet to handle, measured at scrapes). A
// read that fails leaves that worker's series out of the scrape, and is
// logged.
func (m *Metrics) WatchCheckpoints(read map[string]func(context.Context) (Position, error)) error {
	labels := []string{"name"}
	return m.Register(&checkpoints{
		read:     read,
		position: prometheus.NewDesc("ledger_checkpoint_position", "Position of the last event the worker has handled.", labels, nil),
		lag:      prometheus.NewDesc("ledger_checkpoint_lag_events", "Positions between the log's head and the worker's checkpoint.", labels, nil),
		lagTime:  prometheus.NewDesc("ledger_checkpoint_lag_seconds", "How long the worker has been behind the log's head; 0 at the head.", labels, nil),
		caughtUp: map[string]time.Time{},
	})
}

func (c *checkpoints) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.position
	ch <- c.lag
	ch <- c.lagTime
}

func (c *checkpoints) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	for name, read := range c.read {
		p, err := read(ctx)
		if err != nil {
			slog.WarnContext(ctx, "metrics: read a checkpoint", "name", name, "err", err)
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.position, prometheus.GaugeValue, float64(p.Checkpoint), name)
		ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, float64(max(p.Head-p.Checkpoint, 0)), name)
		ch <- prometheus.MustNewConstMetric(c.lagTime, prometheus.GaugeValue, c.behind(name, p).Seconds(), name)
	}
}

// behind returns how long the worker name has been behind the head.
func (c *checkpoints) behind(name string, p Position) time.Duration {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	since, seen := c.caughtUp[name]
	if p.Checkpoint >= p.Head || !seen {
		c.caughtUp[name] = now
		return 0
	}
	return now.Sub(since)
}

// RelayStatus is what the relay knows of itself, read on each scrape.
type RelayStatus struct {
	// Leading: this process's relay publishes; the others stand by.
	Leading bool
	// Degraded: the leading relay cannot publish.
	Degraded bool
	// Published, Duplicates and Foreign count since start the events
	// acknowledged, those acknowledged as duplicates, and the messages in
	// the stream that are not the log's.
	Published, Duplicates, Foreign uint64
	// LastLag is the time from the commit of the last event published to
	// its acknowledgement.
	LastLag time.Duration
}

// WatchRelay reports the relay's status on each scrape: ledger_relay_leading,
// ledger_relay_degraded, ledger_relay_published_total,
// ledger_relay_duplicates_total, ledger_relay_foreign_total and
// ledger_relay_publish_lag_seconds. status must not do I/O.
func (m *Metrics) WatchRelay(status func() RelayStatus) error {
	gauge := func(name, help string, value func(RelayStatus) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return value(status()) })
	}
	counter := func(name, help string, value func(RelayStatus) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(value(status())) })
	}
	for _, c := range []prometheus.Collector{
		gauge("ledger_relay_leading", "1 while this process's relay publishes, 0 while it stands by.", func(s RelayStatus) float64 { return boolValue(s.Leading) }),
		gauge("ledger_relay_degraded", "1 while the leading relay cannot publish (NATS or the database unreachable, or the stream refused).", func(s RelayStatus) float64 { return boolValue(s.Degraded) }),
		gauge("ledger_relay_publish_lag_seconds", "Time from the commit of the last event published to its acknowledgement.", func(s RelayStatus) float64 { return s.LastLag.Seconds() }),
		counter("ledger_relay_published_total", "Events JetStream acknowledged, duplicates included.", func(s RelayStatus) uint64 { return s.Published }),
		counter("ledger_relay_duplicates_total", "Events JetStream acknowledged as duplicates (published again after a crash or failover).", func(s RelayStatus) uint64 { return s.Duplicates }),
		counter("ledger_relay_foreign_total", "Messages found in the stream that are not events of this log.", func(s RelayStatus) uint64 { return s.Foreign }),
	} {
		if err := m.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// WatchSkipped reports on each scrape ledger_projector_skipped_events: the
// events the projector could not apply and passed over, as count reads
// them from the database.
func (m *Metrics) WatchSkipped(count func(context.Context) (int64, error)) error {
	return m.Register(&skipped{count: count, desc: prometheus.NewDesc("ledger_projector_skipped_events", "Events the projector could not apply and passed over.", nil, nil)})
}

type skipped struct {
	count func(context.Context) (int64, error)
	desc  *prometheus.Desc
}

func (s *skipped) Describe(ch chan<- *prometheus.Desc) { ch <- s.desc }

func (s *skipped) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	n, err := s.count(ctx)
	if err != nil {
		slog.WarnContext(ctx, "metrics: read the skipped events", "err", err)
		return
	}
	ch <- prometheus.MustNewConstMetric(s.desc, prometheus.GaugeValue, float64(n))
}

// PoolStats is the state of a database connection pool.
type PoolStats struct {
	// Acquired, Idle and Total are the connections in use, idle, and
	// open; Max is the pool's size.
	Acquired, Idle, Total, Max int32
	// Acquires counts the connections taken from the pool, and
	// EmptyAcquires those that had to wait for one; AcquireWait is the
	// total time acquires took.
	Acquires, EmptyAcquires, CanceledAcquires int64
	AcquireWait                               time.Duration
}

// WatchPool reports the pool's statistics on each scrape:
// ledger_db_pool_connections{state="acquired"|"idle"|"total"},
// ledger_db_pool_max_connections, ledger_db_pool_acquires_total,
// ledger_db_pool_empty_acquires_total, ledger_db_pool_canceled_acquires_total
// and ledger_db_pool_acquire_wait_seconds_total. stats must not do I/O.
func (m *Metrics) WatchPool(stats func() PoolStats) error {
	return m.Register(&pool{
		stats:    stats,
		conns:    prometheus.NewDesc("ledger_db_pool_connections", "Connections of the database pool, by state.", []string{"state"}, nil),
		max:      prometheus.NewDesc("ledger_db_pool_max_connections", "Size of the database pool.", nil, nil),
		acquires: prometheus.NewDesc("ledger_db_pool_acquires_total", "Connections taken from the pool.", nil, nil),
		empty:    prometheus.NewDesc("ledger_db_pool_empty_acquires_total", "Acquires that waited for a connection because none was idle.", nil, nil),
		canceled: prometheus.NewDesc("ledger_db_pool_canceled_acquires_total", "Acquires given up before a connection was free.", nil, nil),
		wait:     prometheus.NewDesc("ledger_db_pool_acquire_wait_seconds_total", "Total time spent acquiring connections.", nil, nil),
	})
}

type pool struct {
	stats                                       func() PoolStats
	conns, max, acquires, empty, canceled, wait *prometheus.Desc
}

func (p *pool) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{p.conns, p.max, p.acquires, p.empty, p.canceled, p.wait} {
		ch <- d
	}
}

func (p *pool) Collect(ch chan<- prometheus.Metric) {
	s := p.stats()
	ch <- prometheus.MustNewConstMetric(p.conns, prometheus.GaugeValue, float64(s.Acquired), "acquired")
	ch <- prometheus.MustNewConstMetric(p.conns, prometheus.GaugeValue, float64(s.Idle), "idle")
	ch <- prometheus.MustNewConstMetric(p.conns, prometheus.GaugeValue, float64(s.Total), "total")
	ch <- prometheus.MustNewConstMetric(p.max, prometheus.GaugeValue, float64(s.Max))
	ch <- prometheus.MustNewConstMetric(p.acquires, prometheus.CounterValue, float64(s.Acquires))
	ch <- prometheus.MustNewConstMetric(p.empty, prometheus.CounterValue, float64(s.EmptyAcquires))
	ch <- prometheus.MustNewConstMetric(p.canceled, prometheus.CounterValue, float64(s.CanceledAcquires))
	ch <- prometheus.MustNewConstMetric(p.wait, prometheus.CounterValue, s.AcquireWait.Seconds())
}
