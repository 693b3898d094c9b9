package httpapi_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/domain"
)

func init() {
	openapi3filter.RegisterBodyDecoder("application/x-ndjson", decodeNDJSON)
}

// decodeNDJSON reads a body of one JSON value a line as the array of its
// lines, which the document's schema of an export describes.
func decodeNDJSON(body io.Reader, _ http.Header, _ *openapi3.SchemaRef, _ openapi3filter.EncodingFn) (any, error) {
	lines := []any{}
	scanner := bufio.NewScanner(body)
	scanner.Buffer(nil, 1<<20)
	for scanner.Scan() {
		var v any
		if err := json.Unmarshal(scanner.Bytes(), &v); err != nil {
			return nil, fmt.Errorf("line %d: %w", len(lines)+1, err)
		}
		lines = append(lines, v)
	}
	return lines, scanner.Err()
}

// apiDocument is the OpenAPI document, loaded and checked once, and a
// router that finds its operations.
var apiDocument = sync.OnceValues(func() (routers.Router, error) {
	doc, err := openapi3.NewLoader().LoadFromFile("openapi.json")
	if err != nil {
		return nil, fmt.Errorf("load openapi.json: %w", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("openapi.json is not a valid document: %w", err)
	}
	return gorillamux.NewRouter(doc)
})

// conforms checks a request and its answer against the OpenAPI document:
// the answer's status, headers and body must be as the document says, and
// a request the document does not allow must be refused with a 4xx. A
// request for a route the document lacks must get 404 or 405. The server
// checks tokens: here any token passes.
func conforms(ctx context.Context, req *http.Request, body string, res response) error {
	router, err := apiDocument()
	if err != nil {
		return err
	}
	req = req.Clone(ctx)
	req.Body = io.NopCloser(strings.NewReader(body))
	route, params, err := router.FindRoute(req)
	if err != nil {
		if res.status == http.StatusNotFound || res.status == http.StatusMethodNotAllowed {
			return nil
		}
		return fmt.Errorf("%s %s: answered %d, but not in openapi.json: %w", req.Method, req.URL.Path, res.status, err)
	}
	for name, value := range params {
		// The router gives path parameters as sent; the server reads them
		// unescaped (%7B is {).
		if params[name], err = url.PathUnescape(value); err != nil {
			return fmt.Errorf("%s %s: path parameter %s: %w", req.Method, req.URL.Path, name, err)
		}
	}
	opts := &openapi3filter.Options{
		AuthenticationFunc:    openapi3filter.NoopAuthenticationFunc,
		IncludeResponseStatus: true,
		SkipSettingDefaults:   true,
	}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: opts}
	if err := openapi3filter.ValidateRequest(ctx, in); err != nil && (res.status < 400 || res.status >= 500) {
		return fmt.Errorf("%s %s: answered %d to a request openapi.json does not allow: %w", req.Method, req.URL, res.status, err)
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: res.status, Header: res.header, Options: opts}
	out.SetBodyBytes(res.body)
	if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
		return fmt.Errorf("%s %s: answer %d %s does not follow openapi.json: %w", req.Method, req.URL, res.status, res.body, err)
	}
	return nil
}

// TestOpenAPIDocument checks that the document describes every route the
// API serves, and that GET /openapi.json serves it without a token.
func TestOpenAPIDocument(t *testing.T) {
	s := startServer(t, newSQLiteBackend)
	served := s.do(t, request{method: http.MethodGet, path: "/openapi.json"}, http.StatusOK)
	onDisk, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(served.body, onDisk) {
		t.Fatal("GET /openapi.json does not serve openapi.json")
	}
	var doc struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(onDisk, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Fatalf("openapi = %q, want 3.1.0", doc.OpenAPI)
	}
	var documented []string
	for path, item := range doc.Paths {
		for method := range item {
			if method != "parameters" {
				documented = append(documented, strings.ToUpper(method)+" "+path)
			}
		}
	}
	param := regexp.MustCompile(`:([a-z_]+)`)
	var routes []string
	for _, r := range s.echo.Routes() {
		routes = append(routes, r.Method+" "+param.ReplaceAllString(r.Path, "{$1}"))
	}
	slices.Sort(documented)
	slices.Sort(routes)
	if !slices.Equal(documented, routes) {
		t.Fatalf("openapi.json describes\n%s\nthe API serves\n%s", strings.Join(documented, "\n"), strings.Join(routes, "\n"))
	}
}

// TestOpenAPIConformance checks that the document's checks bite: an answer
// the document does not describe, or a request it does not allow answered
// with success, is an error.
func TestOpenAPIConformance(t *testing.T) {
	ctx := context.Background()
	alice := newTeam().user(domain.RoleEngineer)
	get := func(path string) *http.Request {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://ledgerd"+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+token(t, alice))
		return req
	}
	jsonHeader := http.Header{"Content-Type": {"application/json"}}
	history := historyPath(uuid.New())
	for _, tc := range []struct {
		name string
		req  *http.Request
		res  response
	}{
		{"UndocumentedStatus", get(history), response{status: http.StatusTeapot, header: jsonHeader, body: []byte(`{"detail":"x"}`)}},
		{"UndocumentedField", get(history), response{status: http.StatusOK, header: jsonHeader, body: []byte(`[{"id":"x"}]`)}},
		{"BadTime", get(history), response{status: http.StatusOK, header: jsonHeader, body: []byte(`[{"id":"` + uuid.NewString() + `","session_id":"` + uuid.NewString() +
			`","intent":"park","engineer_notes":"","priority":"low","status":"open","created_by":"` + uuid.NewString() +
			`","created_at":"yesterday","claimed_by":null,"claimed_at":null}]`)}},
		{"BadRetryAfter", get(history), response{status: http.StatusServiceUnavailable, header: http.Header{"Content-Type": {"application/json"}, "Retry-After": {"soon"}}, body: []byte(`{"detail":"x"}`)}},
		{"ErrorBodyNotDetail", get(history), response{status: http.StatusUnprocessableEntity, header: jsonHeader, body: []byte(`{"error":"x"}`)}},
		{"BadLimitAccepted", get(history + "?limit=0"), response{status: http.StatusOK, header: jsonHeader, body: []byte(`[]`)}},
		{"MalformedIDAccepted", get("/ai-sessions/x/handoffs"), response{status: http.StatusOK, header: jsonHeader, body: []byte(`[]`)}},
		{"UnknownRouteAnswered", get("/nowhere"), response{status: http.StatusOK, header: jsonHeader, body: []byte(`{}`)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := conforms(ctx, tc.req, "", tc.res)
			if err == nil {
				t.Fatal("conforms accepted it")
			}
			var routeErr *routers.RouteError
			if tc.name != "UnknownRouteAnswered" && errors.As(err, &routeErr) {
				t.Fatalf("route not found: %v", err)
			}
		})
	}
	if err := conforms(ctx, get(history), "", response{status: http.StatusOK, header: jsonHeader, body: []byte(`[]`)}); err != nil {
		t.Fatalf("an empty history: %v", err)
	}
}
