package embeddednats_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/resolutionflow/ledgerd/embeddednats"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func start(tb testing.TB, dir, listen string) *embeddednats.Server {
	tb.Helper()
	s, err := embeddednats.Start(tb.Context(), embeddednats.Config{StoreDir: dir, Listen: listen, Logger: quiet})
	if err != nil {
		tb.Fatalf("start: %v", err)
	}
	tb.Cleanup(s.Shutdown)
	return s
}

func connect(tb testing.TB, url string, opts ...nats.Option) jetstream.JetStream {
	tb.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		tb.Fatalf("connect to %s: %v", url, err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatalf("jetstream: %v", err)
	}
	return js
}

func createStream(tb testing.TB, js jetstream.JetStream) {
	tb.Helper()
	_, err := js.CreateStream(tb.Context(), jetstream.StreamConfig{Name: "LEDGER", Subjects: []string{"ledger.>"}, Storage: jetstream.FileStorage})
	if err != nil {
		tb.Fatalf("create stream: %v", err)
	}
}

func publish(tb testing.TB, js jetstream.JetStream, subject, data string) {
	tb.Helper()
	if _, err := js.Publish(tb.Context(), subject, []byte(data)); err != nil {
		tb.Fatalf("publish %s: %v", subject, err)
	}
}

// readAll reads every message of the stream, in order.
func readAll(tb testing.TB, js jetstream.JetStream) []string {
	tb.Helper()
	stream, err := js.Stream(tb.Context(), "LEDGER")
	if err != nil {
		tb.Fatalf("stream: %v", err)
	}
	info, err := stream.Info(tb.Context())
	if err != nil {
		tb.Fatalf("stream info: %v", err)
	}
	var got []string
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		msg, err := stream.GetMsg(tb.Context(), seq)
		if err != nil {
			tb.Fatalf("get message %d: %v", seq, err)
		}
		got = append(got, msg.Subject+" "+string(msg.Data))
	}
	return got
}

func wantMessages(tb testing.TB, got []string, want ...string) {
	tb.Helper()
	if strings.Join(got, "|") != strings.Join(want, "|") {
		tb.Fatalf("stream holds %q, want %q", got, want)
	}
}

func TestStart_JetStreamOverTCPAndInProcess(t *testing.T) {
	s := start(t, t.TempDir(), "127.0.0.1:0")
	if !strings.HasPrefix(s.ClientURL(), "nats://127.0.0.1:") || strings.HasSuffix(s.ClientURL(), ":0") {
		t.Fatalf("ClientURL = %q, want nats://127.0.0.1:<port>", s.ClientURL())
	}
	overTCP := connect(t, s.ClientURL())
	createStream(t, overTCP)
	inProcess := connect(t, "", s.InProcess())
	publish(t, inProcess, "ledger.a", "1")
	publish(t, overTCP, "ledger.b", "2")
	wantMessages(t, readAll(t, overTCP), "ledger.a 1", "ledger.b 2")

	// A subscriber over TCP gets what is published in-process.
	consumer, err := overTCP.CreateOrUpdateConsumer(t.Context(), "LEDGER", jetstream.ConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		t.Fatalf("create consumer: %v", err)
	}
	publish(t, inProcess, "ledger.c", "3")
	msg, err := consumer.Next(jetstream.FetchMaxWait(10 * time.Second))
	if err != nil {
		t.Fatalf("next message: %v", err)
	}
	if msg.Subject() != "ledger.c" || string(msg.Data()) != "3" {
		t.Fatalf("consumer got %s %q, want ledger.c 3", msg.Subject(), msg.Data())
	}
}

func TestStart_StreamsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	first, err := embeddednats.Start(t.Context(), embeddednats.Config{StoreDir: dir, Listen: "127.0.0.1:0", Logger: quiet})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	js := connect(t, first.ClientURL())
	createStream(t, js)
	publish(t, js, "ledger.kept", "before restart")
	first.Shutdown()

	again := start(t, dir, "127.0.0.1:0")
	js = connect(t, again.ClientURL())
	wantMessages(t, readAll(t, js), "ledger.kept before restart")
	publish(t, js, "ledger.kept", "after restart")
	wantMessages(t, readAll(t, js), "ledger.kept before restart", "ledger.kept after restart")
}

func TestStart_PortTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer ln.Close()
	taken := ln.Addr().String()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, err = embeddednats.Start(ctx, embeddednats.Config{StoreDir: t.TempDir(), Listen: taken, Logger: quiet})
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("start on a taken port: err = %v, want EADDRINUSE", err)
	}
	want := "embedded NATS: listen " + taken + ": address already in use; set --nats-listen or LEDGER_NATS_LISTEN"
	if err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
}

func TestStart_StoreDirInUse(t *testing.T) {
	dir := t.TempDir()
	first := start(t, dir, "127.0.0.1:0")
	_, err := embeddednats.Start(t.Context(), embeddednats.Config{StoreDir: dir, Listen: "127.0.0.1:0", Logger: quiet})
	if err == nil || !strings.Contains(err.Error(), "in use by another running ledgerd") {
		t.Fatalf("second server on the same store: err = %v, want the store in use", err)
	}
	first.Shutdown()
	start(t, dir, "127.0.0.1:0") // free again
}

func TestStart_RejectsBadAddress(t *testing.T) {
	for _, listen := range []string{"127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000"} {
		if _, err := embeddednats.Start(t.Context(), embeddednats.Config{StoreDir: t.TempDir(), Listen: listen, Logger: quiet}); err == nil {
			t.Errorf("start on %q succeeded", listen)
		}
	}
}
