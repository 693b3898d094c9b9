package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/resolutionflow/ledgerd/embeddednats"
	"github.com/resolutionflow/ledgerd/httpapi"
	"github.com/resolutionflow/ledgerd/relay"
	"github.com/resolutionflow/ledgerd/tail"
)

// natsFlags configure the relay to NATS JetStream.
type natsFlags struct {
	url             *string
	listen          *string
	stream          *string
	storage         *string
	replicas        *int
	duplicateWindow *time.Duration
	maxAge          *time.Duration
}

func addNATSFlags(f *flags) natsFlags {
	return natsFlags{
		url:             f.string("nats-url", "NATS_URL", "", "NATS server URL the relay publishes to; when empty, an embedded NATS server runs"),
		listen:          f.string("nats-listen", "LEDGER_NATS_LISTEN", embeddednats.DefaultListen, "address the embedded NATS server listens on"),
		stream:          f.string("nats-stream", "LEDGER_NATS_STREAM", relay.DefaultStream, "JetStream stream the events go to"),
		storage:         f.string("nats-storage", "LEDGER_NATS_STORAGE", "file", "JetStream storage: file or memory"),
		replicas:        f.int("nats-replicas", "LEDGER_NATS_REPLICAS", 1, "JetStream stream replicas"),
		duplicateWindow: f.duration("nats-duplicate-window", "LEDGER_NATS_DUPLICATE_WINDOW", relay.DefaultDuplicateWindow, "JetStream duplicate window: a repeat of an event inside it is dropped"),
		maxAge:          f.duration("nats-max-age", "LEDGER_NATS_MAX_AGE", 0, "how long the stream keeps events (0 keeps them forever)"),
	}
}

func (n natsFlags) config() (relay.Config, error) {
	storage, err := relay.ParseStorage(*n.storage)
	if err != nil {
		return relay.Config{}, fmt.Errorf("--nats-storage: %w", err)
	}
	return relay.Config{
		Stream:          *n.stream,
		Storage:         storage,
		Replicas:        *n.replicas,
		DuplicateWindow: *n.duplicateWindow,
		MaxAge:          *n.maxAge,
	}, nil
}

// natsTarget is the NATS server the relay publishes to.
type natsTarget struct {
	url      string
	embedded bool
	options  []nats.Option
	stop     func()
}

// target returns the configured NATS server, or starts the embedded one
// with its JetStream store in the data directory.
func (n natsFlags) target(ctx context.Context, dataDir string, logger *slog.Logger) (natsTarget, error) {
	if *n.url != "" {
		return natsTarget{url: *n.url, stop: func() {}}, nil
	}
	ns, err := embeddednats.Start(ctx, embeddednats.Config{
		StoreDir: filepath.Join(dataDir, "nats"),
		Listen:   *n.listen,
		Logger:   logger,
	})
	if err != nil {
		return natsTarget{}, err
	}
	return natsTarget{url: ns.ClientURL(), embedded: true, options: []nats.Option{ns.InProcess()}, stop: ns.Shutdown}, nil
}

// startRelay connects to NATS and returns the relay of the backend's log;
// the caller runs it. Its /readyz check degrades while it cannot publish.
func startRelay(target natsTarget, cfg relay.Config, b *backend, logger *slog.Logger) (*relay.Relay, *nats.Conn, httpapi.Check, error) {
	nc, err := relay.Connect(target.url, "ledgerd relay", logger, target.options...)
	if err != nil {
		return nil, nil, httpapi.Check{}, fmt.Errorf("connect to NATS at %s: %w", target.url, err)
	}
	r, err := relay.New(nc, b.events, b.views, b.locker, b.events.Appended, logger, cfg)
	if err != nil {
		nc.Close()
		return nil, nil, httpapi.Check{}, err
	}
	check := httpapi.Check{Name: "relay", Degrading: true, Func: func(context.Context) error {
		st := r.Status()
		if st.Degraded {
			return fmt.Errorf("cannot publish to NATS since %s (backlog %d): %v",
				st.DegradedSince.UTC().Format(time.RFC3339), st.Backlog, st.LastError)
		}
		return nil
	}}
	return r, nc, check, nil
}

// tailEvents is `ledgerd tail`: it prints the events on NATS as JSON lines.
func tailEvents(ctx context.Context, args []string, stdout, stderr io.Writer, logger *slog.Logger) error {
	f := newFlags("tail", stderr)
	url := f.string("nats-url", "NATS_URL", "nats://"+embeddednats.DefaultListen, "NATS server URL; the default is the embedded server's default address")
	stream := f.string("nats-stream", "LEDGER_NATS_STREAM", relay.DefaultStream, "JetStream stream")
	account := f.string("account", "", "", "only this account's events")
	session := f.string("session", "", "", "only this session's events")
	typ := f.string("type", "", "", "only events of this type, such as HandoffClaimed")
	from := f.string("from", "", "all", "where to start: all, new, a stream sequence, an RFC 3339 time or a duration ago (15m)")
	durable := f.string("durable", "", "", "durable consumer name: resume where the last run with this name stopped")
	if err := f.parse(args); err != nil {
		return err
	}
	start, err := tail.ParseStart(*from, time.Now())
	if err != nil {
		return fmt.Errorf("--from: %w", err)
	}
	nc, err := nats.Connect(*url, nats.Name("ledgerd tail"))
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w", *url, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	return tail.Run(ctx, js, tail.Options{
		Stream:  *stream,
		Filter:  tail.Filter{Account: *account, Session: *session, Type: *typ},
		Start:   start,
		Durable: *durable,
		Logger:  logger,
	}, stdout)
}
