package embeddednats_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/resolutionflow/ledgerd/embeddednats"
	"github.com/resolutionflow/ledgerd/internal/natstest"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func start(tb testing.TB, dir, listen string) *embeddednats.Server {
	tb.Helper()
	s, err := embeddednats.Start(tb.Context(), embeddednats.Config{DataDir: dir, Listen: listen, Logger: quiet})
	if err != nil {
		tb.Fatalf("start: %v", err)
	}
	tb.Cleanup(s.Shutdown)
	return s
}

// clientURL returns the client URL the server keeps in the file name of
// dir, credentials included.
func clientURL(tb testing.TB, dir, name string) string {
	tb.Helper()
	url, err := embeddednats.ReadClientURL(dir, name)
	if err != nil {
		tb.Fatal(err)
	}
	return url
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
	dir := t.TempDir()
	s := start(t, dir, "127.0.0.1:0")
	if !strings.HasPrefix(s.ClientURL(), "nats://127.0.0.1:") || strings.HasSuffix(s.ClientURL(), ":0") {
		t.Fatalf("ClientURL = %q, want nats://127.0.0.1:<port>", s.ClientURL())
	}
	overTCP := natstest.JetStream(t, clientURL(t, dir, embeddednats.URLFile))
	createStream(t, overTCP)
	inProcess := natstest.JetStream(t, "", s.InProcess())
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
	first, err := embeddednats.Start(t.Context(), embeddednats.Config{DataDir: dir, Listen: "127.0.0.1:0", Logger: quiet})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	js := natstest.JetStream(t, clientURL(t, dir, embeddednats.URLFile))
	createStream(t, js)
	publish(t, js, "ledger.kept", "before restart")
	first.Shutdown()

	start(t, dir, "127.0.0.1:0")
	js = natstest.JetStream(t, clientURL(t, dir, embeddednats.URLFile))
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
	_, err = embeddednats.Start(ctx, embeddednats.Config{DataDir: t.TempDir(), Listen: taken, Logger: quiet})
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("start on a taken port: err = %v, want EADDRINUSE", err)
	}
	want := "embedded NATS: listen " + taken + ": address already in use; set --nats-listen or LEDGER_NATS_LISTEN"
	if err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
}

func TestStart_DataDirInUse(t *testing.T) {
	dir := t.TempDir()
	first := start(t, dir, "127.0.0.1:0")
	_, err := embeddednats.Start(t.Context(), embeddednats.Config{DataDir: dir, Listen: "127.0.0.1:0", Logger: quiet})
	if err == nil || !strings.Contains(err.Error(), "in use by another running ledgerd") {
		t.Fatalf("second server on the same store: err = %v, want the store in use", err)
	}
	first.Shutdown()
	start(t, dir, "127.0.0.1:0") // free again
}

func TestStart_RejectsBadAddress(t *testing.T) {
	for _, listen := range []string{"127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000"} {
		if _, err := embeddednats.Start(t.Context(), embeddednats.Config{DataDir: t.TempDir(), Listen: listen, Logger: quiet}); err == nil {
			t.Errorf("start on %q succeeded", listen)
		}
	}
}

func TestStart_RefusesAnonymousClients(t *testing.T) {
	dir := t.TempDir()
	s := start(t, dir, "127.0.0.1:0")
	for name, opts := range map[string][]nats.Option{
		"Anonymous":     nil,
		"WrongPassword": {nats.UserInfo(embeddednats.User, "guessed")},
		"UnknownUser":   {nats.UserInfo("admin", "admin")},
	} {
		t.Run(name, func(t *testing.T) {
			nc, err := nats.Connect(s.ClientURL(), opts...)
			if err == nil {
				nc.Close()
				t.Fatal("connected")
			}
			if !errors.Is(err, nats.ErrAuthorization) {
				t.Fatalf("connect: err = %v, want %v", err, nats.ErrAuthorization)
			}
		})
	}
}

// TestStart_KeepsClientURLs checks the URL files: only the owner may read
// them, they hold the address with a strong password that a restart
// keeps, and a restart on another port rewrites the address.
func TestStart_KeepsClientURLs(t *testing.T) {
	dir := t.TempDir()
	first, err := embeddednats.Start(t.Context(), embeddednats.Config{DataDir: dir, Listen: "127.0.0.1:0", Logger: quiet})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	passwords := map[string]string{}
	for name, user := range map[string]string{embeddednats.URLFile: embeddednats.User, embeddednats.ReaderURLFile: embeddednats.ReaderUser} {
		info, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if perm := info.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s has mode %04o, want 0600", name, perm)
		}
		u, err := url.Parse(clientURL(t, dir, name))
		if err != nil {
			t.Fatal(err)
		}
		pass, _ := u.User.Password()
		if want := strings.TrimPrefix(first.ClientURL(), "nats://"); u.Scheme != "nats" || u.Host != want || u.User.Username() != user || len(pass) < 64 {
			t.Errorf("%s holds %s, want nats://%s:<64 hex digits>@%s", name, u.Redacted(), user, want)
		}
		passwords[name] = pass
	}
	if passwords[embeddednats.URLFile] == passwords[embeddednats.ReaderURLFile] {
		t.Error("both users have one password")
	}
	first.Shutdown()

	again := start(t, dir, "127.0.0.1:0")
	for name, pass := range passwords {
		u, err := url.Parse(clientURL(t, dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if kept, _ := u.User.Password(); kept != pass || "nats://"+u.Host != again.ClientURL() {
			t.Errorf("after a restart %s holds %s, want the same password at %s", name, u.Redacted(), again.ClientURL())
		}
	}
	natstest.JetStream(t, clientURL(t, dir, embeddednats.URLFile))
}

func TestStart_RefusesAURLFileOthersMayRead(t *testing.T) {
	dir := t.TempDir()
	start(t, dir, "127.0.0.1:0").Shutdown()
	if err := os.Chmod(filepath.Join(dir, embeddednats.URLFile), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := embeddednats.Start(t.Context(), embeddednats.Config{DataDir: dir, Listen: "127.0.0.1:0", Logger: quiet})
	if err == nil || !strings.Contains(err.Error(), "accessible to others") {
		t.Fatalf("start with a URL file others may read: err = %v, want it refused", err)
	}
}

// TestStart_ReaderOnlyReads checks that the reader can follow a stream but
// not publish into it, nor change it, while the ledger's user can.
func TestStart_ReaderOnlyReads(t *testing.T) {
	dir := t.TempDir()
	start(t, dir, "127.0.0.1:0")
	ledger := natstest.JetStream(t, clientURL(t, dir, embeddednats.URLFile))
	if _, err := ledger.CreateStream(t.Context(), jetstream.StreamConfig{Name: "LEDGER", Subjects: []string{"handoff.>"}}); err != nil {
		t.Fatal(err)
	}
	publish(t, ledger, "handoff.a.s.HandoffClaimed", "by the ledger")

	reader := natstest.JetStream(t, clientURL(t, dir, embeddednats.ReaderURLFile))
	consumer, err := reader.OrderedConsumer(t.Context(), "LEDGER", jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("reader: ordered consumer: %v", err)
	}
	msg, err := consumer.Next(jetstream.FetchMaxWait(10 * time.Second))
	if err != nil || string(msg.Data()) != "by the ledger" {
		t.Fatalf("reader: next message: %v", err)
	}

	// The server answers a refused publish with an error to the client.
	refused := make(chan error, 4)
	nc, err := nats.Connect(clientURL(t, dir, embeddednats.ReaderURLFile), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		refused <- err
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for _, subject := range []string{"handoff.a.s.HandoffClaimed", "ledger.checkpoint", "$JS.API.STREAM.DELETE.LEDGER", "$JS.API.STREAM.PURGE.LEDGER"} {
		if err := nc.Publish(subject, []byte("forged")); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-refused:
			if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), subject) {
				t.Errorf("reader publishes on %s: error %v, want a permissions violation", subject, err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("reader published on %s: no permissions violation", subject)
		}
	}
	wantMessages(t, readAll(t, ledger), "handoff.a.s.HandoffClaimed by the ledger")
}
