package main

import (
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/commands"
	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/eventstore/sqlitestore"
	"github.com/resolutionflow/ledgerd/httpapi"
	"github.com/resolutionflow/ledgerd/internal/ledgertest"
	"github.com/resolutionflow/ledgerd/internal/sqlitetest"
	"github.com/resolutionflow/ledgerd/projections"
	"github.com/resolutionflow/ledgerd/projections/sqliteviews"
	"github.com/resolutionflow/ledgerd/projections/storetest"
	"github.com/resolutionflow/ledgerd/shred"
)

// Sizes of the crash test.
const (
	crashWorkers      = 8
	crashCycles       = 3
	acksPerCycle      = 80
	commandsInSession = 6 // escalate, withdraw, escalate, ...
	crashSecret       = "crash-test-secret-0123456789abcdef"
	childStartTimeout = 30 * time.Second
)

// TestServe_EmbeddedSurvivesKill runs `ledgerd serve` on the embedded
// store as a child process, sends it escalations and withdrawals from
// several goroutines, and kills it with SIGKILL while they are in flight,
// cycle after cycle on the same data directory. After the last restart
// every acknowledged command must be in the history and in the log; the
// only other events allowed are those of the commands in flight at a kill,
// whole; every stream's versions and the log's positions are contiguous;
// the read models match the log and a rebuild reproduces them exactly.
func TestServe_EmbeddedSurvivesKill(t *testing.T) {
	bin := buildLedgerd(t)
	dataDir := filepath.Join(t.TempDir(), "ledger-data")
	account, team := uuid.New(), uuid.New()
	var sessions []*sessionLog
	for cycle := range crashCycles {
		c := startChild(t, bin, dataDir)
		logs, acked := c.driveUntilKilled(t, account, team)
		sessions = append(sessions, logs...)
		inFlight := 0
		for _, s := range logs {
			if s.inFlight != nil {
				inFlight++
			}
		}
		t.Logf("cycle %d: %d commands acknowledged, %d in flight at the kill", cycle, acked, inFlight)
	}

	c := startChild(t, bin, dataDir)
	checkHistories(t, c, sessions)
	store := sqlitetest.OpenAt(t, filepath.Join(dataDir, sqliteFile))
	checkLog(t, store, sessions)
	checkReadModels(t, store, dataDir, c, sessions)
	c.stop(t)
	checkRebuild(t, bin, dataDir, store)
}

// buildLedgerd builds this command into a temporary directory.
func buildLedgerd(tb testing.TB) string {
	tb.Helper()
	gotool, err := exec.LookPath("go")
	if err != nil {
		tb.Fatalf("the crash test builds ledgerd and needs the go tool: %v", err)
	}
	bin := filepath.Join(tb.TempDir(), "ledgerd")
	out, err := exec.CommandContext(tb.Context(), gotool, "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		tb.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// childEnv is the environment of a child: the embedded mode in dataDir,
// with nothing inherited that would choose PostgreSQL or an external NATS.
func childEnv(dataDir string, extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DATABASE_URL=") && !strings.HasPrefix(kv, "NATS_") && !strings.HasPrefix(kv, "LEDGER_") {
			env = append(env, kv)
		}
	}
	env = append(env, "LEDGER_DATA_DIR="+dataDir, "LEDGER_JWT_SECRET="+crashSecret, "LEDGER_NATS_LISTEN=127.0.0.1:0")
	return append(env, extra...)
}

// child is a `ledgerd serve` process.
type child struct {
	cmd    *exec.Cmd
	base   string
	log    string
	client *http.Client
	// exited is closed when the process has ended, with exitErr.
	exited  chan struct{}
	exitErr error
}

// startChild starts `ledgerd serve` on dataDir and waits until it answers
// /healthz. It is killed when the test ends, if it still runs.
func startChild(tb testing.TB, bin, dataDir string) *child {
	tb.Helper()
	addr := freeAddr(tb)
	c := &child{base: "http://" + addr, log: filepath.Join(tb.TempDir(), "serve.log"), exited: make(chan struct{})}
	logFile, err := os.Create(c.log)
	if err != nil {
		tb.Fatalf("create child log: %v", err)
	}
	defer logFile.Close()
	c.cmd = exec.Command(bin, "serve")
	c.cmd.Env = childEnv(dataDir, "LEDGER_HTTP_ADDR="+addr)
	c.cmd.Stdout, c.cmd.Stderr = logFile, logFile
	if err := c.cmd.Start(); err != nil {
		tb.Fatalf("start ledgerd serve: %v", err)
	}
	go func() {
		c.exitErr = c.cmd.Wait()
		close(c.exited)
	}()
	tb.Cleanup(func() {
		_ = c.cmd.Process.Kill() // fails when it has already ended
		<-c.exited
	})
	transport := &http.Transport{MaxIdleConnsPerHost: crashWorkers}
	tb.Cleanup(transport.CloseIdleConnections)
	c.client = &http.Client{Transport: transport, Timeout: 15 * time.Second}
	c.waitHealthy(tb)
	return c
}

func (c *child) waitHealthy(tb testing.TB) {
	tb.Helper()
	deadline := time.After(childStartTimeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := c.client.Get(c.base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-c.exited:
			tb.Fatalf("ledgerd serve exited before it was healthy: %v\n%s", c.exitErr, c.logs())
		case <-deadline:
			tb.Fatalf("ledgerd serve not healthy after %v\n%s", childStartTimeout, c.logs())
		case <-tick.C:
		}
	}
}

func (c *child) logs() string {
	out, err := os.ReadFile(c.log)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(out)
}

// stop ends the child with SIGTERM and checks that it exits cleanly.
func (c *child) stop(tb testing.TB) {
	tb.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		tb.Fatalf("SIGTERM: %v", err)
	}
	<-c.exited
	if c.exitErr != nil {
		tb.Fatalf("ledgerd serve exited with %v after SIGTERM\n%s", c.exitErr, c.logs())
	}
}

// command is one command a worker sent.
type command struct {
	action  string // "escalate" or "withdraw"
	handoff uuid.UUID
}

// sessionLog is what one worker did to one session: the commands
// acknowledged with a 2xx, in order, and the one in flight at the kill.
type sessionLog struct {
	actor    domain.Actor
	token    string
	session  uuid.UUID
	acked    []command
	inFlight *command
}

// driveUntilKilled has the workers send commands until acksPerCycle have
// been acknowledged, then kills the child with SIGKILL while they are still
// sending, and returns what they did.
func (c *child) driveUntilKilled(tb testing.TB, account, team uuid.UUID) ([]*sessionLog, int64) {
	tb.Helper()
	var (
		acked   atomic.Int64
		killed  atomic.Bool
		reached = make(chan struct{})
		wg      sync.WaitGroup
	)
	logs := make([][]*sessionLog, crashWorkers)
	errs := make([]error, crashWorkers)
	onAck := func() {
		if acked.Add(1) == acksPerCycle {
			close(reached)
		}
	}
	for w := range crashWorkers {
		actor := domain.Actor{UserID: uuid.New(), AccountID: account, TeamID: team, Role: domain.RoleEngineer}
		token, err := httpapi.SignToken([]byte(crashSecret), actor, time.Hour)
		if err != nil {
			tb.Fatalf("sign token: %v", err)
		}
		wg.Go(func() {
			logs[w], errs[w] = c.work(actor, token, onAck)
			if killed.Load() {
				errs[w] = nil // the kill ended the worker
			}
		})
	}
	stopped := make(chan struct{})
	go func() {
		wg.Wait()
		close(stopped)
	}()
	select {
	case <-reached:
	case <-stopped:
		tb.Fatalf("every worker stopped before the kill: %v\n%s", errors.Join(errs...), c.logs())
	case <-c.exited:
		tb.Fatalf("ledgerd serve exited under load: %v\n%s", c.exitErr, c.logs())
	}
	killed.Store(true)
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		tb.Fatalf("SIGKILL: %v", err)
	}
	<-c.exited
	<-stopped
	if err := errors.Join(errs...); err != nil {
		tb.Fatalf("before the kill: %v\n%s", err, c.logs())
	}
	return slices.Concat(logs...), acked.Load()
}

// work sends commands, session after session, until a request fails; it
// returns the sessions it touched and the failure.
func (c *child) work(actor domain.Actor, token string, onAck func()) ([]*sessionLog, error) {
	var logs []*sessionLog
	for {
		s := &sessionLog{actor: actor, token: token, session: uuid.New()}
		logs = append(logs, s)
		for step := range commandsInSession {
			cmd := command{action: "escalate"}
			if step%2 == 1 {
				cmd = command{action: "withdraw", handoff: s.acked[len(s.acked)-1].handoff}
			}
			s.inFlight = &cmd
			id, err := c.send(s, cmd)
			if err != nil {
				return logs, err
			}
			cmd.handoff = id
			s.acked, s.inFlight = append(s.acked, cmd), nil
			onAck()
		}
	}
}

// send posts one command and returns the id of the handoff it answered.
func (c *child) send(s *sessionLog, cmd command) (uuid.UUID, error) {
	path, body, want := fmt.Sprintf("/ai-sessions/%s/handoff", s.session), `{"intent":"escalate","engineer_notes":"crash test"}`, http.StatusCreated
	if cmd.action == "withdraw" {
		path, body, want = fmt.Sprintf("/ai-sessions/%s/handoffs/%s/withdraw", s.session, cmd.handoff), "", http.StatusOK
	}
	req, err := http.NewRequest(http.MethodPost, c.base+path, strings.NewReader(body))
	if err != nil {
		return uuid.Nil, err
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.client.Do(req)
	if err != nil {
		return uuid.Nil, fmt.Errorf("%s %s: %w", cmd.action, s.session, err)
	}
	defer resp.Body.Close()
	var h handoffBody
	err = json.NewDecoder(resp.Body).Decode(&h)
	if err != nil || resp.StatusCode != want {
		return uuid.Nil, fmt.Errorf("%s %s: status %d, want %d (body: %v)", cmd.action, s.session, resp.StatusCode, want, err)
	}
	return h.ID, nil
}

// handoffBody is the part of a handoff's JSON the test reads.
type handoffBody struct {
	ID     uuid.UUID `json:"id"`
	Status string    `json:"status"`
}

// history returns a session's history through the API, newest first.
func (c *child) history(tb testing.TB, s *sessionLog) []handoffBody {
	tb.Helper()
	req, err := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/ai-sessions/%s/handoffs", c.base, s.session), nil)
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := c.client.Do(req)
	if err != nil {
		tb.Fatalf("history of %s: %v", s.session, err)
	}
	defer resp.Body.Close()
	var hs []handoffBody
	if err := json.NewDecoder(resp.Body).Decode(&hs); err != nil || resp.StatusCode != http.StatusOK {
		tb.Fatalf("history of %s: status %d, %v", s.session, resp.StatusCode, err)
	}
	return hs
}

// checkHistories checks, through the restarted service, that every
// acknowledged command shows in its session's history: an acknowledged
// escalation as open, or withdrawn once its withdrawal was acknowledged or
// while that was in flight at the kill.
func checkHistories(tb testing.TB, c *child, sessions []*sessionLog) {
	tb.Helper()
	for _, s := range sessions {
		status := map[uuid.UUID]string{}
		for _, h := range c.history(tb, s) {
			status[h.ID] = h.Status
		}
		for _, cmd := range s.acked {
			if cmd.action != "escalate" {
				continue
			}
			withdrawal := command{action: "withdraw", handoff: cmd.handoff}
			want := "open"
			if slices.Contains(s.acked, withdrawal) {
				want = "withdrawn"
			}
			got, found := status[cmd.handoff]
			mayBeWithdrawn := s.inFlight != nil && *s.inFlight == withdrawal
			if !found || (got != want && !(mayBeWithdrawn && got == "withdrawn")) {
				tb.Errorf("session %s: acknowledged escalation %s shows as %q (found %v), want %q", s.session, cmd.handoff, got, found, want)
			}
		}
	}
}

// checkLog checks the log: each session's stream holds its acknowledged
// commands in order, then at most the event of the command in flight;
// versions run 1, 2, ...; positions run 1, 2, ... over the whole log, which
// holds no other events.
func checkLog(tb testing.TB, store *sqlitestore.Store, sessions []*sessionLog) {
	tb.Helper()
	all, err := store.ReadAll(tb.Context(), 0, 1<<20)
	if err != nil {
		tb.Fatalf("read the log: %v", err)
	}
	for i, e := range all {
		if e.Position != int64(i+1) {
			tb.Fatalf("event %d of the log has position %d: positions are not contiguous", i, e.Position)
		}
	}
	total, acked, inFlight := 0, 0, 0
	for _, s := range sessions {
		stream, err := store.ReadStream(tb.Context(), eventcodec.StreamName(s.actor.AccountID, s.session))
		if err != nil {
			tb.Fatalf("read stream: %v", err)
		}
		checkStream(tb, s, stream)
		total += len(stream)
		acked += len(s.acked)
		if len(stream) > len(s.acked) {
			inFlight++
		}
	}
	if total != len(all) {
		tb.Errorf("the sessions' streams hold %d events, the log %d", total, len(all))
	}
	tb.Logf("log: %d events: %d acknowledged commands, %d commands in flight at a kill that committed", len(all), acked, inFlight)
}

func checkStream(tb testing.TB, s *sessionLog, stream []eventstore.Event) {
	tb.Helper()
	want := slices.Clone(s.acked)
	if len(stream) == len(want)+1 && s.inFlight != nil {
		want = append(want, *s.inFlight)
	}
	if len(stream) != len(want) {
		tb.Errorf("session %s: stream holds %d events for %d acknowledged commands (in flight: %v)", s.session, len(stream), len(s.acked), s.inFlight != nil)
		return
	}
	for i, e := range stream {
		if e.Version != int64(i+1) {
			tb.Errorf("session %s: event %d has version %d", s.session, i, e.Version)
		}
		action, handoff := describeEvent(tb, e)
		// An escalation in flight made a handoff whose id only the event
		// knows.
		if action != want[i].action || (handoff != want[i].handoff && want[i].handoff != uuid.Nil) {
			tb.Errorf("session %s: event %d is %s of %s, want %s of %s", s.session, i, action, handoff, want[i].action, want[i].handoff)
		}
	}
}

// describeEvent returns the command behind an event and its handoff.
func describeEvent(tb testing.TB, e eventstore.Event) (string, uuid.UUID) {
	tb.Helper()
	decoded, err := eventcodec.Decode(e.Type, e.Data)
	if err != nil {
		tb.Fatalf("decode event %d: %v", e.Position, err)
	}
	switch d := decoded.(type) {
	case domain.HandoffEscalated:
		return "escalate", d.HandoffID
	case domain.HandoffWithdrawn:
		return "withdraw", d.HandoffID
	}
	tb.Fatalf("event %d is a %s, which the test never asked for", e.Position, e.Type)
	return "", uuid.Nil
}

// checkReadModels waits for the restarted service's projector to reach the
// head of the log, then checks that each session's history, in the read
// model and through the API, is the session folded from its stream, and
// that the read model holds no other handoffs.
func checkReadModels(tb testing.TB, store *sqlitestore.Store, dataDir string, c *child, sessions []*sessionLog) {
	tb.Helper()
	// The log and the read model as the service reads them: opened by its
	// master key.
	keys := dataDirKeyring(tb, dataDir)
	views := sqliteviews.New(store.DB(), store.ReadDB()).WithKeys(keys)
	waitForCheckpoint(tb, store, views)
	loader := commands.NewHandler(shred.NewStore(store, keys), nil)
	total := 0
	for _, s := range sessions {
		state, err := loader.Load(tb.Context(), s.actor.AccountID, s.session)
		if err != nil {
			tb.Fatalf("load session %s: %v", s.session, err)
		}
		want := slices.Clone(state.Handoffs)
		slices.Reverse(want)
		total += len(want)
		got, err := views.History(tb.Context(), s.actor.AccountID, s.session, projections.Page{Limit: projections.MaxPageSize})
		if err != nil {
			tb.Fatalf("history of %s: %v", s.session, err)
		}
		api := c.history(tb, s)
		if len(got) != len(want) || len(api) != len(want) {
			tb.Errorf("session %s: the log has %d handoffs, the read model %d, the API %d", s.session, len(want), len(got), len(api))
			continue
		}
		for i := range want {
			if !storetest.Equal(got[i], want[i]) || api[i].ID != want[i].ID || api[i].Status != string(want[i].Status) {
				tb.Errorf("session %s handoff %d:\nlog        %+v\nread model %+v\nAPI        %+v", s.session, i, want[i], got[i], api[i])
			}
		}
	}
	var rows int
	if err := store.ReadDB().QueryRowContext(tb.Context(), `SELECT count(*) FROM handoffs`).Scan(&rows); err != nil {
		tb.Fatalf("count handoffs: %v", err)
	}
	if rows != total {
		tb.Errorf("the read model holds %d handoffs, the log %d", rows, total)
	}
}

func waitForCheckpoint(tb testing.TB, store *sqlitestore.Store, views projections.Store) {
	tb.Helper()
	head, err := store.Head(tb.Context())
	if err != nil {
		tb.Fatalf("head: %v", err)
	}
	ledgertest.WaitUntil(tb, childStartTimeout, fmt.Sprintf("the projector reaches the log's head, %d", head), func() bool {
		pos, err := views.Checkpoint(tb.Context(), projections.HandoffsProjector)
		if err != nil {
			tb.Fatalf("checkpoint: %v", err)
		}
		return pos == head
	})
}

// checkRebuild runs `ledgerd projections rebuild` on the stopped service's
// data directory: the read model must come out identical.
// dataDirKeyring returns the keyring of the master key kept in dataDir.
func dataDirKeyring(tb testing.TB, dataDir string) *shred.Keyring {
	tb.Helper()
	text, err := os.ReadFile(filepath.Join(dataDir, masterKeyFile))
	if err != nil {
		tb.Fatalf("read the master key: %v", err)
	}
	master, err := shred.ParseMasterKey(string(text))
	if err != nil {
		tb.Fatal(err)
	}
	return shred.NewKeyring(master)
}

func checkRebuild(tb testing.TB, bin, dataDir string, store *sqlitestore.Store) {
	tb.Helper()
	keys := dataDirKeyring(tb, dataDir)
	before := dumpReadModel(tb, store, keys)
	rebuild := exec.CommandContext(tb.Context(), bin, "projections", "rebuild")
	rebuild.Env = childEnv(dataDir)
	if out, err := rebuild.CombinedOutput(); err != nil {
		tb.Fatalf("ledgerd projections rebuild: %v\n%s", err, out)
	}
	if after := dumpReadModel(tb, store, keys); after != before {
		tb.Errorf("rebuilt read model differs from the one the service built\nrebuilt: %s\nserved:  %s", after, before)
	}
}

// dumpReadModel returns every column of every handoffs row, ordered by id,
// and the checkpoints; the notes, sealed with a nonce of their own each
// time, as keys opens them (each row's notes must be sealed).
func dumpReadModel(tb testing.TB, store *sqlitestore.Store, keys *shred.Keyring) string {
	tb.Helper()
	var dump string
	err := store.ReadDB().QueryRowContext(tb.Context(), `SELECT json_array(
		(SELECT coalesce(json_group_array(json_array(id, account_id, team_id, session_id, intent,
			priority, priority_rank, status, created_by, created_at, claimed_by, claimed_at, withdrawn_at, position)), '[]')
		FROM (SELECT * FROM handoffs ORDER BY id)),
		(SELECT json_group_object(name, position) FROM checkpoints))`).Scan(&dump)
	if err != nil {
		tb.Fatalf("dump read model: %v", err)
	}
	rows, err := store.ReadDB().QueryContext(tb.Context(), `SELECT h.account_id, h.session_id, h.engineer_notes, k.key_id, k.wrapped, k.master_key_id
		FROM handoffs AS h LEFT JOIN data_keys AS k ON k.stream_id = 'session:' || h.account_id || ':' || h.session_id ORDER BY h.id`)
	if err != nil {
		tb.Fatalf("dump read model's notes: %v", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			account, session uuid.UUID
			notes            string
			keyID, masterID  sql.NullString
			wrapped          []byte
		)
		if err := rows.Scan(&account, &session, &notes, &keyID, &wrapped, &masterID); err != nil {
			tb.Fatalf("dump read model's notes: %v", err)
		}
		if notes != "" && !strings.HasPrefix(notes, "sealed:") {
			tb.Errorf("a row of session %s holds its notes unsealed: %q", session, notes)
		}
		var key *eventstore.DataKey
		if keyID.Valid {
			key = &eventstore.DataKey{ID: keyID.String, Wrapped: wrapped, MasterKeyID: masterID.String}
		}
		opened, erased := keys.OpenNotes(eventcodec.StreamName(account, session), key, notes)
		dump += fmt.Sprintf("\n%q %v", opened, erased)
	}
	if err := rows.Err(); err != nil {
		tb.Fatalf("dump read model's notes: %v", err)
	}
	return dump
}
