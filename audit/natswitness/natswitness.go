// Package natswitness publishes the ledger's signed Merkle checkpoints on
// NATS, into a JetStream stream of their own, so that a copy of the
// checkpoints lives outside the database: whoever rewrites the log and its
// stored checkpoints cannot rewrite the stream too without the NATS
// credentials, and `ledgerd verify --checkpoint` can check the log against
// any checkpoint taken from it.
//
// # Subject and messages
//
// Each checkpoint is one message on the subject Subject
// ("ledger.checkpoint"), outside the events' handoff.> scheme. The body is
// the signed note exactly as GET /audit/head returns it; the headers are
//
//	Nats-Msg-Id        checkpoint-<size>-<hex root>, for de-duplication
//	Ledger-Tree-Size   the tree's size
//	Ledger-Position    the position of its last leaf's event
//	Ledger-Root        the root hash, hex
//
// The stream (default name LEDGER_CHECKPOINTS) captures Subject only; the
// publisher creates it when it is missing and leaves an existing one as it
// is. A checkpoint missed while NATS is unreachable is not published again,
// but the newest is published each time a sealer takes the lead.
package natswitness

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/resolutionflow/ledgerd/audit"
)

// Subject is the subject of the checkpoints.
const Subject = "ledger.checkpoint"

// DefaultStream is the default name of the checkpoints' stream.
const DefaultStream = "LEDGER_CHECKPOINTS"

// Headers of a checkpoint message besides Nats-Msg-Id.
const (
	HeaderTreeSize = "Ledger-Tree-Size"
	HeaderPosition = "Ledger-Position"
	HeaderRoot     = "Ledger-Root"
)

// publishTimeout bounds each publish and each stream request.
const publishTimeout = 5 * time.Second

// Publisher publishes checkpoints; it implements audit.Publisher.
type Publisher struct {
	js     jetstream.JetStream
	config jetstream.StreamConfig

	mu    sync.Mutex
	ready bool // the stream is known to exist
}

var _ audit.Publisher = (*Publisher)(nil)

// New returns a publisher through nc into the stream named stream
// (DefaultStream when empty), made with storage and replicas when it is
// missing.
func New(nc *nats.Conn, stream string, storage jetstream.StorageType, replicas int) (*Publisher, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("checkpoint witness: jetstream: %w", err)
	}
	if stream == "" {
		stream = DefaultStream
	}
	return &Publisher{js: js, config: jetstream.StreamConfig{
		Name:        stream,
		Description: "Signed Merkle checkpoints of the handoff ledger's log",
		Subjects:    []string{Subject},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		Storage:     storage,
		Replicas:    max(replicas, 1),
	}}, nil
}

// Publish implements audit.Publisher: it publishes c and waits for
// JetStream's acknowledgement.
func (p *Publisher) Publish(ctx context.Context, c audit.Checkpoint) error {
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	if err := p.ensureStream(ctx); err != nil {
		return err
	}
	root := hex.EncodeToString(c.Root)
	m := nats.NewMsg(Subject)
	m.Data = []byte(c.Note)
	m.Header.Set(jetstream.MsgIDHeader, "checkpoint-"+strconv.FormatUint(c.Size, 10)+"-"+root)
	m.Header.Set(HeaderTreeSize, strconv.FormatUint(c.Size, 10))
	m.Header.Set(HeaderPosition, strconv.FormatInt(c.Position, 10))
	m.Header.Set(HeaderRoot, root)
	if _, err := p.js.PublishMsg(ctx, m); err != nil {
		return fmt.Errorf("publish checkpoint of size %d: %w", c.Size, err)
	}
	return nil
}

// ensureStream makes the stream when it is missing, once per publisher.
func (p *Publisher) ensureStream(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ready {
		return nil
	}
	_, err := p.js.Stream(ctx, p.config.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = p.js.CreateStream(ctx, p.config)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) { // another process was first
			err = nil
		}
	}
	if err != nil {
		return fmt.Errorf("open or create stream %s: %w", p.config.Name, err)
	}
	p.ready = true
	return nil
}
