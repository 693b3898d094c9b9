package relay

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
)

// reconnectWait is the pause between two attempts to reach NATS.
const reconnectWait = time.Second

// Connect opens the relay's connection to the NATS servers at url (a
// comma-separated list). It never gives up: when no server is reachable it
// returns a connection that keeps trying in the background, so ledgerd
// starts and takes commands while NATS is down. Publishing while
// disconnected fails at once instead of queueing in the client, so the
// relay sees the outage and resumes from its checkpoint. opts are applied
// last (credentials, TLS).
func Connect(url, name string, logger *slog.Logger, opts ...nats.Option) (*nats.Conn, error) {
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("component", "nats")
	base := []nats.Option{
		nats.Name(name),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(reconnectWait),
		nats.ReconnectBufSize(-1),
		nats.ConnectHandler(func(nc *nats.Conn) {
			logger.Info("nats connected", "server", nc.ConnectedUrlRedacted())
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			logger.Warn("nats disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			logger.Info("nats reconnected", "server", nc.ConnectedUrlRedacted())
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			logger.Debug("nats reconnect failed", "err", err)
		}),
	}
	nc, err := nats.Connect(url, append(base, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats: %w", err)
	}
	return nc, nil
}
