// Package pgtest gives tests their own PostgreSQL databases.
//
// A test binary that uses pgtest starts at most one throwaway PostgreSQL
// server, on first use, in a temporary directory, and stops it when the tests
// have run. Each test gets a fresh database of its own, copied from a template
// database that was migrated once per test binary, so tests may run in
// parallel without seeing each other's data.
//
// Set LEDGER_TEST_DATABASE_URL to a postgres:// URL to use an existing server
// instead (its user must be allowed to CREATE DATABASE). Otherwise the server
// binaries (initdb, postgres) are looked up on PATH, then with
// `pg_config --bindir`, then under /usr/lib/postgresql/*/bin.
//
// The server runs with fsync and synchronous commit off, unless the test
// binary runs benchmarks (-test.bench) or LEDGER_TEST_PG_DURABLE=1 is set:
// benchmarks measure a durable server.
//
// A package using pgtest must run its tests through Main:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
//
// A test that takes the database away (an outage, a restart) starts a
// server of its own with StartServer instead, which it may stop and start
// again.
package pgtest

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver

	"github.com/resolutionflow/ledgerd/migrations"
)

const (
	// envDatabaseURL names the variable that points pgtest at an existing
	// server instead of starting one.
	envDatabaseURL = "LEDGER_TEST_DATABASE_URL"
	// envDurable, set to 1, keeps fsync on even when not benchmarking.
	envDurable = "LEDGER_TEST_PG_DURABLE"

	templateName   = "ledger_template"
	readyTimeout   = 30 * time.Second
	stopTimeout    = 10 * time.Second
	startAttempts  = 5
	logTailBytes   = 4 << 10
	debianPGLibDir = "/usr/lib/postgresql"
)

var (
	mainRunning atomic.Bool

	startOnce sync.Once
	srv       *server
	startErr  error

	templateOnce sync.Once
	templateErr  error

	// createMu serializes CREATE DATABASE: PostgreSQL refuses to copy a
	// template that another CREATE DATABASE is copying at the same time
	// ("source database is being accessed by other users").
	createMu sync.Mutex
)

// Main runs the tests of a package and stops the server (if one was started)
// afterwards. Use:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
func Main(m *testing.M) int {
	mainRunning.Store(true)
	code := m.Run()
	mainRunning.Store(false)

	// Running the Once here, if no test did, keeps a late caller from
	// starting a server that nothing would stop.
	startOnce.Do(func() { startErr = errors.New("pgtest.Main has already returned") })
	if srv != nil {
		if err := srv.stop(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		}
	}
	return code
}

// NewDatabase returns the URL
// (postgres://user@127.0.0.1:port/dbname?sslmode=disable) of a new database
// made for this test with CREATE DATABASE ... TEMPLATE, from a template that
// was migrated once per test binary with migrations.Postgres. The database is
// dropped when the test and its subtests have finished. Safe for parallel
// tests.
func NewDatabase(tb testing.TB) string {
	tb.Helper()
	s := sharedServer(tb)
	templateOnce.Do(func() { templateErr = s.createTemplate() })
	if templateErr != nil {
		tb.Fatalf("pgtest: %v", s.withLog(templateErr))
	}
	return s.newDatabase(tb, s.template)
}

// NewEmptyDatabase is like NewDatabase, but the database is not migrated
// (for tests of the migrations themselves).
func NewEmptyDatabase(tb testing.TB) string {
	tb.Helper()
	return sharedServer(tb).newDatabase(tb, "template0")
}

// AdminURL returns the URL of the server's maintenance database, starting the
// server if needed.
func AdminURL(tb testing.TB) string {
	tb.Helper()
	return sharedServer(tb).admin.String()
}

// sharedServer returns the server of this test binary, starting it on first use.
func sharedServer(tb testing.TB) *server {
	tb.Helper()
	if !mainRunning.Load() {
		tb.Fatal("pgtest: the package's tests must run through pgtest.Main, so that the server is stopped afterwards:\n" +
			"\tfunc TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }")
	}
	startOnce.Do(func() { srv, startErr = start() })
	if startErr != nil {
		tb.Fatalf("pgtest: %v", startErr)
	}
	return srv
}

// server is the PostgreSQL server of this test binary.
type server struct {
	admin    *url.URL // the maintenance database
	db       *sql.DB  // pool on the maintenance database
	template string   // the migrated template database
	external bool     // from LEDGER_TEST_DATABASE_URL: not ours to stop
	// createSuffix ends CREATE DATABASE statements. With fsync off,
	// STRATEGY FILE_COPY (PostgreSQL 15 and later) copies the 7 MB of a
	// fresh database somewhat faster (measured: ~15%) than the default
	// WAL_LOG, which also writes it all to the WAL; on a durable server its
	// two checkpoints would cost more, so there it stays empty.
	createSuffix string

	// Only for a server that pgtest started.
	dir      string
	logPath  string
	postgres string              // the server program
	args     []string            // its arguments but the port
	cred     *syscall.Credential // whom it runs as; nil for this process's user
	data     string              // the data directory
	cmd      *exec.Cmd
	exited   chan struct{} // closed when cmd has exited
	version  int           // server_version_num, e.g. 150004
}

func start() (*server, error) {
	if raw := os.Getenv(envDatabaseURL); raw != "" {
		return useExternal(raw)
	}
	bins, err := findBinaries()
	if err != nil {
		return nil, err
	}
	return startLocal(bins)
}

// useExternal uses the server at raw, a postgres:// URL.
func useExternal(raw string) (*server, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return nil, fmt.Errorf("%s must be a postgres:// URL, e.g. postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", envDatabaseURL)
	}
	// Test binaries of several packages may share this server at once, so
	// each needs a template of its own.
	s := &server{admin: u, template: templateName + "_" + randomHex(), external: true}
	if s.db, err = openDB(raw); err != nil {
		return nil, fmt.Errorf("%s: %w", envDatabaseURL, err)
	}
	return s, nil
}

// binaries are the paths of the PostgreSQL server programs.
type binaries struct {
	initdb, postgres string
}

// findBinaries looks for initdb and postgres on PATH, then in
// `pg_config --bindir`, then in the highest version under
// /usr/lib/postgresql/*/bin (Debian and Ubuntu install them there, off PATH).
func findBinaries() (binaries, error) {
	if initdb, err := exec.LookPath("initdb"); err == nil {
		if postgres, err := exec.LookPath("postgres"); err == nil {
			return binaries{initdb: initdb, postgres: postgres}, nil
		}
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if b, ok := binariesIn(strings.TrimSpace(string(out))); ok {
			return b, nil
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(debianPGLibDir, "*", "bin"))
	slices.SortFunc(dirs, func(a, b string) int { // highest version first
		return compareVersions(filepath.Base(filepath.Dir(b)), filepath.Base(filepath.Dir(a)))
	})
	for _, dir := range dirs {
		if b, ok := binariesIn(dir); ok {
			return b, nil
		}
	}
	return binaries{}, fmt.Errorf("cannot find the PostgreSQL server programs initdb and postgres "+
		"(looked on PATH, in `pg_config --bindir` and in %s/*/bin). "+
		"Install PostgreSQL (Debian/Ubuntu: apt-get install postgresql), "+
		"or set %s to the URL of a server where the user may CREATE DATABASE",
		debianPGLibDir, envDatabaseURL)
}

func binariesIn(dir string) (binaries, bool) {
	b := binaries{initdb: filepath.Join(dir, "initdb"), postgres: filepath.Join(dir, "postgres")}
	return b, isExecutable(b.initdb) && isExecutable(b.postgres)
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// compareVersions compares dotted version numbers such as "9.6" and "15".
func compareVersions(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := range max(len(as), len(bs)) {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if c := cmp.Compare(x, y); c != 0 {
			return c
		}
	}
	return 0
}

// startLocal initializes a cluster in a new temporary directory and starts
// a server on it, with the settings (pairs of "-c", "name=value") added
// to its command line.
func startLocal(bins binaries, settings ...string) (*server, error) {
	s, err := initLocal(bins)
	if err != nil {
		return nil, err
	}
	s.args = append(s.args, settings...)
	for attempt := 1; ; attempt++ {
		err := s.launch(0)
		if err == nil {
			return s, nil
		}
		// Another process may have taken the port between our probe and
		// the server's bind: try another one.
		if attempt == startAttempts || !errors.Is(err, errPortTaken) {
			os.RemoveAll(s.dir)
			return nil, s.withLog(err)
		}
	}
}

// initLocal initializes a cluster in a new temporary directory and returns
// the server that launch starts on it.
func initLocal(bins binaries) (_ *server, err error) {
	cred, err := serverCredential()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, fmt.Errorf("create temporary directory: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, fmt.Errorf("hand the temporary directory to the server's user: %w", err)
		}
	}
	data := filepath.Join(dir, "data")

	initdb := exec.Command(bins.initdb, "-D", data, "-A", "trust", "-U", "postgres",
		"--no-sync", "-E", "UTF8", "--locale=C")
	initdb.Dir = dir
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	out, err := initdb.CombinedOutput()
	_ = os.WriteFile(filepath.Join(dir, "initdb.log"), out, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s: %w\n--- initdb output (tail) ---\n%s", bins.initdb, err, tail(out))
	}

	args := []string{"-D", data, "-k", dir,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "max_connections=300",
		"-c", "shared_buffers=128MB",
	}
	if !durable() {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	return &server{
		template: templateName, dir: dir, logPath: filepath.Join(dir, "postgres.log"),
		postgres: bins.postgres, args: args, cred: cred, data: data,
	}, nil
}

// serverCredential returns whom to run the server as: PostgreSQL refuses to
// run as root, so as root it runs as the postgres user, or failing that as
// nobody. Otherwise it runs as the current user (nil).
func serverCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err := strconv.ParseUint(u.Uid, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("user %s: uid %q: %w", name, u.Uid, err)
		}
		gid, err := strconv.ParseUint(u.Gid, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("user %s: gid %q: %w", name, u.Gid, err)
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
	}
	return nil, errors.New("running as root, and PostgreSQL refuses to: there is neither a postgres nor a nobody user to run it as")
}

// durable reports whether the server must keep its durability settings.
func durable() bool {
	if os.Getenv(envDurable) == "1" {
		return true
	}
	f := flag.Lookup("test.bench")
	return f != nil && f.Value.String() != ""
}

var errPortTaken = errors.New("port already in use")

// launch starts postgres on port (a free one when port is 0) and waits
// until it accepts connections. On failure the server is not running.
func (s *server) launch(port int) error {
	if port == 0 {
		var err error
		if port, err = freePort(); err != nil {
			return err
		}
	}
	// A restarted server appends to the log of its earlier runs.
	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("create server log: %w", err)
	}
	cmd := exec.Command(s.postgres, append([]string{"-p", strconv.Itoa(port)}, s.args...)...)
	cmd.Dir = s.dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// Pdeathsig kills the server if the test binary dies without stopping
	// it (a panic, a test timeout); its backends notice and exit too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Pdeathsig: syscall.SIGKILL}
	err = cmd.Start()
	logFile.Close() // the server has its own copy
	if err != nil {
		return fmt.Errorf("start %s: %w", s.postgres, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	s.cmd, s.exited = cmd, exited
	s.admin = &url.URL{
		Scheme:   "postgres",
		User:     url.User("postgres"),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		Path:     "/postgres",
		RawQuery: "sslmode=disable",
	}

	if err := s.waitReady(s.data); err != nil {
		s.kill()
		s.cmd, s.exited = nil, nil
		return err
	}
	if s.db, err = openDB(s.admin.String()); err != nil {
		s.kill()
		s.cmd, s.exited = nil, nil
		return err
	}
	if !durable() && s.version >= 150000 {
		s.createSuffix = " STRATEGY FILE_COPY"
	}
	return nil
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitReady waits until the server accepts connections, and checks that it
// is ours and not another that holds the port.
func (s *server) waitReady(data string) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		dir, version, err := serverInfo(ctx, s.admin.String())
		cancel()
		switch {
		case err == nil && dir == data:
			s.version = version
			return nil
		case err == nil:
			// Someone else's server answers on the port, so ours will fail to
			// bind it if it has not yet.
			return fmt.Errorf("port %s: %w by another server (data directory %s)", s.admin.Port(), errPortTaken, dir)
		case time.Now().After(deadline):
			return fmt.Errorf("server not ready after %v: %w", readyTimeout, err)
		}
		select {
		case <-s.exited:
			err := fmt.Errorf("server exited during startup: %v", s.cmd.ProcessState)
			if log, _ := os.ReadFile(s.logPath); bytes.Contains(log, []byte("could not bind")) ||
				bytes.Contains(log, []byte("Address already in use")) {
				err = fmt.Errorf("%w: port %s: %w", err, s.admin.Port(), errPortTaken)
			}
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// serverInfo returns the data directory and version number of the server
// at connString.
func serverInfo(ctx context.Context, connString string) (dir string, version int, err error) {
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		return "", 0, err
	}
	defer conn.Close(context.Background())
	err = conn.QueryRow(ctx, "SELECT current_setting('data_directory'), current_setting('server_version_num')::int").
		Scan(&dir, &version)
	if err != nil {
		return "", 0, fmt.Errorf("query server settings: %w", err)
	}
	return dir, version, nil
}

func openDB(connString string) (*sql.DB, error) {
	db, err := sql.Open("pgx", connString)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", redacted(connString), err)
	}
	db.SetMaxOpenConns(4)
	return db, nil
}

// kill stops a server that is starting without waiting for a clean shutdown.
func (s *server) kill() {
	_ = s.cmd.Process.Kill()
	<-s.exited
}

// stop drops what pgtest made on an external server, or stops the server
// pgtest started and removes its directory.
func (s *server) stop() error {
	var errs []error
	if s.external {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if err := s.dropDatabase(ctx, s.template); err != nil {
			errs = append(errs, err)
		}
		cancel()
	}
	if err := s.shutdown(); err != nil {
		errs = append(errs, err)
	}
	if s.dir != "" {
		if err := os.RemoveAll(s.dir); err != nil {
			errs = append(errs, fmt.Errorf("remove server directory: %w", err))
		}
	}
	return errors.Join(errs...)
}

// shutdown closes the maintenance pool and stops the server pgtest
// started with a fast shutdown, killing it if that takes too long.
func (s *server) shutdown() error {
	return s.shutdownWith(os.Interrupt)
}

// shutdownWith is shutdown with the signal sig: os.Interrupt asks for a
// fast shutdown, syscall.SIGQUIT for an immediate one (no checkpoint:
// the next start runs crash recovery).
func (s *server) shutdownWith(sig os.Signal) error {
	if s.db != nil {
		s.db.Close()
		s.db = nil
	}
	if s.cmd == nil {
		return nil
	}
	defer func() { s.cmd, s.exited = nil, nil }()
	_ = s.cmd.Process.Signal(sig)
	select {
	case <-s.exited:
		return nil
	case <-time.After(stopTimeout):
		s.kill()
		return fmt.Errorf("server did not stop within %v; killed it", stopTimeout)
	}
}

// createTemplate creates the template database and migrates it.
func (s *server) createTemplate() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := s.createDatabase(ctx, s.template, "template0"); err != nil {
		return err
	}
	db, err := openDB(s.databaseURL(s.template))
	if err != nil {
		return err
	}
	// Closing the pool leaves no connection to the template, which
	// CREATE DATABASE ... TEMPLATE requires.
	defer db.Close()
	if err := migrations.Postgres(ctx, db); err != nil {
		return fmt.Errorf("migrate template database %s: %w", s.template, err)
	}
	return nil
}

// newDatabase creates a database for tb as a copy of template and drops it
// when tb has finished.
func (s *server) newDatabase(tb testing.TB, template string) string {
	tb.Helper()
	name := "t_" + randomHex()
	if err := s.createDatabase(tb.Context(), name, template); err != nil {
		tb.Fatalf("pgtest: %v", s.withLog(err))
	}
	tb.Cleanup(func() {
		// tb.Context is already canceled when cleanups run.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.dropDatabase(ctx, name); err != nil {
			tb.Errorf("pgtest: %v", s.withLog(err))
		}
	})
	return s.databaseURL(name)
}

func (s *server) createDatabase(ctx context.Context, name, template string) error {
	createMu.Lock()
	defer createMu.Unlock()
	q := "CREATE DATABASE " + quote(name) + " TEMPLATE " + quote(template) + s.createSuffix
	if _, err := s.db.ExecContext(ctx, q); err != nil {
		return fmt.Errorf("create database %s from %s: %w", name, template, err)
	}
	return nil
}

func (s *server) dropDatabase(ctx context.Context, name string) error {
	if _, err := s.db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+quote(name)+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}

// databaseURL returns the URL of the database name on the server.
func (s *server) databaseURL(name string) string {
	u := *s.admin
	u.Path, u.RawPath = "/"+name, ""
	return u.String()
}

// withLog adds the tail of the server log to err, if pgtest started the
// server.
func (s *server) withLog(err error) error {
	if s == nil || s.logPath == "" {
		return err
	}
	log, readErr := os.ReadFile(s.logPath)
	if readErr != nil {
		return fmt.Errorf("%w\n(server log %s unreadable: %v)", err, s.logPath, readErr)
	}
	return fmt.Errorf("%w\n--- server log %s (tail) ---\n%s", err, s.logPath, tail(log))
}

// tail returns about the last logTailBytes of b, from a line start.
func tail(b []byte) string {
	if len(b) > logTailBytes {
		b = b[len(b)-logTailBytes:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}

func quote(ident string) string {
	return pgx.Identifier{ident}.Sanitize()
}

func randomHex() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // never fails
	return hex.EncodeToString(b)
}

// redacted hides the password in a connection URL.
func redacted(connString string) string {
	if u, err := url.Parse(connString); err == nil {
		return u.Redacted()
	}
	return "connection string"
}
