package relay

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/resolutionflow/ledgerd/eventcodec"
)

// Defaults of Config.
const (
	DefaultDuplicateWindow = 2 * time.Hour
	DefaultBatchSize       = 256
	DefaultPollInterval    = 500 * time.Millisecond
	DefaultAckTimeout      = 5 * time.Second
	DefaultMinBackoff      = 100 * time.Millisecond
	DefaultMaxBackoff      = 5 * time.Second
	DefaultStatsInterval   = 10 * time.Second
)

// Config tunes the relay and describes the JetStream stream it creates
// when the stream does not exist. Zero fields take the defaults.
type Config struct {
	// Stream is the JetStream stream's name (eventcodec.DefaultNATSStream).
	Stream string
	// Storage is the stream's storage, file (the zero value) or memory;
	// see ParseStorage. It cannot change once the stream exists.
	Storage jetstream.StorageType
	// Replicas is the stream's replica count in a NATS cluster (1).
	Replicas int
	// DuplicateWindow is how long JetStream remembers message ids to drop
	// re-published events (DefaultDuplicateWindow; see the package doc).
	DuplicateWindow time.Duration
	// MaxAge is how long the stream keeps messages; 0 keeps them forever.
	// It must not be shorter than DuplicateWindow.
	MaxAge time.Duration

	// BatchSize is how many events are published before one checkpoint.
	BatchSize int
	// PollInterval is how often the log is read for appends that no
	// wake-up signalled (those made by other processes).
	PollInterval time.Duration
	// AckTimeout bounds the wait for each acknowledgement and each stream
	// request, and each read of the log's head.
	AckTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between failed attempts;
	// it doubles after each failure.
	MinBackoff, MaxBackoff time.Duration
	// StatsInterval is how often the leading relay logs its statistics.
	StatsInterval time.Duration
}

// ParseStorage parses a storage name: "file" or "memory".
func ParseStorage(s string) (jetstream.StorageType, error) {
	switch s {
	case "file":
		return jetstream.FileStorage, nil
	case "memory":
		return jetstream.MemoryStorage, nil
	}
	return 0, fmt.Errorf("storage %q: must be file or memory", s)
}

func (c Config) withDefaults() Config {
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	if c.Stream == "" {
		c.Stream = eventcodec.DefaultNATSStream
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	def(&c.DuplicateWindow, DefaultDuplicateWindow)
	def(&c.PollInterval, DefaultPollInterval)
	def(&c.AckTimeout, DefaultAckTimeout)
	def(&c.MinBackoff, DefaultMinBackoff)
	def(&c.MaxBackoff, DefaultMaxBackoff)
	def(&c.StatsInterval, DefaultStatsInterval)
	return c
}

func (c Config) validate() error {
	var errs []error
	if c.Replicas < 1 {
		errs = append(errs, fmt.Errorf("replicas %d: must be at least 1", c.Replicas))
	}
	if c.BatchSize < 1 {
		errs = append(errs, fmt.Errorf("batch size %d: must be at least 1", c.BatchSize))
	}
	if c.MaxAge < 0 || (c.MaxAge > 0 && c.MaxAge < c.DuplicateWindow) {
		errs = append(errs, fmt.Errorf("max age %v: must be 0 (forever) or at least the duplicate window %v", c.MaxAge, c.DuplicateWindow))
	}
	if c.MinBackoff > c.MaxBackoff {
		errs = append(errs, fmt.Errorf("min backoff %v exceeds max backoff %v", c.MinBackoff, c.MaxBackoff))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("relay config: %w", err)
	}
	return nil
}

// streamConfig is the JetStream stream the relay publishes to.
func (c Config) streamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        c.Stream,
		Description: "Handoff ledger events, one message per event in log order",
		Subjects:    []string{eventcodec.SubjectPrefix + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		Storage:     c.Storage,
		Replicas:    c.Replicas,
		Duplicates:  c.DuplicateWindow,
		MaxAge:      c.MaxAge,
	}
}
