package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/internal/ledgertest"
)

// keepShots, when set, is a directory the screenshots are saved in and
// kept, whether the test passes or fails.
var keepShots = flag.String("e2e.shots", "", "save the screenshots in this directory and keep them")

// Bounds of the tests' waits.
const (
	startTimeout = 60 * time.Second
	stepTimeout  = 20 * time.Second
	// pageBudget is the longest a page may take to show its data.
	pageBudget = 200 * time.Millisecond
	// timings is how many times each page is timed from a click.
	timings = 3
	// reloadBound is the longest a whole reload of a page may take.
	reloadBound = time.Second
)

// scriptNote is a note made to run script if the console ever put notes
// in the page as HTML.
const scriptNote = `<b>bold</b><script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"> & "quoted"`

// ledgerd is a `ledgerd serve` process on the embedded store.
type ledgerd struct {
	bin, dataDir, addr, base string
	logs                     *ledgertest.Buffer
}

// buildLedgerd builds the ledgerd command into a temporary directory.
func buildLedgerd(tb testing.TB) string {
	tb.Helper()
	gotool, err := exec.LookPath("go")
	if err != nil {
		tb.Fatalf("the browser tests build ledgerd and need the go tool: %v", err)
	}
	bin := filepath.Join(tb.TempDir(), "ledgerd")
	build := exec.CommandContext(tb.Context(), gotool, "build", "-o", bin, "github.com/resolutionflow/ledgerd/cmd/ledgerd")
	if out, err := build.CombinedOutput(); err != nil {
		tb.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func freeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("find a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startLedgerd runs `ledgerd serve` until the test ends.
func startLedgerd(tb testing.TB) *ledgerd {
	tb.Helper()
	l := &ledgerd{bin: buildLedgerd(tb), dataDir: tb.TempDir(), addr: freeAddr(tb), logs: &ledgertest.Buffer{}}
	l.base = "http://" + l.addr
	cmd := exec.Command(l.bin, "serve", "--data-dir", l.dataDir, "--http-addr", l.addr, "--nats-listen", "127.0.0.1:0")
	cmd.Stdout, cmd.Stderr = l.logs, l.logs
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start ledgerd serve: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	tb.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if tb.Failed() {
			tb.Logf("ledgerd serve's log:\n%s", l.logs)
		}
	})
	deadline := time.Now().Add(startTimeout)
	for {
		res, err := http.Get(l.base + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return l
			}
		}
		select {
		case err := <-exited:
			tb.Fatalf("ledgerd serve exited before it was ready: %v\n%s", err, l.logs)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			tb.Fatalf("ledgerd serve not ready after %v: %v\n%s", startTimeout, err, l.logs)
		}
	}
}

// user is someone with a token.
type user struct {
	token, link string
	id          uuid.UUID
	account     uuid.UUID
	team        uuid.UUID
	role        string
}

// consoleLink runs `ledgerd console` with args and returns the user of the
// link it prints.
func (l *ledgerd) consoleLink(tb testing.TB, args ...string) user {
	tb.Helper()
	cmd := exec.CommandContext(tb.Context(), l.bin, append([]string{"console", "--data-dir", l.dataDir, "--http-addr", l.addr}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("ledgerd console %v: %v\n%s", args, err, stderr.String())
	}
	link := strings.TrimSpace(string(out))
	prefix := l.base + "/console/#token="
	if !strings.HasPrefix(link, prefix) || strings.Contains(link, "\n") {
		tb.Fatalf("ledgerd console printed %q, want one link %s...", link, prefix)
	}
	u := userOf(tb, strings.TrimPrefix(link, prefix))
	u.link = link
	return u
}

// userOf reads who a token names.
func userOf(tb testing.TB, token string) user {
	tb.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		tb.Fatalf("not a token: %q", token)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		tb.Fatalf("token payload: %v", err)
	}
	var c struct {
		Sub     uuid.UUID `json:"sub"`
		Account uuid.UUID `json:"account_id"`
		Team    uuid.UUID `json:"team_id"`
		Role    string    `json:"role"`
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		tb.Fatalf("token payload: %v", err)
	}
	return user{token: token, id: c.Sub, account: c.Account, team: c.Team, role: c.Role}
}

// handoff is a handoff as the API answers it.
type handoff struct {
	ID        uuid.UUID  `json:"id"`
	SessionID uuid.UUID  `json:"session_id"`
	Status    string     `json:"status"`
	CreatedAt time.Time  `json:"created_at"`
	ClaimedBy *uuid.UUID `json:"claimed_by"`
}

// call makes a REST request as u, as another client would, and decodes
// the answer into out when want is its status.
func (l *ledgerd) call(tb testing.TB, u user, method, path, body string, want int, out any) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), stepTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, l.base+path, strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+u.token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	got, err := io.ReadAll(res.Body)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	if res.StatusCode != want {
		tb.Fatalf("%s %s: %d %s, want %d", method, path, res.StatusCode, got, want)
	}
	if out != nil {
		if err := json.Unmarshal(got, out); err != nil {
			tb.Fatalf("%s %s: decode %s: %v", method, path, got, err)
		}
	}
}

func (l *ledgerd) escalate(tb testing.TB, u user, session uuid.UUID, notes string) handoff {
	tb.Helper()
	body, err := json.Marshal(map[string]string{"intent": "escalate", "engineer_notes": notes, "priority": "high"})
	if err != nil {
		tb.Fatal(err)
	}
	var h handoff
	l.call(tb, u, http.MethodPost, "/ai-sessions/"+session.String()+"/handoff", string(body), http.StatusCreated, &h)
	return h
}

func (l *ledgerd) claim(tb testing.TB, u user, h handoff) {
	tb.Helper()
	l.call(tb, u, http.MethodPost, "/ai-sessions/"+h.SessionID.String()+"/handoffs/"+h.ID.String()+"/claim", "", http.StatusOK, nil)
}

// browser is headless Chromium, with a directory for screenshots that is
// kept, and printed, when the test fails.
type browser struct {
	ctx   context.Context
	shots string
	mu    sync.Mutex
	n     int
}

// chromiumNames are the names Chromium's binary goes by.
var chromiumNames = []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"}

// startBrowser starts headless Chromium for the test, failing it with a
// clear message when Chromium is missing or cannot start.
func startBrowser(tb testing.TB) *browser {
	tb.Helper()
	var path string
	for _, name := range chromiumNames {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		tb.Fatalf("Chromium cannot start: none of %v is on PATH. Install it (Debian: apt-get install -y chromium; .ci/run does it where it is missing)", chromiumNames)
	}
	shots, err := os.MkdirTemp(*keepShots, "ledgerd-console-e2e-")
	if err != nil {
		tb.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // the tests may run as root
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.WindowSize(1280, 900),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	b := &browser{ctx: ctx, shots: shots}
	tb.Cleanup(func() {
		cancel()
		cancelAlloc()
		if tb.Failed() || *keepShots != "" {
			tb.Logf("screenshots of the console's pages are in %s", shots)
		} else {
			os.RemoveAll(shots)
		}
	})
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(ctx) }() // the first Run starts the browser
	select {
	case err := <-started:
		if err != nil {
			tb.Fatalf("Chromium cannot start (%s): %v", path, err)
		}
	case <-time.After(startTimeout):
		tb.Fatalf("Chromium (%s) did not start within %v", path, startTimeout)
	}
	return b
}

// tab is one browser tab: its own sessionStorage, so its own sign-in.
type tab struct {
	b    *browser
	ctx  context.Context
	name string
}

func (b *browser) tab(tb testing.TB, name string) *tab {
	tb.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx)
	tb.Cleanup(cancel)
	t := &tab{b: b, ctx: ctx, name: name}
	if err := chromedp.Do(ctx); err != nil {
		tb.Fatalf("open a tab: %v", err)
	}
	return t
}

// shot saves a screenshot of the tab's page as <n>-<name>.png and returns
// its path.
func (t *tab) shot(tb testing.TB, name string) string {
	tb.Helper()
	t.b.mu.Lock()
	t.b.n++
	path := filepath.Join(t.b.shots, fmt.Sprintf("%02d-%s-%s.png", t.b.n, t.name, name))
	t.b.mu.Unlock()
	ctx, cancel := context.WithTimeout(t.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		tb.Logf("screenshot %s: %v", name, err)
		return path
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		tb.Logf("screenshot %s: %v", name, err)
	}
	return path
}

// do runs steps in the tab within stepTimeout; on failure it saves a
// screenshot and fails the test saying where.
func (t *tab) do(tb testing.TB, what string, steps ...chromedp.Action[chromedp.Void]) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(t.ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		tb.Fatalf("%s (%s): %v; screenshot: %s", what, t.name, err, t.shot(tb, "failed"))
	}
}

// eval evaluates a JavaScript expression in the tab.
func eval[T any](tb testing.TB, t *tab, what, js string) T {
	tb.Helper()
	ctx, cancel := context.WithTimeout(t.ctx, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		tb.Fatalf("%s (%s): %v; screenshot: %s", what, t.name, err, t.shot(tb, "failed"))
	}
	return v
}

// open navigates the tab to one of the console's pages, by its fragment,
// as a click on one of its links does.
func (t *tab) open(tb testing.TB, fragment string) {
	tb.Helper()
	// The page's content goes at once; the hashchange event that shows the
	// next page comes after.
	t.do(tb, "open "+fragment, chromedp.Evaluate[chromedp.Void](`(() => {
		const main = document.getElementById('main');
		main.replaceChildren();
		delete main.dataset.loadMs;
		location.hash = `+jsString(fragment)+`;
	})()`))
}

// loadTime waits until the page shows its data and returns how long that
// took, as the console measured it.
func (t *tab) loadTime(tb testing.TB) time.Duration {
	tb.Helper()
	t.do(tb, "wait until the page has loaded", chromedp.WaitReady(chromedp.CSS(`main[data-load-ms]`)))
	ms := eval[float64](tb, t, "read the load time", `Number(document.querySelector('main').dataset.loadMs)`)
	return time.Duration(ms * float64(time.Millisecond))
}

// best is the shorter of two times, a zero time counting as none.
func best(a, b time.Duration) time.Duration {
	if a == 0 || b < a {
		return b
	}
	return a
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func row(id uuid.UUID) string { return `tr[data-handoff-id="` + id.String() + `"]` }

// TestConsole walks through the console as its users do, on one ledgerd
// and one browser; each step builds on the ones before.
func TestConsole(t *testing.T) {
	start := time.Now()
	l := startLedgerd(t)
	b := startBrowser(t)
	t.Logf("ledgerd and Chromium started in %v", time.Since(start).Round(time.Millisecond))

	// One account and team for every link of the data directory.
	alice := l.consoleLink(t, "--role", "engineer")
	bob := l.consoleLink(t, "--role", "engineer")
	auditor := l.consoleLink(t, "--role", "auditor")
	admin := l.consoleLink(t, "--role", "admin")
	carol := l.consoleLink(t, "--role", "engineer") // another client, over REST
	if alice.account != bob.account || alice.team != admin.team || alice.id == bob.id || auditor.role != "auditor" {
		t.Fatalf("links of one data directory: %+v %+v %+v", alice, bob, admin)
	}

	// A thousand handoffs for another team of the account, made while the
	// steps below run, for the page-time step at the end; the other teams'
	// queues and streams pass them over.
	busy := l.consoleLink(t, "--role", "admin", "--team", uuid.NewString())
	bulkStart := time.Now()
	bulk := make(chan error, 1)
	go func() { bulk <- l.park(busy, 1000, 4) }()

	bobs := b.tab(t, "bob")
	alices := b.tab(t, "alice")
	var session uuid.UUID
	var escalated handoff
	var mid time.Time

	t.Run("SignInByPastingAToken", func(t *testing.T) {
		bobs.do(t, "open the sign-in page",
			chromedp.Navigate(l.base+"/console/"),
			chromedp.WaitVisible(chromedp.CSS(`#token-input`)))
		bobs.shot(t, "sign-in")
		bobs.do(t, "paste a token that is not one",
			chromedp.SetValue(chromedp.CSS(`#token-input`), "not-a-token"),
			chromedp.Click(chromedp.CSS(`#signin-button`)),
			chromedp.WaitVisible(chromedp.CSS(`#signin-result .msg.error`)))
		bobs.do(t, "paste bob's token and sign in",
			chromedp.SetValue(chromedp.CSS(`#token-input`), bob.token),
			chromedp.Click(chromedp.CSS(`#signin-button`)),
			chromedp.WaitVisible(chromedp.CSS(`#live[data-state="live"]`)))
		bobs.shot(t, "queue-empty")
		where := eval[map[string]any](t, bobs, "read where the token is",
			`({stored: sessionStorage.getItem('ledgerd.token'), href: location.href, cookie: document.cookie, local: localStorage.length})`)
		if where["stored"] != bob.token || strings.Contains(where["href"].(string), bob.token) || where["cookie"] != "" || where["local"] != float64(0) {
			t.Fatalf("after signing in: %v; want the token in sessionStorage only", where)
		}
	})

	t.Run("LinkOpensTheConsoleSignedIn", func(t *testing.T) {
		alices.do(t, "open alice's link",
			chromedp.Navigate(alice.link),
			chromedp.WaitVisible(chromedp.CSS(`#live[data-state="live"]`)))
		href := eval[string](t, alices, "read the address", `location.href`)
		if strings.Contains(href, "token") || !strings.HasSuffix(href, "#/queue") {
			t.Fatalf("address after opening the link: %s; want the token gone from it", href)
		}
		who := eval[string](t, alices, "read who is signed in", `document.getElementById('who').textContent`)
		if !strings.Contains(who, alice.id.String()) {
			t.Fatalf("signed in as %q, want alice %s", who, alice.id)
		}
	})

	t.Run("EscalationAppearsLive", func(t *testing.T) {
		session = uuid.New()
		escalated = l.escalate(t, carol, session, scriptNote)
		created := time.Now()
		for _, tb := range []*tab{bobs, alices} {
			tb.do(t, "wait for the escalation", chromedp.WaitVisible(chromedp.CSS(row(escalated.ID))))
		}
		t.Logf("the escalation showed in both browsers %v after its POST answered", time.Since(created).Round(time.Millisecond))
		bobs.shot(t, "queue-live-escalation")
		mid = time.Now().UTC()
	})

	t.Run("NotesRenderAsText", func(t *testing.T) {
		for _, tb := range []*tab{bobs, alices} {
			got := eval[map[string]any](t, tb, "read the note's cell", `(() => {
				const td = document.querySelector('`+row(escalated.ID)+` td.notes');
				return {text: td.textContent, elements: td.querySelectorAll('*').length,
					imgs: document.querySelectorAll('img').length, scripts: document.scripts.length,
					pwned: window.__pwned === undefined ? 'no' : String(window.__pwned)};
			})()`)
			if got["text"] != scriptNote || got["elements"] != float64(0) || got["imgs"] != float64(0) || got["scripts"] != float64(1) || got["pwned"] != "no" {
				t.Fatalf("the note's cell: %v; want exactly the note's text, no element in it, no script run", got)
			}
		}
	})

	t.Run("PickUpAndLoseTheRace", func(t *testing.T) {
		// Bob clicks first, but his claim is held in his browser until
		// alice's has won: his then reaches the server second and loses.
		paused := make(chan fetch.RequestID, 1)
		if err := chromedp.Listen(bobs.ctx, func(ev any) {
			if e, ok := ev.(*fetch.EventRequestPaused); ok {
				select {
				case paused <- e.RequestID:
				default:
				}
			}
		}); err != nil {
			t.Fatal(err)
		}
		bobs.do(t, "hold bob's claims", chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
			_, err := chromedp.Call(ctx, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{{URLPattern: "*/claim", RequestStage: fetch.RequestStageRequest}}})
			return err
		}))
		bobs.do(t, "bob clicks Pick Up", chromedp.Click(chromedp.CSS(row(escalated.ID)+` button.pick-up`)))
		var held fetch.RequestID
		select {
		case held = <-paused:
		case <-time.After(stepTimeout):
			t.Fatalf("bob's claim never left his browser; screenshot: %s", bobs.shot(t, "failed"))
		}
		alices.do(t, "alice clicks Pick Up and wins",
			chromedp.Click(chromedp.CSS(row(escalated.ID)+` button.pick-up`)),
			chromedp.WaitVisible(chromedp.CSS(`#pickup-result [data-outcome="won"]`)),
			chromedp.WaitNotPresent(chromedp.CSS(row(escalated.ID))))
		alices.shot(t, "picked-up")
		bobs.do(t, "let bob's claim go",
			chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
				_, err := chromedp.Call(ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: held})
				return err
			}),
			chromedp.WaitVisible(chromedp.CSS(`#pickup-result [data-outcome="lost"]`)))
		bobs.shot(t, "lost-the-race")
		lost := eval[map[string]string](t, bobs, "read the outcome", `({
			text: document.querySelector('#pickup-result').textContent,
			winner: document.querySelector('#winner').textContent,
			at: document.querySelector('#pickup-result time').dateTime})`)
		if lost["winner"] != alice.id.String() || !strings.Contains(lost["text"], "Handoff already claimed") {
			t.Fatalf("bob's loss says %v; want alice %s named as the winner", lost, alice.id)
		}
		if at, err := time.Parse(time.RFC3339Nano, lost["at"]); err != nil || at.Before(escalated.CreatedAt) {
			t.Fatalf("the winner's time %q: %v", lost["at"], err)
		}
		bobs.do(t, "release bob's claims", chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
			_, err := chromedp.Call(ctx, fetch.Disable, cdp.Empty{})
			return err
		}), chromedp.WaitNotPresent(chromedp.CSS(row(escalated.ID))))
	})

	t.Run("ClaimElsewhereRemovesTheRowWithinASecond", func(t *testing.T) {
		h := l.escalate(t, carol, uuid.New(), "printer on fire")
		bobs.do(t, "wait for the escalation", chromedp.WaitVisible(chromedp.CSS(row(h.ID))))
		l.claim(t, carol, h)
		claimed := time.Now()
		bobs.do(t, "wait for the row to go", chromedp.WaitNotPresent(chromedp.CSS(row(h.ID))))
		took := time.Since(claimed)
		t.Logf("a claim over REST removed the row in %v", took.Round(time.Millisecond))
		if took > time.Second {
			t.Errorf("the row went %v after the claim, want within a second", took)
		}
	})

	auditors := b.tab(t, "auditor")
	t.Run("AuditorTimeline", func(t *testing.T) {
		auditors.do(t, "open the auditor's link", chromedp.Navigate(auditor.link), chromedp.WaitVisible(chromedp.CSS(`#live`)))
		auditors.open(t, "#/session/"+session.String())
		auditors.do(t, "wait for the timeline", chromedp.WaitVisible(chromedp.CSS(`#timeline-rows tr[data-type="HandoffClaimed"]`)))
		auditors.shot(t, "session-timeline")
		rows := eval[[]map[string]string](t, auditors, "read the timeline", `[...document.querySelectorAll('#timeline-rows tr')].map((tr) => {
			const cells = [...tr.children].map((td) => td.textContent);
			return {position: cells[0], type: tr.dataset.type, who: cells[2], role: cells[3], when: tr.querySelector('time').dateTime,
				request: cells[5], client: cells[6], state: cells[7], notes: (tr.querySelector('td:nth-child(2) .notes') || {}).textContent || ''};
		})`)
		if len(rows) != 2 {
			t.Fatalf("timeline rows: %v, want the escalation and the claim", rows)
		}
		want := []struct{ typ, who, role, state string }{
			{"HandoffEscalated", carol.id.String(), "engineer", "open (escalate, high)"},
			{"HandoffClaimed", alice.id.String(), "engineer", "claimed (escalate, high) by " + alice.id.String()},
		}
		for i, w := range want {
			r := rows[i]
			if r["type"] != w.typ || r["who"] != w.who || r["role"] != w.role || !strings.Contains(r["state"], w.state) ||
				r["client"] != "127.0.0.1" || len(r["request"]) != 26 || r["position"] == "" || r["when"] == "" {
				t.Errorf("timeline row %d: %v; want %+v from 127.0.0.1 with a request id", i, r, w)
			}
		}
		if rows[0]["notes"] != scriptNote {
			t.Errorf("the timeline's note: %q, want the note as text", rows[0]["notes"])
		}
	})

	t.Run("TimelineRefusedWithTheAPIsDetail", func(t *testing.T) {
		bobs.open(t, "#/session/"+session.String())
		bobs.do(t, "wait for the refusal and the handoffs", chromedp.WaitVisible(chromedp.CSS(`#timeline-result .msg.error`)),
			chromedp.WaitVisible(chromedp.CSS(`#history-rows tr`)))
		got := eval[string](t, bobs, "read the refusal", `document.querySelector('#timeline-result').textContent`)
		if got != "Auditor, admin or owner access required" {
			t.Fatalf("an engineer's timeline shows %q, want the API's detail", got)
		}
		if n := eval[float64](t, bobs, "count the handoffs", `document.querySelectorAll('#history-rows tr').length`); n != 1 {
			t.Fatalf("bob sees %v handoffs of the session, want 1", n)
		}
	})

	t.Run("AsOf", func(t *testing.T) {
		auditors.open(t, "#/session/"+session.String()+"?as_of="+mid.Format(time.RFC3339Nano))
		auditors.do(t, "wait for the session as of before the claim",
			chromedp.WaitVisible(chromedp.CSS(`#history-rows tr[data-status="open"]`)),
			chromedp.WaitVisible(chromedp.CSS(`#timeline-hidden`)))
		auditors.shot(t, "session-as-of")
		if n := eval[float64](t, auditors, "count the timeline", `document.querySelectorAll('#timeline-rows tr').length`); n != 1 {
			t.Fatalf("the timeline as of before the claim has %v events, want 1", n)
		}
		auditors.do(t, "open the queue as of then",
			chromedp.Click(chromedp.CSS(`#queue-then`)),
			chromedp.WaitVisible(chromedp.CSS(row(escalated.ID))),
			chromedp.WaitVisible(chromedp.CSS(`#live[data-state="past"]`)))
		auditors.shot(t, "queue-as-of")
		if n := eval[float64](t, auditors, "count the Pick Up buttons", `document.querySelectorAll('button.pick-up').length`); n != 0 {
			t.Fatalf("the queue as of a past moment offers %v Pick Up buttons", n)
		}
	})

	admins := b.tab(t, "admin")
	t.Run("AuditHead", func(t *testing.T) {
		admins.do(t, "open the admin's link", chromedp.Navigate(admin.link), chromedp.WaitVisible(chromedp.CSS(`#live`)))
		// The sealer signs a checkpoint within about a second of an append.
		deadline := time.Now().Add(stepTimeout)
		for {
			admins.open(t, "#/audit?reload="+uuid.NewString())
			admins.do(t, "wait for the head", chromedp.WaitVisible(chromedp.CSS(`#head-result dl, #head-result .msg`)))
			if eval[bool](t, admins, "look for the head", `!!document.getElementById('head-hash')`) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no sealed head after %v; screenshot: %s", stepTimeout, admins.shot(t, "failed"))
			}
			time.Sleep(200 * time.Millisecond) // polling for the sealer's checkpoint
		}
		var head struct {
			Position int64  `json:"position"`
			Hash     string `json:"hash"`
		}
		l.call(t, admin, http.MethodGet, "/audit/head", "", http.StatusOK, &head)
		got := eval[map[string]string](t, admins, "read the head", `({hash: document.getElementById('head-hash').textContent, position: document.getElementById('head-position').textContent})`)
		if got["hash"] == "" || len(got["hash"]) != len(head.Hash) {
			t.Fatalf("the page's head %v, the API's %+v", got, head)
		}
		admins.do(t, "copy the hash", chromedp.Click(chromedp.CSS(`#copy-hash`)), chromedp.WaitVisible(chromedp.CSS(`#copy-result`)))
		admins.shot(t, "audit")
	})

	t.Run("EraseAsAdmin", func(t *testing.T) {
		// An engineer is refused, with the API's detail.
		bobs.open(t, "#/audit?session="+session.String())
		bobs.do(t, "bob asks to erase", chromedp.SetValue(chromedp.CSS(`#erase-reason`), "customer asked"),
			chromedp.Click(chromedp.CSS(`#erase-start`)), chromedp.Click(chromedp.CSS(`#erase-confirm-button`)),
			chromedp.WaitVisible(chromedp.CSS(`#erase-result [data-outcome="refused"]`)))
		if got := eval[string](t, bobs, "read the refusal", `document.querySelector('#erase-result').textContent`); got != "Owner or admin access required" {
			t.Fatalf("an engineer's erasure shows %q, want the API's detail", got)
		}
		admins.open(t, "#/audit?session="+session.String())
		admins.do(t, "the admin asks to erase", chromedp.SetValue(chromedp.CSS(`#erase-reason`), "GDPR request 42"),
			chromedp.Click(chromedp.CSS(`#erase-start`)), chromedp.WaitVisible(chromedp.CSS(`#erase-confirm-button`)))
		admins.shot(t, "erase-confirm")
		if n := eval[float64](t, admins, "look at the notes", `document.activeElement.id === 'erase-confirm-button' ? 1 : 0`); n != 1 {
			t.Error("the confirmation does not have the focus")
		}
		admins.do(t, "confirm", chromedp.Click(chromedp.CSS(`#erase-confirm-button`)),
			chromedp.WaitVisible(chromedp.CSS(`#erase-result [data-outcome="erased"]`)))
		admins.shot(t, "erased")
		admins.do(t, "open the timeline", chromedp.Click(chromedp.CSS(`#erased-session-link`)),
			chromedp.WaitVisible(chromedp.CSS(`#timeline-rows tr[data-type="SessionDataErased"]`)))
		admins.shot(t, "timeline-erased")
		page := eval[string](t, admins, "read the page", `document.getElementById('main').textContent`)
		if strings.Contains(page, "window.__pwned") || strings.Contains(page, "bold") {
			t.Fatalf("the session's page still shows the notes after the erasure:\n%s", page)
		}
		notes := eval[[]string](t, admins, "read the notes", `[...document.querySelectorAll('#history-rows td.notes, #timeline-rows tr[data-type="HandoffEscalated"] .notes')].map((e) => e.textContent)`)
		if len(notes) != 2 || notes[0] != "(notes erased)" || notes[1] != "(notes erased)" {
			t.Fatalf("notes after the erasure: %q, want them shown as erased", notes)
		}
	})

	t.Run("Keyboard", func(t *testing.T) {
		bobs.open(t, "#/queue")
		bobs.do(t, "wait for the queue", chromedp.WaitVisible(chromedp.CSS(`#live[data-state="live"]`)))
		var order []string
		for range 4 {
			bobs.do(t, "press Tab", chromedp.KeyEvent(kb.Tab))
			order = append(order, eval[string](t, bobs, "read the focus", `(document.activeElement.id || document.activeElement.textContent).trim()`))
		}
		// main has the focus after a page change; Tab goes on from it.
		if order[0] != "queue-as-of" {
			t.Fatalf("focus order from the page's start: %v, want the page's first field first", order)
		}
	})

	t.Run("PhoneWidth", func(t *testing.T) {
		phone := b.tab(t, "phone")
		phone.do(t, "open the queue on a phone",
			chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile),
			chromedp.Navigate(bob.link),
			chromedp.WaitVisible(chromedp.CSS(`#live[data-state="live"]`)))
		l.escalate(t, carol, uuid.New(), strings.Repeat("a long note without spaces ", 3)+strings.Repeat("x", 200))
		phone.do(t, "wait for the row", chromedp.WaitVisible(chromedp.CSS(`#queue-rows tr`)))
		phone.shot(t, "queue-phone")
		if wide := eval[bool](t, phone, "measure the page", `document.documentElement.scrollWidth > window.innerWidth`); wide {
			t.Fatal("the queue is wider than a phone's screen")
		}
	})

	t.Run("PagesLoadWithinBudgetWithAThousandHandoffs", func(t *testing.T) {
		select {
		case err := <-bulk:
			if err != nil {
				t.Fatalf("make the busy team's handoffs: %v", err)
			}
		case <-time.After(2 * time.Minute):
			t.Fatal("the busy team's handoffs were not made within 2 minutes")
		}
		t.Logf("the 1000 handoffs, made while the steps above ran, were done %v after they began", time.Since(bulkStart).Round(time.Millisecond))
		l.waitSealed(t, busy)
		busys := b.tab(t, "busy")
		busys.do(t, "open the busy queue", chromedp.Navigate(busy.link), chromedp.WaitVisible(chromedp.CSS(`#queue-more:not([hidden])`)))
		first := busys.loadTime(t)
		// Again, in a tab whose renderer is up: the page as a user who
		// reloads it sees it.
		busys.do(t, "reload the busy queue", chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS(`#queue-more:not([hidden])`)))
		queue := busys.loadTime(t)
		if n := eval[float64](t, busys, "count the rows", `document.querySelectorAll('#queue-rows tr').length`); n != 100 {
			t.Fatalf("the first page of the queue has %v rows, want 100", n)
		}
		busys.do(t, "load the next page", chromedp.Click(chromedp.CSS(`#queue-more`)),
			chromedp.WaitReady(chromedp.CSS(`#queue-rows tr:nth-child(200)`)))
		busys.shot(t, "queue-thousand")
		// Each page is timed from a click three times, and its best time
		// kept: a page that is slow is slow each time, while a machine
		// shared with other jobs may stall any one load.
		var sessionPage, auditPage, queueAgain time.Duration
		for range timings {
			busys.open(t, "#/session/"+session.String())
			sessionPage = best(sessionPage, busys.loadTime(t))
			busys.open(t, "#/audit")
			auditPage = best(auditPage, busys.loadTime(t))
			busys.open(t, "#/queue")
			queueAgain = best(queueAgain, busys.loadTime(t))
		}
		t.Logf("pages showed their data in: queue %v from a reload (%v from the link, in a new tab); best of %d from a click: queue %v, session %v, audit %v", queue, first, timings, queueAgain, sessionPage, auditPage)
		for name, took := range map[string]time.Duration{"queue": queueAgain, "session": sessionPage, "audit": auditPage} {
			if took > pageBudget {
				t.Errorf("the %s page took %v from a click, want under %v", name, took, pageBudget)
			}
		}
		// A whole load also starts Chromium's renderer and compiles the
		// script, which a loaded machine slows many times over: bounded
		// here, measured in docs/console.md.
		if queue > reloadBound {
			t.Errorf("the queue page took %v from a reload, want under %v", queue, reloadBound)
		}
	})
	t.Logf("the browser tests took %v", time.Since(start).Round(time.Millisecond))
}

// waitSealed waits until the server has settled after a burst of
// appends: the sealer's checkpoint covers the account's last event.
func (l *ledgerd) waitSealed(tb testing.TB, u user) {
	tb.Helper()
	ledgertest.WaitUntil(tb, stepTimeout, "the sealer covers the log", func() bool {
		var head struct {
			Position int64 `json:"position"`
		}
		l.call(tb, u, http.MethodGet, "/audit/head", "", http.StatusOK, &head)
		var after []json.RawMessage
		l.call(tb, u, http.MethodGet, fmt.Sprintf("/events?after=%d&limit=1", head.Position), "", http.StatusOK, &after)
		return len(after) == 0
	})
}

// park makes n parks of new sessions as u, with workers requests at a
// time; for another goroutine, it returns its error.
func (l *ledgerd) park(u user, n, workers int) error {
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				if err := l.tryPark(u, uuid.New(), fmt.Sprintf("handoff %d of the busy team", i)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs // nil when none failed
}

// tryPark parks a session as u and returns its error.
func (l *ledgerd) tryPark(u user, session uuid.UUID, notes string) error {
	body, err := json.Marshal(map[string]string{"intent": "park", "engineer_notes": notes, "priority": "low"})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.base+"/ai-sessions/"+session.String()+"/handoff", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+u.token)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusCreated {
		got, _ := io.ReadAll(res.Body)
		return fmt.Errorf("park: %d %s", res.StatusCode, got)
	}
	return nil
}
