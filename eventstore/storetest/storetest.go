// Package storetest is the conformance suite of eventstore.Store: one set of
// tests that every store (PostgreSQL, SQLite) must pass, so that the ledger
// behaves the same on each. A store's own tests call Run, and
// RunImmutability with raw access to its database.
package storetest

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/resolutionflow/ledgerd/eventstore"
)

// Run runs the conformance suite twice: on the store's Append, then on its
// AppendQuick, through quickAppends. open must return a new, empty store
// each time it is called, closed when its test ends.
func Run(t *testing.T, open func(t *testing.T) eventstore.Store) {
	t.Run("Append", func(t *testing.T) { run(t, open) })
	t.Run("AppendQuick", func(t *testing.T) {
		run(t, func(t *testing.T) eventstore.Store { return quickAppends{open(t)} })
	})
}

func run(t *testing.T, open func(t *testing.T) eventstore.Store) {
	cases := []struct {
		name string
		test func(*testing.T, eventstore.Store)
	}{
		{"AppendAndReadStream", testAppendAndReadStream},
		{"ExpectedVersion", testExpectedVersion},
		{"AppendIsAllOrNothing", testAppendIsAllOrNothing},
		{"ReusedEventIDIsNotAConflict", testReusedEventIDIsNotAConflict},
		{"EventIDs", testEventIDs},
		{"DataAndMetadataRoundTrip", testDataAndMetadataRoundTrip},
		{"RecordedAt", testRecordedAt},
		{"ReadAllOrderAfterAndLimit", testReadAllOrderAfterAndLimit},
		{"ConcurrentExactAppendsOneWinnerPerVersion", testConcurrentExactAppends},
		{"ConcurrentAnyAppendsLoseNothing", testConcurrentAnyAppends},
		{"ConcurrentStreamsAllSucceed", testConcurrentStreams},
		{"TailingReadAllSkipsNothing", testTailingReadAll},
		{"ReadStreamAfter", testReadStreamAfter},
		{"Snapshots", testSnapshots},
		{"HashChain", testHashChain},
		{"StoresBytesAsGiven", testStoresBytesAsGiven},
		{"ReadAccount", testReadAccount},
		{"TailingReadAccountSkipsNothing", testTailingReadAccount},
		{"BatchWithConflictingRows", testBatchWithConflictingRows},
		{"DataKeys", testDataKeys},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.test(t, open(t)) })
	}
}

// quickAppends is a store whose Append goes through AppendQuick, so that
// the suite checks AppendQuick does all Append does. The events it returns
// are read back from their stream: by version when the append expected
// one, and by id when it expected Any (it gives each such event an id).
type quickAppends struct{ eventstore.Store }

func (q quickAppends) Append(ctx context.Context, stream string, expected eventstore.ExpectedVersion, events []eventstore.NewEvent, opts ...eventstore.AppendOption) ([]eventstore.Event, error) {
	if len(events) == 0 {
		return nil, q.AppendQuick(ctx, stream, expected, events, opts...)
	}
	if expected == eventstore.Any {
		events = slices.Clone(events)
		for i := range events {
			if events[i].ID == "" {
				events[i].ID = ulid.Make().String()
			}
		}
	}
	if err := q.AppendQuick(ctx, stream, expected, events, opts...); err != nil {
		return nil, err
	}
	all, err := q.ReadStream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("read back the append: %w", err)
	}
	if expected != eventstore.Any {
		from := int(expected)
		if len(all) < from+len(events) {
			return nil, fmt.Errorf("stream %q has %d events after appending %d expecting %s", stream, len(all), len(events), expected)
		}
		return all[from : from+len(events)], nil
	}
	recorded := make([]eventstore.Event, 0, len(events))
	for _, e := range events {
		i := slices.IndexFunc(all, func(r eventstore.Event) bool { return r.ID == e.ID })
		if i < 0 {
			return nil, fmt.Errorf("appended event %s is not in stream %q", e.ID, stream)
		}
		recorded = append(recorded, all[i])
	}
	return recorded, nil
}

// Exec runs one SQL statement on a store's database, past the store.
type Exec func(ctx context.Context, query string) error

// RunImmutability checks that the database itself refuses to change or
// remove recorded events: UPDATE and DELETE on the events table, and each
// of extra (statements of the store's dialect, such as TRUNCATE), must fail
// and leave the log as it was. open returns a new, empty store and a way to
// run SQL on its database with the rights the service has.
func RunImmutability(t *testing.T, open func(t *testing.T) (eventstore.Store, Exec), extra ...string) {
	s, exec := open(t)
	ctx := t.Context()
	// The statements below must fail because of the events table, not
	// because exec cannot write at all.
	for _, q := range []string{`CREATE TABLE storetest_writable (n integer)`, `INSERT INTO storetest_writable (n) VALUES (1)`} {
		if err := exec(ctx, q); err != nil {
			t.Fatalf("%s: %v; exec must be able to write to the database", q, err)
		}
	}
	mustAppend(t, s, "immutable-a", eventstore.NoStream, newEvents("Parked", 2)...)
	mustAppend(t, s, "immutable-b", eventstore.NoStream, newEvents("Escalated", 1)...)
	before := ReadLog(t, s, 0)
	statements := append([]string{
		`UPDATE events SET data = '{"tampered": true}'`,
		`UPDATE events SET type = 'Tampered' WHERE version = 1`,
		`UPDATE events SET stream = 'elsewhere' WHERE stream = 'immutable-b'`,
		`DELETE FROM events WHERE version = 2`,
		`DELETE FROM events`,
	}, extra...)
	for _, q := range statements {
		if err := exec(ctx, q); err == nil {
			t.Errorf("%s: succeeded, want the database to refuse it", q)
		}
		assertSameEvents(t, q, ReadLog(t, s, 0), before)
	}
}

// newEvents returns n events of one type, each with distinct data.
func newEvents(typ string, n int) []eventstore.NewEvent {
	events := make([]eventstore.NewEvent, n)
	for i := range events {
		events[i] = eventstore.NewEvent{Type: typ, Data: json.RawMessage(fmt.Sprintf(`{"n": %d}`, i))}
	}
	return events
}

func mustAppend(tb testing.TB, s eventstore.Store, stream string, expected eventstore.ExpectedVersion, events ...eventstore.NewEvent) []eventstore.Event {
	tb.Helper()
	recorded, err := s.Append(tb.Context(), stream, expected, events)
	if err != nil {
		tb.Fatalf("append %d events to %q expecting %s: %v", len(events), stream, expected, err)
	}
	if len(recorded) != len(events) {
		tb.Fatalf("append %d events to %q returned %d", len(events), stream, len(recorded))
	}
	return recorded
}

func mustReadStream(tb testing.TB, s eventstore.Store, stream string) []eventstore.Event {
	tb.Helper()
	events, err := s.ReadStream(tb.Context(), stream)
	if err != nil {
		tb.Fatalf("read stream %q: %v", stream, err)
	}
	return events
}

// ReadLog reads the log after position after, in pages, as a tailing
// reader does, until ReadAll has nothing more, and checks that each page
// continues after the last.
func ReadLog(tb testing.TB, s eventstore.Store, after int64) []eventstore.Event {
	tb.Helper()
	var all []eventstore.Event
	for {
		page, err := s.ReadAll(tb.Context(), after, 100)
		if err != nil {
			tb.Fatalf("read all after %d: %v", after, err)
		}
		if len(page) == 0 {
			return all
		}
		for _, e := range page {
			if e.Position <= after {
				tb.Fatalf("read all after %d returned position %d", after, e.Position)
			}
			all, after = append(all, e), e.Position
		}
	}
}

// assertConflict checks that err is the typed conflict of an append to
// stream expecting expected.
func assertConflict(tb testing.TB, err error, stream string, expected eventstore.ExpectedVersion) {
	tb.Helper()
	var conflict *eventstore.ConflictError
	if !errors.As(err, &conflict) {
		tb.Fatalf("append to %q expecting %s: err = %v, want *eventstore.ConflictError", stream, expected, err)
	}
	if !errors.Is(err, eventstore.ErrConflict) {
		tb.Errorf("errors.Is(%v, ErrConflict) = false", err)
	}
	if conflict.Stream != stream || conflict.Expected != expected {
		tb.Errorf("conflict = {Stream: %q, Expected: %s}, want {%q, %s}", conflict.Stream, conflict.Expected, stream, expected)
	}
}

// assertSameEvents compares events field by field, data as JSON values
// (a store may reformat the JSON text).
func assertSameEvents(tb testing.TB, what string, got, want []eventstore.Event) {
	tb.Helper()
	if len(got) != len(want) {
		tb.Fatalf("%s: %d events, want %d:\ngot  %s\nwant %s", what, len(got), len(want), describe(got), describe(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if !sameJSON(g.Data, w.Data) {
			tb.Errorf("%s: event %d data = %s, want %s", what, i, g.Data, w.Data)
		}
		if !g.RecordedAt.Equal(w.RecordedAt) {
			tb.Errorf("%s: event %d recorded at %s, want %s", what, i, g.RecordedAt.Format(time.RFC3339Nano), w.RecordedAt.Format(time.RFC3339Nano))
		}
		g.Data, w.Data, g.RecordedAt, w.RecordedAt = nil, nil, time.Time{}, time.Time{}
		if !reflect.DeepEqual(g, w) {
			tb.Errorf("%s: event %d = %+v, want %+v", what, i, g, w)
		}
	}
}

func describe(events []eventstore.Event) string {
	var b bytes.Buffer
	for _, e := range events {
		fmt.Fprintf(&b, "[%d %s@%d %s] ", e.Position, e.Stream, e.Version, e.Type)
	}
	return b.String()
}

func sameJSON(a, b []byte) bool {
	var x, y any
	return decodeJSON(a, &x) == nil && decodeJSON(b, &y) == nil && reflect.DeepEqual(x, y)
}

func decodeJSON(data []byte, v *any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	return dec.Decode(v)
}

// assertStreamsInLogOrder checks that the log holds each stream's events in
// version order, versions 1, 2, 3, ... with no gap, and positions rising.
func assertStreamsInLogOrder(tb testing.TB, log []eventstore.Event) {
	tb.Helper()
	versions := map[string]int64{}
	for i, e := range log {
		if i > 0 && e.Position <= log[i-1].Position {
			tb.Fatalf("position %d follows %d in the log", e.Position, log[i-1].Position)
		}
		versions[e.Stream]++
		if e.Version != versions[e.Stream] {
			tb.Fatalf("event at position %d is %q version %d, want version %d", e.Position, e.Stream, e.Version, versions[e.Stream])
		}
	}
}

func testAppendAndReadStream(t *testing.T, s eventstore.Store) {
	first := mustAppend(t, s, "orders-1", eventstore.NoStream, newEvents("Placed", 3)...)
	mustAppend(t, s, "orders-2", eventstore.NoStream, newEvents("Placed", 1)...)
	more := mustAppend(t, s, "orders-1", eventstore.Exact(3), newEvents("Shipped", 2)...)
	recorded := append(first, more...)
	for i, e := range recorded {
		if e.Stream != "orders-1" || e.Version != int64(i+1) {
			t.Errorf("recorded event %d is %q version %d, want %q version %d", i, e.Stream, e.Version, "orders-1", i+1)
		}
		if i > 0 && e.Position <= recorded[i-1].Position {
			t.Errorf("recorded event %d has position %d, not after %d", i, e.Position, recorded[i-1].Position)
		}
	}
	assertSameEvents(t, "read stream", mustReadStream(t, s, "orders-1"), recorded)
	if events := mustReadStream(t, s, "orders-3"); len(events) != 0 {
		t.Errorf("read unknown stream: %d events, want none", len(events))
	}
}

func testExpectedVersion(t *testing.T, s eventstore.Store) {
	cases := []struct {
		name     string
		existing int // events in the stream before the append
		expected eventstore.ExpectedVersion
		conflict bool
	}{
		{"NoStreamOnNewStream", 0, eventstore.NoStream, false},
		{"NoStreamOnExistingStream", 2, eventstore.NoStream, true},
		{"ExactZeroIsNoStream", 2, eventstore.Exact(0), true},
		{"ExactMatches", 2, eventstore.Exact(2), false},
		{"ExactTooLow", 3, eventstore.Exact(2), true},
		{"ExactTooHigh", 2, eventstore.Exact(3), true},
		{"ExactOnNewStream", 0, eventstore.Exact(1), true},
		{"AnyOnNewStream", 0, eventstore.Any, false},
		{"AnyOnExistingStream", 2, eventstore.Any, false},
	}
	// Stores may append one event in another way than several.
	for _, n := range []int{1, 2} {
		for _, c := range cases {
			t.Run(fmt.Sprintf("%s/%dEvents", c.name, n), func(t *testing.T) {
				testAppendExpecting(t, s, fmt.Sprintf("expect-%s-%d", c.name, n), c.existing, c.expected, c.conflict, n)
			})
		}
	}
	t.Run("BelowAnyIsInvalid", func(t *testing.T) {
		stream := "expect-below-any"
		before := mustAppend(t, s, stream, eventstore.NoStream, newEvents("Existing", 2)...)
		for _, v := range []int64{-2, -3} {
			if _, err := s.Append(t.Context(), stream, eventstore.Exact(v), newEvents("New", 1)); !errors.Is(err, eventstore.ErrInvalidExpectedVersion) {
				t.Errorf("append expecting version %d: %v, want ErrInvalidExpectedVersion", v, err)
			}
		}
		assertSameEvents(t, "stream after invalid appends", mustReadStream(t, s, stream), before)
	})
}

// testAppendExpecting appends n events to a stream of existing events
// expecting expected, and checks the outcome.
func testAppendExpecting(t *testing.T, s eventstore.Store, stream string, existing int, expected eventstore.ExpectedVersion, conflict bool, n int) {
	if existing > 0 {
		mustAppend(t, s, stream, eventstore.NoStream, newEvents("Existing", existing)...)
	}
	before := mustReadStream(t, s, stream)
	recorded, err := s.Append(t.Context(), stream, expected, newEvents("New", n))
	if conflict {
		assertConflict(t, err, stream, expected)
		assertSameEvents(t, "stream after conflict", mustReadStream(t, s, stream), before)
		return
	}
	if err != nil {
		t.Fatalf("append expecting %s to a stream of %d events: %v", expected, existing, err)
	}
	for i, e := range recorded {
		if want := int64(existing + i + 1); e.Version != want {
			t.Errorf("event %d got version %d, want %d", i, e.Version, want)
		}
	}
	after := mustReadStream(t, s, stream)
	assertSameEvents(t, "stream after append", after, append(before, recorded...))
	AssertChained(t, after)
}

func testAppendIsAllOrNothing(t *testing.T, s eventstore.Store) {
	id := ulid.Make().String()
	cases := []struct {
		name   string
		events []eventstore.NewEvent
	}{
		{"RepeatedIDInBatch", []eventstore.NewEvent{
			{ID: id, Type: "A", Data: json.RawMessage(`{}`)},
			{Type: "B", Data: json.RawMessage(`{}`)},
			{ID: id, Type: "C", Data: json.RawMessage(`{}`)},
		}},
		{"InvalidJSONLast", []eventstore.NewEvent{
			{Type: "A", Data: json.RawMessage(`{}`)},
			{Type: "B", Data: json.RawMessage(`{"unterminated": `)},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			stream := "atomic-" + c.name
			if _, err := s.Append(t.Context(), stream, eventstore.NoStream, c.events); err == nil {
				t.Fatal("append succeeded, want an error")
			}
			if events := mustReadStream(t, s, stream); len(events) != 0 {
				t.Fatalf("failed append left %d events: %s", len(events), describe(events))
			}
			// The stream is still new: nothing half-written holds version 1.
			recorded := mustAppend(t, s, stream, eventstore.NoStream, newEvents("After", 1)...)
			if recorded[0].Version != 1 {
				t.Errorf("append after the failed one got version %d, want 1", recorded[0].Version)
			}
		})
	}
	for _, e := range ReadLog(t, s, 0) {
		if e.Type != "After" {
			t.Errorf("the log holds %q event %s from a failed append", e.Type, e.ID)
		}
	}
}

func testReusedEventIDIsNotAConflict(t *testing.T, s eventstore.Store) {
	taken := mustAppend(t, s, "ids-a", eventstore.NoStream, newEvents("A", 1)...)[0]
	_, err := s.Append(t.Context(), "ids-b", eventstore.NoStream, []eventstore.NewEvent{{ID: taken.ID, Type: "B", Data: json.RawMessage(`{}`)}})
	if err == nil {
		t.Fatal("append reusing another event's id succeeded")
	}
	if errors.Is(err, eventstore.ErrConflict) {
		t.Errorf("append reusing an event id: err = %v, want an error that is not a version conflict", err)
	}
	if events := mustReadStream(t, s, "ids-b"); len(events) != 0 {
		t.Errorf("failed append left %d events", len(events))
	}
}

func testEventIDs(t *testing.T, s eventstore.Store) {
	given := ulid.Make().String()
	recorded := mustAppend(t, s, "ids", eventstore.NoStream,
		eventstore.NewEvent{ID: given, Type: "Given", Data: json.RawMessage(`{}`)},
		eventstore.NewEvent{Type: "Made", Data: json.RawMessage(`{}`)},
		eventstore.NewEvent{Type: "Made", Data: json.RawMessage(`{}`)},
	)
	if recorded[0].ID != given {
		t.Errorf("given id became %q, want %q", recorded[0].ID, given)
	}
	for _, e := range recorded[1:] {
		if _, err := ulid.ParseStrict(e.ID); err != nil {
			t.Errorf("made id %q is not a ULID: %v", e.ID, err)
		}
	}
	if recorded[1].ID == recorded[2].ID {
		t.Errorf("two events got the same id %q", recorded[1].ID)
	}
	assertSameEvents(t, "read stream", mustReadStream(t, s, "ids"), recorded)

	// A given id is kept in the ULID's canonical form; one that is no
	// ULID fails the whole append.
	lower := strings.ToLower(ulid.Make().String())
	canonical := mustAppend(t, s, "ids-lower", eventstore.NoStream, eventstore.NewEvent{ID: lower, Type: "Given", Data: json.RawMessage(`{}`)})
	if want := strings.ToUpper(lower); canonical[0].ID != want {
		t.Errorf("given id %q became %q, want %q", lower, canonical[0].ID, want)
	}
	for _, bad := range []string{"not-a-ulid", "01JDJ00000000000000000000U", strings.Repeat("Z", 26)} {
		_, err := s.Append(t.Context(), "ids-bad", eventstore.NoStream, []eventstore.NewEvent{
			{Type: "Fine", Data: json.RawMessage(`{}`)},
			{ID: bad, Type: "Bad", Data: json.RawMessage(`{}`)},
		})
		if !errors.Is(err, eventstore.ErrInvalidEventID) {
			t.Errorf("append with id %q: %v, want ErrInvalidEventID", bad, err)
		}
	}
	if events := mustReadStream(t, s, "ids-bad"); len(events) != 0 {
		t.Errorf("appends with bad ids recorded %d events", len(events))
	}
}

func testDataAndMetadataRoundTrip(t *testing.T, s eventstore.Store) {
	full := eventstore.NewEvent{
		Type: "Escalated",
		Data: json.RawMessage(`{"notes": "VPN drops; tried MTU 1400 \"twice\" — ünïcödé ✓", "priority": "urgent", "n": 42, "ratio": 0.25, "tags": ["a", "b"], "nested": {"ok": true, "none": null}}`),
		Metadata: eventstore.Metadata{
			ActorID: "9a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d", AccountID: "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
			TeamID: "2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e", Role: "engineer",
			CorrelationID: "corr-1", CausationID: "cause-1", RequestID: "req-1",
			ClientRequestID: "client-req-1", ClientCorrelationID: "client-corr-1",
		},
	}
	bare := eventstore.NewEvent{Type: "Bare", Data: json.RawMessage(`[]`)}
	recorded := mustAppend(t, s, "round-trip", eventstore.NoStream, full, bare)
	for i, want := range []eventstore.NewEvent{full, bare} {
		if recorded[i].Type != want.Type || recorded[i].Metadata != want.Metadata || !sameJSON(recorded[i].Data, want.Data) {
			t.Errorf("append returned %+v, want type, data and metadata of %+v", recorded[i], want)
		}
	}
	assertSameEvents(t, "read stream", mustReadStream(t, s, "round-trip"), recorded)
	assertSameEvents(t, "read all", ReadLog(t, s, 0), recorded)
}

func testRecordedAt(t *testing.T, s eventstore.Store) {
	// A database server's clock may differ a little from the test's.
	const skew = time.Minute
	before := time.Now()
	recorded := mustAppend(t, s, "times", eventstore.NoStream, newEvents("Timed", 2)...)
	after := time.Now()
	for _, e := range recorded {
		if e.RecordedAt.Location() != time.UTC {
			t.Errorf("recorded at %s, want UTC", e.RecordedAt)
		}
		if e.RecordedAt.Before(before.Add(-skew)) || e.RecordedAt.After(after.Add(skew)) {
			t.Errorf("recorded at %s, want between %s and %s", e.RecordedAt, before.UTC(), after.UTC())
		}
	}
	read := mustReadStream(t, s, "times")
	assertSameEvents(t, "read stream", read, recorded)
	for _, e := range read {
		if e.RecordedAt.Location() != time.UTC {
			t.Errorf("read back recorded at %s, want UTC", e.RecordedAt)
		}
	}
}

func testReadAllOrderAfterAndLimit(t *testing.T, s eventstore.Store) {
	var log []eventstore.Event
	for _, a := range []struct {
		stream   string
		expected eventstore.ExpectedVersion
		n        int
	}{{"a", eventstore.NoStream, 2}, {"b", eventstore.NoStream, 1}, {"a", eventstore.Exact(2), 1}, {"c", eventstore.Any, 3}, {"b", eventstore.Exact(1), 2}} {
		log = append(log, mustAppend(t, s, a.stream, a.expected, newEvents("Logged", a.n)...)...)
	}
	ctx := t.Context()
	all, err := s.ReadAll(ctx, 0, 100)
	if err != nil {
		t.Fatalf("read all: %v", err)
	}
	assertSameEvents(t, "read all", all, log)
	assertStreamsInLogOrder(t, all)
	for k := range log {
		after := log[k].Position
		page, err := s.ReadAll(ctx, after, 2)
		if err != nil {
			t.Fatalf("read all after %d: %v", after, err)
		}
		assertSameEvents(t, fmt.Sprintf("read all after %d limit 2", after), page, log[k+1:min(k+3, len(log))])
	}
	first, err := s.ReadAll(ctx, 0, 1)
	if err != nil {
		t.Fatalf("read all limit 1: %v", err)
	}
	assertSameEvents(t, "read all limit 1", first, log[:1])
}

// rounds and writers size the races; each round starts every writer at
// once.
const (
	rounds  = 40
	writers = 16
)

type appendResult struct {
	events []eventstore.Event
	err    error
}

// race calls appendOne from n goroutines released together and returns
// their results in goroutine order.
func race(n int, appendOne func(w int) ([]eventstore.Event, error)) []appendResult {
	results := make([]appendResult, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for w := range n {
		wg.Go(func() {
			<-start
			results[w].events, results[w].err = appendOne(w)
		})
	}
	close(start)
	wg.Wait()
	return results
}

func testConcurrentExactAppends(t *testing.T, s eventstore.Store) {
	const stream = "contended"
	ctx := t.Context()
	var winners []eventstore.Event
	for round := range rounds {
		expected := eventstore.Exact(int64(round))
		results := race(writers, func(w int) ([]eventstore.Event, error) {
			return s.Append(ctx, stream, expected, []eventstore.NewEvent{{Type: "Raced", Data: json.RawMessage(fmt.Sprintf(`{"round": %d, "writer": %d}`, round, w))}})
		})
		var won []eventstore.Event
		for _, r := range results {
			if r.err != nil {
				assertConflict(t, r.err, stream, expected)
				continue
			}
			won = append(won, r.events...)
		}
		if len(won) != 1 {
			t.Fatalf("round %d: %d appends expecting %s succeeded, want exactly 1", round, len(won), expected)
		}
		if won[0].Version != int64(round+1) {
			t.Fatalf("round %d: winner got version %d, want %d", round, won[0].Version, round+1)
		}
		winners = append(winners, won[0])
	}
	assertSameEvents(t, "stream after the races", mustReadStream(t, s, stream), winners)
	assertSameEvents(t, "log after the races", ReadLog(t, s, 0), winners)
	AssertChained(t, winners)
}

func testConcurrentAnyAppends(t *testing.T, s eventstore.Store) {
	const (
		stream  = "shared"
		writers = 8
		appends = 25
		batch   = 2
	)
	ctx := t.Context()
	results := race(writers, func(w int) ([]eventstore.Event, error) {
		var mine []eventstore.Event
		for i := range appends {
			events := newEvents(fmt.Sprintf("Writer%dAppend%d", w, i), batch)
			recorded, err := s.Append(ctx, stream, eventstore.Any, events)
			if err != nil {
				return mine, fmt.Errorf("writer %d append %d: %w", w, i, err)
			}
			mine = append(mine, recorded...)
		}
		return mine, nil
	})
	byVersion := map[int64]eventstore.Event{}
	for _, r := range results {
		if r.err != nil {
			t.Fatalf("append expecting any: %v", r.err)
		}
		for i := 0; i < len(r.events); i += batch {
			first, second := r.events[i], r.events[i+1]
			if second.Version != first.Version+1 {
				t.Errorf("one append got versions %d and %d, want consecutive", first.Version, second.Version)
			}
		}
		for _, e := range r.events {
			if prev, dup := byVersion[e.Version]; dup {
				t.Fatalf("version %d given to %s and %s", e.Version, prev.Type, e.Type)
			}
			byVersion[e.Version] = e
		}
	}
	stored := mustReadStream(t, s, stream)
	want := make([]eventstore.Event, len(byVersion))
	for v, e := range byVersion {
		if v < 1 || v > int64(len(want)) {
			t.Fatalf("version %d out of 1..%d", v, len(want))
		}
		want[v-1] = e
	}
	if len(want) != writers*appends*batch {
		t.Fatalf("%d events appended, want %d", len(want), writers*appends*batch)
	}
	assertSameEvents(t, "stream after concurrent appends", stored, want)
	AssertChained(t, stored)
}

func testConcurrentStreams(t *testing.T, s eventstore.Store) {
	const appends = 10
	ctx := t.Context()
	results := race(writers, func(w int) ([]eventstore.Event, error) {
		return appendInTurn(ctx, s, fmt.Sprintf("own-%d", w), appends)
	})
	var want []eventstore.Event
	for _, r := range results {
		if r.err != nil {
			t.Fatalf("append to an uncontended stream: %v", r.err)
		}
		assertSameEvents(t, "stream "+r.events[0].Stream, mustReadStream(t, s, r.events[0].Stream), r.events)
		want = append(want, r.events...)
	}
	log := ReadLog(t, s, 0)
	assertStreamsInLogOrder(t, log)
	slices.SortFunc(want, byPosition)
	assertSameEvents(t, "log after concurrent appends", log, want)
	AssertChained(t, log)
}

// appendInTurn appends n events one at a time to a stream of its own,
// each expecting the version the previous one left.
func appendInTurn(ctx context.Context, s eventstore.Store, stream string, n int) ([]eventstore.Event, error) {
	var mine []eventstore.Event
	for i := range n {
		recorded, err := s.Append(ctx, stream, eventstore.Exact(int64(i)), newEvents("Own", 1))
		if err != nil {
			return mine, fmt.Errorf("append %d to %q: %w", i, stream, err)
		}
		mine = append(mine, recorded...)
	}
	return mine, nil
}

func testTailingReadAll(t *testing.T, s eventstore.Store) {
	testTailing(t, s, s.ReadAll, func(w int) string { return fmt.Sprintf("tailed-%d", w) }, func(int) bool { return true })
}

// testTailing checks that a reader tailing the log with read while
// writers append sees exactly the events it should, in position order:
// writer w appends to stream(w), and its events are read when read(w).
func testTailing(t *testing.T, s eventstore.Store, read func(ctx context.Context, after int64, limit int) ([]eventstore.Event, error), stream func(w int) string, isRead func(w int) bool) {
	const appends = 15
	ctx := t.Context()
	var (
		writing = make(chan struct{})
		tailed  = make(chan struct{})
		seen    []eventstore.Event
		tailErr error
	)
	go func() {
		defer close(tailed)
		var after int64
		for {
			// Checked before the read: a read that starts once the writers
			// are done must find everything they appended.
			done := isClosed(writing)
			page, err := read(ctx, after, 7)
			if err != nil {
				tailErr = fmt.Errorf("read after %d: %w", after, err)
				return
			}
			if len(page) == 0 && done {
				return
			}
			seen = append(seen, page...)
			if len(page) > 0 {
				after = page[len(page)-1].Position
			}
		}
	}()
	results := race(writers, func(w int) ([]eventstore.Event, error) {
		return appendInTurn(ctx, s, stream(w), appends)
	})
	close(writing)
	<-tailed
	if tailErr != nil {
		t.Fatalf("tail: %v", tailErr)
	}
	var want []eventstore.Event
	for w, r := range results {
		if r.err != nil {
			t.Fatalf("append while tailing: %v", r.err)
		}
		if isRead(w) {
			want = append(want, r.events...)
		}
	}
	slices.SortFunc(want, byPosition)
	assertStreamsInLogOrder(t, seen)
	assertSameEvents(t, "events seen by a tailing reader", seen, want)
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func byPosition(a, b eventstore.Event) int { return cmp.Compare(a.Position, b.Position) }
