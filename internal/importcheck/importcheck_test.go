package importcheck_test

import (
	"context"
	"errors"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	// The packages checked, linked into the test so that its cached
	// result goes stale whenever one of them, or what it imports, changes.
	_ "github.com/resolutionflow/ledgerd/audit"
	_ "github.com/resolutionflow/ledgerd/commands"
	_ "github.com/resolutionflow/ledgerd/domain"
	_ "github.com/resolutionflow/ledgerd/eventstore"
	_ "github.com/resolutionflow/ledgerd/httpapi"
	_ "github.com/resolutionflow/ledgerd/idempotency"
	_ "github.com/resolutionflow/ledgerd/leader"
	_ "github.com/resolutionflow/ledgerd/projections"
	_ "github.com/resolutionflow/ledgerd/relay"
	_ "github.com/resolutionflow/ledgerd/shred"
	_ "github.com/resolutionflow/ledgerd/tail"
)

const module = "github.com/resolutionflow/ledgerd/"

// Module path prefixes of what some packages must not link.
var (
	databaseDrivers = []string{"github.com/jackc/pgx/", "modernc.org/sqlite", "github.com/pressly/goose/"}
	transports      = []string{"github.com/labstack/echo/", "github.com/nats-io/"}
)

func TestImports(t *testing.T) {
	for pkg, forbidden := range map[string][]string{
		"domain": append(slices.Clone(databaseDrivers), transports...),
		"relay":  databaseDrivers,
		"tail":   databaseDrivers,
	} {
		t.Run(pkg, func(t *testing.T) {
			t.Parallel()
			imports := importGraph(t, module+pkg)
			for _, prefix := range forbidden {
				if chain := findChain(imports, module+pkg, prefix); chain != nil {
					t.Errorf("%s links %s through %s", pkg, prefix, strings.Join(chain, " -> "))
				}
			}
		})
	}
}

// importGraph returns the imports of pkg and of every package it links,
// not counting tests, from go list (go test puts its own go first on PATH).
func importGraph(tb testing.TB, pkg string) map[string][]string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "list", "-deps", "-f", `{{.ImportPath}} {{join .Imports " "}}`, pkg).Output()
	if err != nil {
		var stderr string
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			stderr = string(ee.Stderr)
		}
		tb.Fatalf("go list -deps %s: %v\n%s", pkg, err, stderr)
	}
	graph := map[string][]string{}
	for line := range strings.Lines(string(out)) {
		fields := strings.Fields(line)
		if len(fields) > 0 {
			graph[fields[0]] = fields[1:]
		}
	}
	if _, ok := graph[pkg]; !ok {
		tb.Fatalf("go list -deps %s did not list %s", pkg, pkg)
	}
	return graph
}

// findChain returns the shortest chain of imports from pkg to a package
// whose path starts with prefix; nil when pkg links none.
func findChain(graph map[string][]string, pkg, prefix string) []string {
	from := map[string]string{pkg: ""}
	queue := []string{pkg}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if strings.HasPrefix(p, prefix) {
			var chain []string
			for ; p != ""; p = from[p] {
				chain = append(chain, strings.TrimPrefix(p, module))
			}
			slices.Reverse(chain)
			return chain
		}
		for _, next := range graph[p] {
			if _, seen := from[next]; !seen {
				from[next] = p
				queue = append(queue, next)
			}
		}
	}
	return nil
}

// TestFindChain makes sure the check can fail: it finds a driver linked
// two imports down.
func TestFindChain(t *testing.T) {
	graph := map[string][]string{
		module + "a":              {module + "b", "fmt"},
		module + "b":              {"github.com/jackc/pgx/v5"},
		"github.com/jackc/pgx/v5": nil,
	}
	got := findChain(graph, module+"a", "github.com/jackc/pgx/")
	want := []string{"a", "b", "github.com/jackc/pgx/v5"}
	if !slices.Equal(got, want) {
		t.Errorf("findChain = %v, want %v", got, want)
	}
	if got := findChain(graph, module+"a", "modernc.org/sqlite"); got != nil {
		t.Errorf("findChain found %v", got)
	}
}
