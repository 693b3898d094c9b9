package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/commands"
	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/eventstore/pgstore"
	"github.com/resolutionflow/ledgerd/httpapi"
	"github.com/resolutionflow/ledgerd/internal/pgtest"
	"github.com/resolutionflow/ledgerd/internal/sqlitetest"
)

func TestReplay_Postgres(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	testReplay(t, pgstore.New(pgtest.Pool(t, url, 2)), "--database-url", url, "--master-key-file", masterKeyFileFor(t))
}

func TestReplay_SQLite(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	testReplay(t, sqlitetest.OpenAt(t, filepath.Join(dir, sqliteFile)), "--data-dir", dir)
}

// testReplay records a session's history through the command handler,
// with other streams around it, and checks that `ledgerd replay` prints
// exactly the session's events, each with the state the commands left,
// and that --as-of cuts the stream.
func testReplay(t *testing.T, log eventstore.Store, storage ...string) {
	ctx := t.Context()
	h := commands.NewHandler(log, nil)
	account, team, session := uuid.New(), uuid.New(), uuid.New()
	alice := domain.Actor{UserID: uuid.New(), AccountID: account, TeamID: team, Role: domain.RoleEngineer}
	bob := domain.Actor{UserID: uuid.New(), AccountID: account, TeamID: team, Role: domain.RoleAdmin}
	create := func(intent domain.Intent, priority domain.Priority) domain.CreateHandoff {
		return domain.CreateHandoff{HandoffID: uuid.New(), Intent: intent, Notes: string(intent) + " notes", Priority: priority, At: h.Now()}
	}
	execute := func(actor domain.Actor, session uuid.UUID, cmd domain.Command) domain.Handoff {
		t.Helper()
		res, err := h.Execute(ctx, actor, session, cmd, commands.Trace{RequestID: uuid.NewString()})
		if err != nil {
			t.Fatalf("execute %T: %v", cmd, err)
		}
		return res.Handoff
	}
	withActor := func(actor domain.Actor, c domain.CreateHandoff) domain.CreateHandoff {
		c.Actor = actor
		return c
	}

	// The session's handoffs after each event, newest first, and its holder.
	type state struct {
		handoffs []domain.Handoff
		holder   uuid.UUID
		skipped  bool
	}
	var want []state
	var current []domain.Handoff
	record := func(hd domain.Handoff, holder domain.Actor) {
		if i := slices.IndexFunc(current, func(c domain.Handoff) bool { return c.ID == hd.ID }); i >= 0 {
			current[i] = hd
		} else {
			current = append([]domain.Handoff{hd}, current...)
		}
		want = append(want, state{handoffs: slices.Clone(current), holder: holder.UserID})
	}
	first := execute(alice, session, withActor(alice, create(domain.IntentEscalate, domain.PriorityHigh)))
	record(first, alice)
	// Another session of the account, and the same session id in another
	// account, have streams of their own.
	execute(alice, uuid.New(), withActor(alice, create(domain.IntentPark, domain.PriorityLow)))
	stranger := domain.Actor{UserID: uuid.New(), AccountID: uuid.New(), TeamID: uuid.New(), Role: domain.RoleOwner}
	execute(stranger, session, withActor(stranger, create(domain.IntentPark, domain.PriorityLow)))
	record(execute(bob, session, domain.ClaimHandoff{Actor: bob, HandoffID: first.ID, At: h.Now()}), bob)
	parked := execute(bob, session, withActor(bob, create(domain.IntentPark, domain.PriorityUrgent)))
	record(parked, bob)
	record(execute(bob, session, domain.WithdrawHandoff{Actor: bob, HandoffID: parked.ID, At: h.Now()}), bob)
	record(execute(bob, session, withActor(bob, create(domain.IntentEscalate, domain.PriorityLow))), bob)
	// A poison event, which the fold passes over as the projector does.
	_, err := log.Append(ctx, eventcodec.StreamName(account, session), eventstore.Exact(int64(len(want))),
		[]eventstore.NewEvent{{Type: domain.TypeHandoffClaimed, Data: json.RawMessage(`{"handoff_id": 42}`)}})
	if err != nil {
		t.Fatalf("append a poison event: %v", err)
	}
	want = append(want, state{handoffs: current, holder: bob.UserID, skipped: true})

	events, err := log.ReadStream(ctx, eventcodec.StreamName(account, session))
	if err != nil {
		t.Fatalf("read the stream: %v", err)
	}
	if len(events) != len(want) {
		t.Fatalf("stream has %d events, want %d", len(events), len(want))
	}
	args := append([]string{"replay", "--account", strings.ToUpper(account.String()), "--session", session.String()}, storage...)

	lines := replayLines(t, args...)
	if len(lines) != len(events) {
		t.Fatalf("replay printed %d lines, want %d", len(lines), len(events))
	}
	for i, line := range lines {
		if got, want := mustJSON(t, line.Event), mustJSON(t, events[i]); !bytes.Equal(got, want) {
			t.Errorf("line %d: envelope\n%s\nwant\n%s", i+1, got, want)
		}
		wantState := replayState{Version: int64(i + 1), Holder: &want[i].holder, Handoffs: httpapi.HandoffsJSON(want[i].handoffs)}
		if got, want := mustJSON(t, line.State), mustJSON(t, wantState); !bytes.Equal(got, want) {
			t.Errorf("line %d: state\n%s\nwant\n%s", i+1, got, want)
		}
		if skipped := line.Skipped != ""; skipped != want[i].skipped {
			t.Errorf("line %d: skipped %q, want skipped %v", i+1, line.Skipped, want[i].skipped)
		}
	}

	// --as-of cuts the stream after the last event recorded by then.
	for _, cut := range []struct {
		at   time.Time
		want int
	}{
		{events[0].RecordedAt.Add(-time.Microsecond), 0},
		{events[0].RecordedAt, 1},
		{events[2].RecordedAt.In(time.FixedZone("", -5*60*60)), 3},
		{events[3].RecordedAt.Add(-time.Microsecond), 3},
		{time.Now().Add(time.Hour), len(events)},
	} {
		got := replayLines(t, append(args, "--as-of", cut.at.Format(time.RFC3339Nano))...)
		if len(got) != cut.want {
			t.Errorf("--as-of %s: %d lines, want %d", cut.at.Format(time.RFC3339Nano), len(got), cut.want)
			continue
		}
		for i, line := range got {
			if !bytes.Equal(mustJSON(t, line), mustJSON(t, lines[i])) {
				t.Errorf("--as-of %s: line %d differs from the full replay's", cut.at, i+1)
			}
		}
	}
}

// replayLines runs ledgerd with args and returns the lines it printed,
// each of which must hold exactly the fields of a replay line (skipped
// only for a poison event).
func replayLines(tb testing.TB, args ...string) []replayLine {
	tb.Helper()
	var stdout, stderr bytes.Buffer
	if err := run(tb.Context(), args, &stdout, &stderr); err != nil {
		tb.Fatalf("ledgerd %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	wantKeys := []string{"data", "id", "metadata", "position", "recorded_at", "state", "stream", "type", "version"}
	var lines []replayLine
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(sc.Bytes(), &fields); err != nil {
			tb.Fatalf("line %q: %v", sc.Text(), err)
		}
		keys := slices.DeleteFunc(slices.Sorted(maps.Keys(fields)), func(k string) bool { return k == "skipped" })
		if !slices.Equal(keys, wantKeys) {
			tb.Fatalf("line fields %v, want %v and perhaps skipped", keys, wantKeys)
		}
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		var line replayLine
		if err := dec.Decode(&line); err != nil {
			tb.Fatalf("line %q: %v", sc.Text(), err)
		}
		lines = append(lines, line)
	}
	return lines
}

func mustJSON(tb testing.TB, v any) []byte {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatalf("encode %T: %v", v, err)
	}
	return b
}

// TestReplay_RefusesBadArguments checks that replay refuses missing or
// malformed ids and times with a clear message and exit status 2,
// before it opens any store.
func TestReplay_RefusesBadArguments(t *testing.T) {
	t.Parallel()
	id := uuid.NewString()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--session", id}, "--account is required"},
		{[]string{"--account", id}, "--session is required"},
		{[]string{"--account", "acme", "--session", id}, `--account must be a UUID other than the nil UUID: "acme"`},
		{[]string{"--account", id, "--session", uuid.Nil.String()}, "--session must be a UUID other than the nil UUID"},
		{[]string{"--account", id, "--session", id, "--as-of", "yesterday"}, `--as-of must be an RFC 3339 time, such as 2026-01-02T15:04:05Z: "yesterday"`},
		{[]string{"--account", id, "--session", id, "--as-of", "2026-01-02T15:04:05"}, "--as-of must be an RFC 3339 time"},
		{[]string{"--account", id, "--session", id}, "no ledger in --data-dir"},
	} {
		dir := filepath.Join(t.TempDir(), "data")
		var stdout bytes.Buffer
		err := run(t.Context(), append([]string{"replay", "--data-dir", dir}, tc.args...), &stdout, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) || exitCode(err) != 2 {
			t.Errorf("replay %v = %v (exit %d), want an error saying %q and exit 2", tc.args, err, exitCode(err), tc.want)
		}
		if stdout.Len() > 0 {
			t.Errorf("replay %v printed %q", tc.args, stdout.String())
		}
		if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("replay %v made the data directory before checking its arguments: %v", tc.args, err)
		}
	}
}
