package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/httpapi"
	"github.com/resolutionflow/ledgerd/projections"
)

// readList is a list of the read models that `ledgerd queue` and
// `ledgerd history` print: the flag naming its scope within the account,
// how to read a page of it, and the place of a handoff in it.
type readList struct {
	name, scopeFlag, scopeUsage string
	read                        func(ctx context.Context, q projections.Queries, account, scope uuid.UUID, page projections.Page) ([]domain.Handoff, error)
	place                       func(domain.Handoff) projections.Cursor
}

var (
	queueList = readList{
		name: "queue", scopeFlag: "team", scopeUsage: "the team id (required)",
		read: func(ctx context.Context, q projections.Queries, account, team uuid.UUID, page projections.Page) ([]domain.Handoff, error) {
			return q.Queue(ctx, account, team, page)
		},
		place: projections.QueueCursor,
	}
	historyList = readList{
		name: "history", scopeFlag: "session", scopeUsage: "the session id (required)",
		read: func(ctx context.Context, q projections.Queries, account, session uuid.UUID, page projections.Page) ([]domain.Handoff, error) {
			return q.History(ctx, account, session, page)
		},
		place: projections.HistoryCursor,
	}
)

// printList prints a list of the read models, as they stand in the
// database (whether or not a projector is running), in the order the REST
// API lists it: the queue of a team (open handoffs, escalations first,
// then higher priority, then oldest first) or the history of a session
// (newest first). On a terminal it prints a table; elsewhere, or with
// --json, the JSON array the REST API answers.
func printList(ctx context.Context, l readList, args []string, stdout io.Writer, logger *slog.Logger) error {
	f := newFlags(l.name)
	storage := addStorageFlags(f)
	masterKeyFile := addMasterKeyFlag(f)
	accountFlag := f.string("account", "", "", "the account id (required)")
	scopeFlag := f.string(l.scopeFlag, "", "", l.scopeUsage)
	limit := f.int("limit", "", 0, "print at most this many handoffs (0: all of them)")
	asJSON := f.bool("json", "", false, "print the JSON array the REST API answers; the default when standard output is not a terminal (--json=false prints the table there too)")
	if err := f.parse(args); err != nil {
		return err
	}
	account, err := requiredID("account", *accountFlag)
	if err != nil {
		return err
	}
	scope, err := requiredID(l.scopeFlag, *scopeFlag)
	if err != nil {
		return err
	}
	if *limit < 0 {
		return usageErrorf("--limit must be 0 (all) or more: %d", *limit)
	}
	jsonSet := false
	f.Visit(func(fl *flag.Flag) { jsonSet = jsonSet || fl.Name == "json" })
	if !jsonSet {
		*asJSON = !isTerminal(stdout)
	}

	// The rows' notes are sealed: they are read opened by the master key.
	b, _, err := storage.openLedgerKeyed(ctx, *masterKeyFile, logger)
	if err != nil {
		return err
	}
	defer b.close()
	var hs []domain.Handoff
	page := projections.Page{}
	for {
		page.Limit = projections.MaxPageSize
		if *limit > 0 {
			page.Limit = min(page.Limit, *limit-len(hs))
		}
		got, err := l.read(ctx, b.views, account, scope, page)
		if err != nil {
			return fmt.Errorf("read the %s: %w", l.name, err)
		}
		hs = append(hs, got...)
		if len(got) < page.Limit || len(hs) == *limit {
			break
		}
		after := l.place(got[len(got)-1])
		page.After = &after
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(httpapi.HandoffsJSON(hs))
	}
	return printTable(stdout, hs)
}

// maxNotesInTable is how many characters of a handoff's notes a table
// shows.
const maxNotesInTable = 40

// printTable prints handoffs as a table for a person. Notes are quoted
// (control characters, such as terminal escapes, are escaped) and cut.
func printTable(w io.Writer, hs []domain.Handoff) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSESSION\tINTENT\tPRIORITY\tSTATUS\tCREATED_AT\tCREATED_BY\tCLAIMED_BY\tNOTES")
	for _, h := range hs {
		claimedBy := "-"
		if h.ClaimedBy != uuid.Nil {
			claimedBy = h.ClaimedBy.String()
		}
		notes := h.Notes
		if utf8.RuneCountInString(notes) > maxNotesInTable {
			notes = string([]rune(notes)[:maxNotesInTable]) + "…"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.ID, h.SessionID, h.Intent, h.Priority, h.Status,
			h.CreatedAt.UTC().Format(time.RFC3339), h.CreatedBy, claimedBy, strconv.Quote(notes))
	}
	return tw.Flush()
}
