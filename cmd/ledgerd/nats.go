package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/resolutionflow/ledgerd/embeddednats"
	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/httpapi"
	"github.com/resolutionflow/ledgerd/relay"
	"github.com/resolutionflow/ledgerd/tail"
)

// natsFlags configure the relay to NATS JetStream.
type natsFlags struct {
	url             *string
	embedded        *bool
	auth            natsAuth
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
		embedded:        f.bool("embedded-nats", "LEDGER_EMBEDDED_NATS", false, "with PostgreSQL and no --nats-url, run an embedded NATS server: for a single process only, which it enforces with a database lock"),
		auth:            addNATSAuthFlags(f),
		listen:          f.string("nats-listen", "LEDGER_NATS_LISTEN", embeddednats.DefaultListen, "address the embedded NATS server listens on"),
		stream:          f.string("nats-stream", "LEDGER_NATS_STREAM", eventcodec.DefaultNATSStream, "JetStream stream the events go to"),
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

// checkMode refuses a NATS setting that could split the stream: with
// PostgreSQL, several processes may share the database, and each must
// publish to the same NATS server, so --nats-url is required unless
// --embedded-nats says that this process runs alone.
func (n natsFlags) checkMode(postgres bool) error {
	switch {
	case *n.url != "" && *n.embedded:
		return errors.New("give --nats-url (NATS_URL) or --embedded-nats (LEDGER_EMBEDDED_NATS), not both")
	case postgres && *n.url == "" && !*n.embedded:
		return errors.New("--nats-url (NATS_URL) is required with PostgreSQL, the same for every process on the database; " +
			"for a single process, --embedded-nats (LEDGER_EMBEDDED_NATS) runs an embedded NATS server instead")
	}
	return nil
}

// natsAuth are the credentials for a NATS server given by --nats-url;
// user:password in the URL works too.
type natsAuth struct {
	creds    *string
	user     *string
	password *string
	token    *string
}

func addNATSAuthFlags(f *flags) natsAuth {
	return natsAuth{
		creds:    f.string("nats-creds", "NATS_CREDS", "", "NATS credentials file (user JWT and NKey seed) for --nats-url"),
		user:     f.string("nats-user", "NATS_USER", "", "NATS user for --nats-url"),
		password: f.string("nats-password", "NATS_PASSWORD", "", "password of --nats-user (prefer the environment variable: flags are visible to other local users)"),
		token:    f.string("nats-token", "NATS_TOKEN", "", "NATS token for --nats-url"),
	}
}

// options returns the connect options of the credentials given, which need
// a --nats-url (the embedded server has credentials of its own) and may
// be one kind only: a credentials file, a user and password, or a token.
func (a natsAuth) options(natsURL string) ([]nats.Option, error) {
	creds, user, password, token := *a.creds, *a.user, *a.password, *a.token
	if natsURL == "" {
		if creds != "" || user != "" || password != "" || token != "" {
			return nil, errors.New("--nats-creds, --nats-user, --nats-password and --nats-token (NATS_CREDS, NATS_USER, NATS_PASSWORD, NATS_TOKEN) need --nats-url: the embedded NATS server has credentials of its own")
		}
		return nil, nil
	}
	kinds := 0
	for _, given := range []bool{creds != "", user != "" || password != "", token != ""} {
		if given {
			kinds++
		}
	}
	switch {
	case kinds > 1:
		return nil, errors.New("give one kind of NATS credentials: --nats-creds, --nats-user with --nats-password, or --nats-token")
	case (user == "") != (password == ""):
		return nil, errors.New("--nats-user and --nats-password (NATS_USER, NATS_PASSWORD) go together")
	case creds != "":
		if _, err := os.Stat(creds); err != nil {
			return nil, fmt.Errorf("--nats-creds: %w", err)
		}
		return []nats.Option{nats.UserCredentials(creds)}, nil
	case user != "":
		return []nats.Option{nats.UserInfo(user, password)}, nil
	case token != "":
		return []nats.Option{nats.Token(token)}, nil
	}
	return nil, nil
}

// redact returns a comma-separated list of NATS URLs with their passwords
// and tokens hidden, for logs and errors.
func redact(urls string) string {
	list := strings.Split(urls, ",")
	for i, s := range list {
		u, err := url.Parse(strings.TrimSpace(s))
		if err != nil {
			list[i] = "(an invalid URL)"
			continue
		}
		if _, hasPassword := u.User.Password(); u.User != nil && !hasPassword {
			u.User = url.User("xxxxx") // a token
		}
		list[i] = u.Redacted()
	}
	return strings.Join(list, ",")
}

// natsTarget is the NATS server the relay publishes to.
type natsTarget struct {
	url      string
	embedded bool
	options  []nats.Option
	stop     func()
}

// target returns the configured NATS server, or starts the embedded one
// with its JetStream store and client URLs in the data directory.
func (n natsFlags) target(ctx context.Context, dataDir string, logger *slog.Logger) (natsTarget, error) {
	opts, err := n.auth.options(*n.url)
	if err != nil {
		return natsTarget{}, err
	}
	if *n.url != "" {
		return natsTarget{url: *n.url, options: opts, stop: func() {}}, nil
	}
	ns, err := embeddednats.Start(ctx, embeddednats.Config{
		DataDir: dataDir,
		Listen:  *n.listen,
		Logger:  logger,
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
		return nil, nil, httpapi.Check{}, fmt.Errorf("connect to NATS at %s: %w", redact(target.url), err)
	}
	r, err := relay.New(relay.Deps{NATS: nc, Log: b.events, Checkpoints: b.views, Locker: b.locker, Wake: b.events.Appended, Logger: logger}, cfg)
	if err != nil {
		nc.Close()
		return nil, nil, httpapi.Check{}, err
	}
	check := httpapi.Check{Name: "relay", Degrading: true, Func: func(context.Context) error {
		st := r.Status()
		if st.Degraded {
			return fmt.Errorf("cannot publish to NATS since %s (backlog %d, foreign messages skipped %d): %v",
				st.DegradedSince.UTC().Format(time.RFC3339), st.Backlog, st.Foreign, st.LastError)
		}
		if st.StreamProblem != "" {
			return httpapi.Notice(st.StreamProblem)
		}
		return nil
	}}
	return r, nc, check, nil
}

// tailEvents is `ledgerd tail`: it prints the events on NATS as JSON lines.
func tailEvents(ctx context.Context, args []string, stdout io.Writer, logger *slog.Logger) error {
	f := newFlags("tail")
	urlFlag := f.string("nats-url", "NATS_URL", "", "NATS server URL; when empty, the embedded server's, with its credentials, from <data-dir>/"+embeddednats.URLFile)
	auth := addNATSAuthFlags(f)
	dataDir := f.string("data-dir", "LEDGER_DATA_DIR", defaultDataDir, "data directory of the embedded mode, whose NATS URL tail uses without --nats-url")
	stream := f.string("nats-stream", "LEDGER_NATS_STREAM", eventcodec.DefaultNATSStream, "JetStream stream")
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
	natsURL, opts, err := tailTarget(*urlFlag, auth, *dataDir)
	if err != nil {
		return err
	}
	nc, err := nats.Connect(natsURL, append(opts, nats.Name("ledgerd tail"))...)
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w", redact(natsURL), err)
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

// tailTarget returns the NATS server tail reads from and the options that
// authenticate it: the --nats-url with the credentials given, else the
// embedded server's client URL kept in dataDir, else the embedded server's
// default address.
func tailTarget(natsURL string, auth natsAuth, dataDir string) (string, []nats.Option, error) {
	opts, err := auth.options(natsURL)
	if err != nil || natsURL != "" {
		return natsURL, opts, err
	}
	kept, err := embeddednats.ReadClientURL(dataDir, embeddednats.URLFile)
	if errors.Is(err, fs.ErrNotExist) {
		return "nats://" + embeddednats.DefaultListen, nil, nil
	}
	return kept, nil, err
}
