package httpapi_test

import (
	"bufio"
	"context"
	"net/http"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/httpapi"
	"github.com/resolutionflow/ledgerd/internal/ledgertest"
)

func TestEventExport_HeapStaysFlat_SQLite(t *testing.T) { testExportHeap(t, newSQLiteBackend) }

func TestEventExport_HeapStaysFlat_Postgres(t *testing.T) { testExportHeap(t, newPostgresBackend) }

// exportEventSize is the size of the data of each event of the heap test:
// large, so that holding an export whole would show.
const exportEventSize = 4 << 10

// testExportHeap exports n and 4n events of 4 KiB and compares the peaks
// of the heap during each: an export that streams holds a chunk at a
// time, so the larger export's peak is no higher; one that held the whole
// export would have a peak four times as high above the heap it started
// from.
func testExportHeap(t *testing.T, nb NewBackend) {
	const n = 1000
	b := nb(t)
	b.StopProjector() // the events of this test are not handoffs
	s := serveBackend(t, b, func(*httpapi.Config) {})
	small, large := fillAccount(t, b.Log, n), fillAccount(t, b.Log, 4*n)

	// The heap grows only by what the export holds, and garbage is
	// collected early, so that what the export holds is what shows.
	defer debug.SetGCPercent(debug.SetGCPercent(10))
	smallPeak := exportPeak(t, s, small, n)
	largePeak := exportPeak(t, s, large, 4*n)
	t.Logf("heap peak above the start: %d KiB for %d events, %d KiB for %d", smallPeak>>10, n, largePeak>>10, 4*n)
	if largePeak > 2*smallPeak+1<<20 {
		t.Fatalf("the heap's peak grew with the export: %d KiB for %d events, %d KiB for %d", smallPeak>>10, n, largePeak>>10, 4*n)
	}
}

// fillAccount appends n events of exportEventSize to a new account and
// returns the account.
func fillAccount(tb testing.TB, log eventstore.Store, n int) uuid.UUID {
	tb.Helper()
	account := uuid.New()
	data := []byte(`{"pad":"` + strings.Repeat("x", exportEventSize) + `"}`)
	const batch = 100
	for i := 0; i < n; i += batch {
		events := make([]eventstore.NewEvent, min(batch, n-i))
		for j := range events {
			events[j] = eventstore.NewEvent{Type: "Padding", Data: data}
		}
		if _, err := log.Append(tb.Context(), eventcodec.StreamName(account, uuid.New()), eventstore.NoStream, events); err != nil {
			tb.Fatalf("append: %v", err)
		}
	}
	return account
}

// exportPeak exports an account's events, which must be want, reading
// them a line at a time, and returns how far the heap rose above where it
// started while it ran (sampled).
func exportPeak(tb testing.TB, s *apiServer, account uuid.UUID, want int) uint64 {
	tb.Helper()
	runtime.GC()
	start := heapObjects()
	var (
		peak    uint64
		done    = make(chan struct{})
		sampled sync.WaitGroup
	)
	sampled.Go(func() {
		for {
			peak = max(peak, heapObjects())
			select {
			case <-done:
				return
			case <-time.After(100 * time.Microsecond):
			}
		}
	})

	export(tb, s, account, want, func(int) {})
	close(done)
	sampled.Wait()
	return peak - min(peak, start)
}

// export exports an account's events, which must be want, reading them a
// line at a time and calling read after each line.
func export(tb testing.TB, s *apiServer, account uuid.UUID, want int, read func(line int)) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), requestTimeout)
	defer cancel()
	res := startExport(ctx, tb, s, account)
	defer res.Body.Close()
	lines := bufio.NewScanner(res.Body)
	lines.Buffer(make([]byte, 2*exportEventSize), 4*exportEventSize)
	got := 0
	for lines.Scan() {
		got++
		read(got)
	}
	if err := lines.Err(); err != nil || res.StatusCode != http.StatusOK || got != want {
		tb.Fatalf("export: status %d, %d lines, %v; want 200 and %d lines", res.StatusCode, got, err, want)
	}
}

// startExport asks an auditor's export of an account's events and returns
// the response, whose body the caller reads and closes.
func startExport(ctx context.Context, tb testing.TB, s *apiServer, account uuid.UUID) *http.Response {
	tb.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/events", nil)
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token(tb, domain.Actor{UserID: uuid.New(), AccountID: account, TeamID: uuid.New(), Role: domain.RoleAuditor}))
	req.Header.Set("Accept", "application/x-ndjson")
	res, err := s.client.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	return res
}

// TestEventExport_OutlastsTheWriteTimeout exports to a client that stops
// reading now and then, so that the export takes longer than the server's
// write timeout while no chunk of it does: each chunk gets a new deadline,
// so the export is not cut. The write timeout is sized from an export
// without pauses on this machine, so that a slow machine (or the race
// detector) cannot make one chunk outlast it.
func TestEventExport_OutlastsTheWriteTimeout(t *testing.T) {
	const events = 4000 // 16 MiB, more than the sockets' buffers hold
	b := newSQLiteBackend(t)
	b.StopProjector()
	account := fillAccount(t, b.Log, events)
	start := time.Now()
	export(t, serveBackend(t, b, func(*httpapi.Config) {}), account, events, func(int) {})
	writeTimeout := max(time.Second, 2*time.Since(start))

	// Four pauses of a quarter of the write timeout, 2 MiB (a chunk)
	// apart: at most two fall within one chunk's writes.
	s := serveBackend(t, b, func(cfg *httpapi.Config) { cfg.WriteTimeout = writeTimeout })
	start = time.Now()
	export(t, s, account, events, func(line int) {
		if line%500 == 250 && line < 2000 {
			time.Sleep(writeTimeout / 4)
		}
	})
	if took := time.Since(start); took < writeTimeout {
		t.Fatalf("the export took %v, less than the write timeout %v: the test proves nothing", took, writeTimeout)
	}
}

// TestEventExport_StopsWhenTheClientLeaves checks that an export whose
// client goes away after the first line stops, and says so.
func TestEventExport_StopsWhenTheClientLeaves(t *testing.T) {
	b := newSQLiteBackend(t)
	b.StopProjector()
	s := serveBackend(t, b, func(*httpapi.Config) {})
	account := fillAccount(t, b.Log, 4000)
	res := startExport(t.Context(), t, s, account)
	if _, err := bufio.NewReader(res.Body).ReadString('\n'); err != nil {
		t.Fatalf("read the first line: %v", err)
	}
	res.Body.Close()
	ledgertest.WaitUntil(t, 10*time.Second, "the export ends", func() bool {
		return strings.Contains(s.logs.String(), "export ended: client went away")
	})
}

// heapObjects is the size of the heap's objects, live or not yet swept.
func heapObjects() uint64 {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(sample)
	return sample[0].Value.Uint64()
}
