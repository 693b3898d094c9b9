package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/asof"
	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/eventcodec"
	"github.com/resolutionflow/ledgerd/eventstore"
	"github.com/resolutionflow/ledgerd/httpapi"
)

// replayLine is a line of `ledgerd replay`: an event's envelope, as the
// relay publishes it, with the session's state right after the event and,
// for an event the fold passed over (one that does not decode), why.
type replayLine struct {
	eventstore.Event
	State   replayState `json:"state"`
	Skipped string      `json:"skipped,omitempty"`
}

// replayState is a session's state in a replay line: the stream's version
// reached, the holder (who may park, escalate or withdraw; null before the
// first handoff) and the handoffs as the REST API's history shows them,
// newest first.
type replayState struct {
	Version  int64                 `json:"version"`
	Holder   *uuid.UUID            `json:"holder"`
	Handoffs []httpapi.HandoffJSON `json:"handoffs"`
}

func stateOf(s *domain.Session) replayState {
	out := replayState{Version: s.Version, Handoffs: httpapi.HandoffsJSON(asof.NewestFirst(s))}
	if s.Holder != uuid.Nil {
		holder := s.Holder
		out.Holder = &holder
	}
	return out
}

// replay prints the stream of a session, one JSON line per event with
// the session's state folded up to it, for offline review; with --as-of,
// only the events recorded up to that instant.
func replay(ctx context.Context, args []string, stdout io.Writer, logger *slog.Logger) error {
	f := newFlags("replay")
	storage := addStorageFlags(f)
	ids := addSessionFlags(f)
	asOfFlag := f.string("as-of", "", "", "print only the events recorded at or before this RFC 3339 time")
	masterKeyFile := addMasterKeyFlag(f)
	if err := f.parse(args); err != nil {
		return err
	}
	account, session, err := ids.ids()
	if err != nil {
		return err
	}
	var until time.Time
	if *asOfFlag != "" {
		if until, err = time.Parse(time.RFC3339Nano, *asOfFlag); err != nil {
			return usageErrorf("--as-of must be an RFC 3339 time, such as 2026-01-02T15:04:05Z: %q", *asOfFlag)
		}
	}

	b, _, err := storage.openLedgerKeyed(ctx, *masterKeyFile, logger)
	if err != nil {
		return err
	}
	defer b.close()
	stream := eventcodec.StreamName(account, session)
	events, err := b.events.ReadStream(ctx, stream)
	if err != nil {
		return err
	}
	if *asOfFlag != "" {
		events = asof.Until(events, until)
	}
	out := bufio.NewWriter(stdout)
	enc := json.NewEncoder(out)
	_, err = asof.Fold(account, session, events, func(e eventstore.Event, s *domain.Session, skipped error) error {
		line := replayLine{Event: e, State: stateOf(s)}
		if skipped != nil {
			line.Skipped = skipped.Error()
		}
		return enc.Encode(line)
	})
	if err != nil {
		return fmt.Errorf("replay %s: %w", stream, err)
	}
	return out.Flush()
}

// sessionFlags are the --account and --session of a command about one
// session, both required.
type sessionFlags struct{ account, session *string }

func addSessionFlags(f *flags) sessionFlags {
	return sessionFlags{
		account: f.string("account", "", "", "the session's account id (required)"),
		session: f.string("session", "", "", "the session id (required)"),
	}
}

// ids parses the two flags, once parsed.
func (s sessionFlags) ids() (account, session uuid.UUID, err error) {
	if account, err = requiredID("account", *s.account); err != nil {
		return account, session, err
	}
	session, err = requiredID("session", *s.session)
	return account, session, err
}

// requiredID parses the id of a required flag: any spelling of a UUID but
// the nil one.
func requiredID(flag, value string) (uuid.UUID, error) {
	id, err := uuid.Parse(value)
	switch {
	case value == "":
		return uuid.Nil, usageErrorf("--%s is required", flag)
	case err != nil || id == uuid.Nil:
		return uuid.Nil, usageErrorf("--%s must be a UUID other than the nil UUID: %q", flag, value)
	}
	return id, nil
}
