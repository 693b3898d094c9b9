package natstest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/resolutionflow/ledgerd/internal/natstest"
)

func TestServer_RestartKeepsPortAndStreams(t *testing.T) {
	srv := natstest.Start(t)
	url := srv.URL()
	js := natstest.JetStream(t, url, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond),
		nats.ReconnectBufSize(-1)) // a publish while disconnected fails instead of waiting
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "s.1", []byte("one")); err != nil {
		t.Fatal(err)
	}

	srv.Stop()
	down, cancelDown := context.WithTimeout(ctx, 200*time.Millisecond)
	_, err := js.Publish(down, "s.2", []byte("two"), jetstream.WithRetryAttempts(0))
	cancelDown()
	if err == nil {
		t.Fatal("publish to a stopped server succeeded")
	}
	srv.Restart(t)
	if srv.URL() != url {
		t.Fatalf("URL after restart = %s, want %s", srv.URL(), url)
	}

	// The client reconnects on its own; JetStream recovered the stream.
	var info *jetstream.StreamInfo
	for {
		s, err := js.Stream(ctx, "S")
		if err == nil {
			info, err = s.Info(ctx)
		}
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("stream after restart: %v", errors.Join(err, ctx.Err()))
		}
		time.Sleep(20 * time.Millisecond) // polling for the reconnect
	}
	if info.State.Msgs != 1 {
		t.Fatalf("messages after restart = %d, want 1", info.State.Msgs)
	}
}
