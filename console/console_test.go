package console_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/resolutionflow/ledgerd/console"
)

func get(t *testing.T, method, path string, header ...string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	console.Handler().ServeHTTP(w, req)
	return w.Result()
}

// TestHandler_SecurityHeaders checks that every answer, errors included,
// carries the strict policy and the other security headers.
func TestHandler_SecurityHeaders(t *testing.T) {
	for _, tc := range []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/console/", http.StatusOK},
		{http.MethodGet, "/console/console.js", http.StatusOK},
		{http.MethodGet, "/console/console.css", http.StatusOK},
		{http.MethodHead, "/console/", http.StatusOK},
		{http.MethodGet, "/console/nothing.js", http.StatusNotFound},
		{http.MethodGet, "/console/../go.mod", http.StatusNotFound},
		{http.MethodPost, "/console/", http.StatusMethodNotAllowed},
	} {
		res := get(t, tc.method, tc.path)
		if res.StatusCode != tc.status {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, res.StatusCode, tc.status)
		}
		for name, want := range map[string]string{
			"Content-Security-Policy": console.ContentSecurityPolicy,
			"X-Content-Type-Options":  "nosniff",
			"Referrer-Policy":         "no-referrer",
			"X-Frame-Options":         "DENY",
		} {
			if got := res.Header.Get(name); got != want {
				t.Errorf("%s %s: %s = %q, want %q", tc.method, tc.path, name, got, want)
			}
		}
	}
	csp := console.ContentSecurityPolicy
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'", "base-uri 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("the policy lacks %q: %s", want, csp)
		}
	}
	for _, loose := range []string{"unsafe-inline", "unsafe-eval", "http:", "https:", "*", "data:"} {
		if strings.Contains(csp, loose) {
			t.Errorf("the policy allows %q: %s", loose, csp)
		}
	}
}

// TestHandler_ServesThePage checks the page's types and that the page
// holds no inline script or style and loads nothing from elsewhere.
func TestHandler_ServesThePage(t *testing.T) {
	for path, want := range map[string]string{
		"/console/":            "text/html; charset=utf-8",
		"/console/console.js":  "text/javascript; charset=utf-8",
		"/console/console.css": "text/css; charset=utf-8",
	} {
		res := get(t, http.MethodGet, path)
		if got := res.Header.Get("Content-Type"); got != want {
			t.Errorf("%s: Content-Type %q, want %q", path, got, want)
		}
		etag := res.Header.Get("ETag")
		if again := get(t, http.MethodGet, path, "If-None-Match", etag); etag == "" || again.StatusCode != http.StatusNotModified {
			t.Errorf("%s: ETag %q, a request with it got %d", path, etag, again.StatusCode)
		}
	}
	body, err := io.ReadAll(get(t, http.MethodGet, "/console/").Body)
	if err != nil {
		t.Fatal(err)
	}
	page := string(body)
	for _, tag := range regexp.MustCompile(`(?is)<script[^>]*>`).FindAllString(page, -1) {
		if !strings.Contains(tag, `src="console.js"`) {
			t.Errorf("a script that is not console.js: %s", tag)
		}
	}
	if regexp.MustCompile(`(?is)<script[^>]*>\s*[^<\s]`).MatchString(page) {
		t.Error("the page has an inline script")
	}
	for _, bad := range []string{"<style", " style=", " onclick=", " onload=", "://"} {
		if strings.Contains(page, bad) {
			t.Errorf("the page holds %q", bad)
		}
	}
	js, err := io.ReadAll(get(t, http.MethodGet, "/console/console.js").Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "localStorage", "document.cookie"} {
		if strings.Contains(string(js), bad) {
			t.Errorf("console.js uses %s", bad)
		}
	}
}
