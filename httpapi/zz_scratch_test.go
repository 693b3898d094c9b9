package httpapi_test

import (
	"fmt"
	"context"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"

	"github.com/resolutionflow/ledgerd/commands"
	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/eventstore/pgstore"
	"github.com/resolutionflow/ledgerd/idempotency"
	"github.com/resolutionflow/ledgerd/internal/pgtest"
	"github.com/resolutionflow/ledgerd/leader"
	"github.com/resolutionflow/ledgerd/projections"
	"github.com/resolutionflow/ledgerd/projections/pgviews"
)

type stat struct{ n, ns, items atomic.Int64 }

func (s *stat) add(d time.Duration, items int) { s.n.Add(1); s.ns.Add(int64(d)); s.items.Add(int64(items)) }
func (s *stat) String(name string) string {
	n := s.n.Load()
	if n == 0 {
		return name + ": none"
	}
	return name + ": n=" + itoa(n) + " avg=" + time.Duration(s.ns.Load()/n).String() + " items/op=" + ftoa(float64(s.items.Load())/float64(n))
}

var stReadAll, stHead, stUpdate, stWait, stExec, stReserve, stComplete, stAppend, stReadStream stat

type timedLog struct{ *pgstore.Store }

func (l timedLog) ReadAll(ctx context.Context, after int64, limit int) ([]eventstore.Event, error) {
	t := time.Now()
	_, _ = l.Store.Head(ctx)
	stHead.add(time.Since(t), 0)
	t = time.Now()
	ev, err := l.Store.ReadAll(ctx, after, limit)
	stReadAll.add(time.Since(t), len(ev))
	return ev, err
}
func (l timedLog) Append(ctx context.Context, stream string, expected eventstore.ExpectedVersion, events []eventstore.NewEvent) ([]eventstore.Event, error) {
	t := time.Now()
	r, err := l.Store.Append(ctx, stream, expected, events)
	stAppend.add(time.Since(t), 1)
	return r, err
}
func (l timedLog) ReadStream(ctx context.Context, stream string) ([]eventstore.Event, error) {
	t := time.Now()
	r, err := l.Store.ReadStream(ctx, stream)
	stReadStream.add(time.Since(t), 1)
	return r, err
}

type timedViews struct{ *pgviews.Store }

func (v timedViews) Update(ctx context.Context, name string, from, to int64, fn func(projections.Tx) error) error {
	t := time.Now()
	err := v.Store.Update(ctx, name, from, to, fn)
	stUpdate.add(time.Since(t), 0)
	return err
}

type timedWaiter struct{ *projections.Projector }

func (w timedWaiter) WaitFor(ctx context.Context, p int64) error {
	t := time.Now()
	err := w.Projector.WaitFor(ctx, p)
	stWait.add(time.Since(t), 0)
	return err
}

type timedIdem struct{ idempotency.Store }

func (s timedIdem) Reserve(ctx context.Context, user uuid.UUID, key, h string) (idempotency.Record, bool, error) {
	t := time.Now()
	a, b, c := s.Store.Reserve(ctx, user, key, h)
	stReserve.add(time.Since(t), 0)
	return a, b, c
}
func (s timedIdem) Complete(ctx context.Context, user uuid.UUID, key string, st int, body []byte) error {
	t := time.Now()
	err := s.Store.Complete(ctx, user, key, st, body)
	stComplete.add(time.Since(t), 0)
	return err
}

func BenchmarkScratch(b *testing.B) {
	cfg, _ := pgxpool.ParseConfig(pgtest.NewDatabase(b))
	cfg.MaxConns = benchPoolSize
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	events := pgstore.New(pool)
	views := pgviews.New(pool)
	projector := projections.NewProjector(timedLog{events}, timedViews{views}, leader.NewPostgres(pool, logger), events.Appended, logger)
	runInBackground(b, projector.Run)
	be := Backend{Log: events, Commands: commands.NewHandler(timedLog{events}, timedWaiter{projector}), Queries: views, Idempotency: timedIdem{idempotency.NewPostgres(pool)}}
	s := startServer(b, func(testing.TB) Backend { return be })
	b.Run("escalate", func(b *testing.B) {
		for _, st := range []*stat{&stReadAll, &stHead, &stUpdate, &stWait, &stReserve, &stComplete, &stAppend, &stReadStream} {
			st.n.Store(0); st.ns.Store(0); st.items.Store(0)
		}
		tm := newTeam()
		auths := make([]string, benchClients)
		for i := range auths {
			auths[i] = "Bearer " + token(b, tm.user(domain.RoleEngineer))
		}
		runClients(b, func(ctx context.Context, client int) error {
			r := request{method: http.MethodPost, path: createPath(uuid.New()), body: benchBody, auth: auths[client]}
			_ = ulid.Make; return s.expect(ctx, r, http.StatusCreated)
		})
		b.Log(stHead.String("head"), "\n", stReadAll.String("readall"), "\n", stUpdate.String("update"), "\n", stWait.String("waitfor"), "\n",
			stReserve.String("reserve"), "\n", stComplete.String("complete"), "\n", stAppend.String("append"), "\n", stReadStream.String("readstream"))
	})
}

func itoa(n int64) string   { return fmtSprint(n) }
func ftoa(f float64) string { return fmtSprint(f) }
var fmtSprint = fmt.Sprint
