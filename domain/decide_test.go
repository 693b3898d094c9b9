package domain_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/domain"
)

// The cast of the tests: users of one account and team, a viewer, and an
// engineer of another account.
var (
	account = uuid.MustParse("00000000-0000-0000-0000-0000000000a1")
	team    = uuid.MustParse("00000000-0000-0000-0000-0000000000b1")
	session = uuid.MustParse("00000000-0000-0000-0000-0000000000c1")

	alice   = user(account, domain.RoleEngineer) // creates the first handoff
	bob     = user(account, domain.RoleAdmin)
	olga    = user(account, domain.RoleOwner)
	erin    = user(account, domain.RoleEngineer)
	viewer  = user(account, domain.RoleViewer)
	auditor = user(account, domain.RoleAuditor)
	mallory = user(uuid.MustParse("00000000-0000-0000-0000-0000000000a2"), domain.RoleOwner)

	h1, h2, h3 = uuid.New(), uuid.New(), uuid.New()

	t0 = time.Date(2025, 6, 1, 9, 0, 0, 0, time.UTC)
)

func user(acct uuid.UUID, role domain.Role) domain.Actor {
	return domain.Actor{UserID: uuid.New(), AccountID: acct, TeamID: team, Role: role}
}

const notes = "stuck on DNS"

func at(minutes int) time.Time { return t0.Add(time.Duration(minutes) * time.Minute) }

// Events of the session, as the decisions below would have made them.

func parked(id uuid.UUID, by domain.Actor, minute int) domain.Event {
	return domain.HandoffParked{HandoffCreated: created(id, by, domain.PriorityNormal, minute)}
}

func escalated(id uuid.UUID, by domain.Actor, minute int) domain.Event {
	return domain.HandoffEscalated{HandoffCreated: created(id, by, domain.PriorityUrgent, minute)}
}

func created(id uuid.UUID, by domain.Actor, p domain.Priority, minute int) domain.HandoffCreated {
	return domain.HandoffCreated{
		HandoffID: id, SessionID: session, AccountID: account, TeamID: by.TeamID,
		CreatedBy: by.UserID, Notes: notes, Priority: p, At: at(minute),
	}
}

func claimedBy(id uuid.UUID, by domain.Actor, minute int) domain.Event {
	return domain.HandoffClaimed{HandoffID: id, SessionID: session, ClaimedBy: by.UserID, Role: by.Role, At: at(minute)}
}

func withdrawnBy(id uuid.UUID, by domain.Actor, minute int) domain.Event {
	return domain.HandoffWithdrawn{HandoffID: id, SessionID: session, WithdrawnBy: by.UserID, At: at(minute)}
}

// Commands, all given at minute 30, and the events they make.

func park(by domain.Actor, id uuid.UUID) domain.CreateHandoff {
	return domain.CreateHandoff{Actor: by, HandoffID: id, Intent: domain.IntentPark, Notes: notes, Priority: domain.PriorityHigh, At: at(30)}
}

func escalate(by domain.Actor, id uuid.UUID) domain.CreateHandoff {
	c := park(by, id)
	c.Intent, c.Priority = domain.IntentEscalate, domain.PriorityUrgent
	return c
}

// wantParked and wantEscalated are the events of park and escalate.
func wantParked(by domain.Actor, id uuid.UUID) domain.Event {
	return domain.HandoffParked{HandoffCreated: created(id, by, domain.PriorityHigh, 30)}
}

func wantEscalated(by domain.Actor, id uuid.UUID) domain.Event {
	return domain.HandoffEscalated{HandoffCreated: created(id, by, domain.PriorityUrgent, 30)}
}

func claim(by domain.Actor, id uuid.UUID) domain.ClaimHandoff {
	return domain.ClaimHandoff{Actor: by, HandoffID: id, At: at(30)}
}

func withdraw(by domain.Actor, id uuid.UUID) domain.WithdrawHandoff {
	return domain.WithdrawHandoff{Actor: by, HandoffID: id, At: at(30)}
}

// state folds events into the session's state.
func state(events ...domain.Event) *domain.Session {
	s := domain.NewSession(account, session)
	for _, e := range events {
		s.Apply(e)
	}
	return s
}

// Outcomes a case may expect.

type outcome func(tb testing.TB, events []domain.Event, err error)

// accepted expects exactly the given events.
func accepted(want ...domain.Event) outcome {
	return func(tb testing.TB, events []domain.Event, err error) {
		tb.Helper()
		if err != nil {
			tb.Fatalf("rejected: %v (code %s)", err, domain.ErrorCode(err))
		}
		if !reflect.DeepEqual(events, want) {
			tb.Fatalf("events:\n got %#v\nwant %#v", events, want)
		}
	}
}

// rejected expects a *domain.Error with the code and a message containing
// msg.
func rejected(code domain.Code, msg string) outcome {
	return func(tb testing.TB, events []domain.Event, err error) {
		tb.Helper()
		var e *domain.Error
		if !errors.As(err, &e) {
			tb.Fatalf("err = %v (events %v), want a *domain.Error %s %q", err, events, code, msg)
		}
		if e.Code != code || !strings.Contains(e.Message, msg) {
			tb.Fatalf("err = %s %q, want %s %q", e.Code, e.Message, code, msg)
		}
		if events != nil {
			tb.Fatalf("rejected with events %v", events)
		}
	}
}

// alreadyClaimed expects a *domain.ClaimedError naming the claim.
func alreadyClaimed(by domain.Actor, minute int) outcome {
	return func(tb testing.TB, events []domain.Event, err error) {
		tb.Helper()
		var c *domain.ClaimedError
		if !errors.As(err, &c) {
			tb.Fatalf("err = %v (events %v), want *domain.ClaimedError", err, events)
		}
		if c.ClaimedBy != by.UserID || !c.ClaimedAt.Equal(at(minute)) {
			tb.Fatalf("claimed by %s at %v, want %s at %v", c.ClaimedBy, c.ClaimedAt, by.UserID, at(minute))
		}
		if domain.ErrorCode(err) != domain.ECONFLICT || domain.ErrorMessage(err) != "Handoff already claimed" {
			tb.Fatalf("code %s message %q, want conflict \"Handoff already claimed\"", domain.ErrorCode(err), domain.ErrorMessage(err))
		}
	}
}

type decideCase struct {
	name    string
	history []domain.Event
	cmd     domain.Command
	want    outcome
}

func runDecide(t *testing.T, cases []decideCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := state(c.history...)
			before := *s
			before.Handoffs = append([]domain.Handoff(nil), s.Handoffs...)
			events, err := domain.Decide(s, c.cmd)
			c.want(t, events, err)
			if !reflect.DeepEqual(*s, before) {
				t.Errorf("Decide changed the state:\n got %+v\nwant %+v", *s, before)
			}
		})
	}
}

func TestDecide_AtMostOneOpenHandoff(t *testing.T) {
	runDecide(t, []decideCase{
		{"park a new session", nil, park(alice, h1),
			accepted(wantParked(alice, h1))},
		{"escalate a new session", nil, escalate(alice, h1),
			accepted(wantEscalated(alice, h1))},
		{"park while parked", []domain.Event{parked(h1, alice, 0)}, park(alice, h2),
			rejected(domain.ECONFLICT, domain.MsgOpenHandoffExist)},
		{"escalate while parked", []domain.Event{parked(h1, alice, 0)}, escalate(alice, h2),
			rejected(domain.ECONFLICT, domain.MsgOpenHandoffExist)},
		{"park while escalated", []domain.Event{escalated(h1, alice, 0)}, park(alice, h2),
			rejected(domain.ECONFLICT, domain.MsgOpenHandoffExist)},
		{"escalate after a withdrawal", []domain.Event{parked(h1, alice, 0), withdrawnBy(h1, alice, 1)}, escalate(alice, h2),
			accepted(wantEscalated(alice, h2))},
		{"reuse a handoff id", []domain.Event{parked(h1, alice, 0), withdrawnBy(h1, alice, 1)}, park(alice, h1),
			rejected(domain.ECONFLICT, "Handoff id already used")},
	})
}

func TestDecide_OnlyTheHolderParksEscalatesOrWithdraws(t *testing.T) {
	claimedByBob := []domain.Event{parked(h1, alice, 0), claimedBy(h1, bob, 1)}
	claimedTwice := []domain.Event{parked(h1, alice, 0), claimedBy(h1, bob, 1), escalated(h2, bob, 2), claimedBy(h2, olga, 3)}
	openByAlice := []domain.Event{parked(h1, alice, 0)}
	runDecide(t, []decideCase{
		// The creator of the first handoff holds the session.
		{"another engineer parks the creator's session", []domain.Event{parked(h1, alice, 0), withdrawnBy(h1, alice, 1)}, park(erin, h2),
			rejected(domain.ENOTFOUND, domain.MsgSessionNotFound)},
		{"another engineer escalates the creator's session", openByAlice, escalate(erin, h2),
			rejected(domain.ENOTFOUND, domain.MsgSessionNotFound)},
		{"another engineer withdraws the creator's handoff", openByAlice, withdraw(erin, h1),
			rejected(domain.ENOTFOUND, domain.MsgSessionNotFound)},
		{"the creator withdraws", openByAlice, withdraw(alice, h1),
			accepted(domain.HandoffWithdrawn{HandoffID: h1, SessionID: session, WithdrawnBy: alice.UserID, At: at(30)})},
		// A claim moves the session to the claimer.
		{"the creator parks after a claim", claimedByBob, park(alice, h2),
			rejected(domain.ENOTFOUND, domain.MsgSessionNotFound)},
		{"the claimer parks after a claim", claimedByBob, park(bob, h2),
			accepted(wantParked(bob, h2))},
		{"the first claimer escalates after a second claim", claimedTwice, escalate(bob, h3),
			rejected(domain.ENOTFOUND, domain.MsgSessionNotFound)},
		{"the creator escalates after a second claim", claimedTwice, escalate(alice, h3),
			rejected(domain.ENOTFOUND, domain.MsgSessionNotFound)},
		{"the second claimer escalates", claimedTwice, escalate(olga, h3),
			accepted(wantEscalated(olga, h3))},
		{"the creator withdraws after losing the session", append(claimedByBob, parked(h2, bob, 2)), withdraw(alice, h2),
			rejected(domain.ENOTFOUND, domain.MsgSessionNotFound)},
		{"the holder withdraws a handoff they claimed", claimedByBob, withdraw(bob, h1),
			alreadyClaimed(bob, 1)},
		{"the holder withdraws twice", []domain.Event{parked(h1, alice, 0), withdrawnBy(h1, alice, 1)}, withdraw(alice, h1),
			rejected(domain.ECONFLICT, domain.MsgHandoffWithdrawn)},
		{"the holder withdraws an unknown handoff", openByAlice, withdraw(alice, h3),
			rejected(domain.ENOTFOUND, domain.MsgHandoffNotFound)},
		{"withdraw on a session without handoffs", nil, withdraw(alice, h1),
			rejected(domain.ENOTFOUND, domain.MsgSessionNotFound)},
	})
}

func TestDecide_ClaimNeedsEngineerAdminOrOwner(t *testing.T) {
	open := []domain.Event{escalated(h1, alice, 0)}
	cases := []decideCase{
		{"viewer", open, claim(viewer, h1), rejected(domain.EFORBIDDEN, domain.MsgClaimRoleNeeded)},
		{"viewer claims an unknown handoff", open, claim(viewer, h3), rejected(domain.EFORBIDDEN, domain.MsgClaimRoleNeeded)},
		{"unknown role", open, claim(domain.Actor{UserID: uuid.New(), AccountID: account, TeamID: team, Role: "intern"}, h1),
			rejected(domain.EFORBIDDEN, domain.MsgClaimRoleNeeded)},
	}
	for _, claimer := range []domain.Actor{erin, bob, olga} {
		cases = append(cases, decideCase{string(claimer.Role), open, claim(claimer, h1),
			accepted(domain.HandoffClaimed{HandoffID: h1, SessionID: session, ClaimedBy: claimer.UserID, Role: claimer.Role, At: at(30)})})
	}
	runDecide(t, cases)
}

func TestDecide_AuditorCommandsNothing(t *testing.T) {
	// An auditor holding the session (a token whose role changed) still
	// changes nothing.
	heldByAuditor := []domain.Event{parked(h1, auditor, 0)}
	runDecide(t, []decideCase{
		{"auditor parks a new session", nil, park(auditor, h1), rejected(domain.EFORBIDDEN, domain.MsgReadOnlyRole)},
		{"auditor escalates the session it holds", []domain.Event{parked(h1, auditor, 0), withdrawnBy(h1, auditor, 1)}, escalate(auditor, h2),
			rejected(domain.EFORBIDDEN, domain.MsgReadOnlyRole)},
		{"auditor withdraws the handoff it made", heldByAuditor, withdraw(auditor, h1), rejected(domain.EFORBIDDEN, domain.MsgReadOnlyRole)},
		{"auditor claims", []domain.Event{escalated(h1, alice, 0)}, claim(auditor, h1), rejected(domain.EFORBIDDEN, domain.MsgClaimRoleNeeded)},
	})
}

func TestDecide_OnlyTheCurrentOpenHandoffCanBeClaimed(t *testing.T) {
	runDecide(t, []decideCase{
		{"claimed", []domain.Event{parked(h1, alice, 0), claimedBy(h1, bob, 5)}, claim(erin, h1),
			alreadyClaimed(bob, 5)},
		{"claimed by oneself", []domain.Event{parked(h1, alice, 0), claimedBy(h1, bob, 5)}, claim(bob, h1),
			alreadyClaimed(bob, 5)},
		{"an older claimed handoff while a newer one is open",
			[]domain.Event{parked(h1, alice, 0), claimedBy(h1, bob, 5), escalated(h2, bob, 6)}, claim(erin, h1),
			alreadyClaimed(bob, 5)},
		{"the newer open handoff",
			[]domain.Event{parked(h1, alice, 0), claimedBy(h1, bob, 5), escalated(h2, bob, 6)}, claim(erin, h2),
			accepted(domain.HandoffClaimed{HandoffID: h2, SessionID: session, ClaimedBy: erin.UserID, Role: domain.RoleEngineer, At: at(30)})},
		{"withdrawn", []domain.Event{parked(h1, alice, 0), withdrawnBy(h1, alice, 1)}, claim(erin, h1),
			rejected(domain.ECONFLICT, domain.MsgHandoffWithdrawn)},
		{"unknown", []domain.Event{parked(h1, alice, 0)}, claim(erin, h3),
			rejected(domain.ENOTFOUND, domain.MsgHandoffNotFound)},
		// Another session's handoff is not in this session's state.
		{"on a session without handoffs", nil, claim(erin, h1),
			rejected(domain.ENOTFOUND, domain.MsgHandoffNotFound)},
	})
}

func TestDecide_InvalidCommands(t *testing.T) {
	withIntent := func(i domain.Intent) domain.CreateHandoff { c := park(alice, h1); c.Intent = i; return c }
	withPriority := func(p domain.Priority) domain.CreateHandoff { c := park(alice, h1); c.Priority = p; return c }
	withNotes := func(n string) domain.CreateHandoff { c := park(alice, h1); c.Notes = n; return c }
	parkedWithNotes := func(n string) domain.Event {
		c := created(h1, alice, domain.PriorityHigh, 30)
		c.Notes = n
		return domain.HandoffParked{HandoffCreated: c}
	}
	longest := strings.Repeat("é", domain.MaxNotesLength/2)
	runDecide(t, []decideCase{
		{"empty intent", nil, withIntent(""), rejected(domain.EINVALID, "intent")},
		{"unknown intent", nil, withIntent("defer"), rejected(domain.EINVALID, "intent")},
		{"intent in capitals", nil, withIntent("PARK"), rejected(domain.EINVALID, "intent")},
		{"empty priority", nil, withPriority(""), rejected(domain.EINVALID, "priority")},
		{"unknown priority", nil, withPriority("critical"), rejected(domain.EINVALID, "priority")},
		{"notes too long", nil, withNotes(longest + "x"), rejected(domain.EINVALID, "engineer_notes")},
		{"notes not UTF-8", nil, withNotes("ok \xff\xfe"), rejected(domain.EINVALID, "engineer_notes")},
		{"notes with NUL", nil, withNotes("ok \x00 then"), rejected(domain.EINVALID, "engineer_notes")},
		{"invalid even for a non-holder", []domain.Event{parked(h2, erin, 0)}, withPriority("asap"), rejected(domain.EINVALID, "priority")},
		{"notes of the maximum length", nil, withNotes(longest), accepted(parkedWithNotes(longest))},
		{"empty notes", nil, withNotes(""), accepted(parkedWithNotes(""))},
	})
}

// TestDecide_OtherAccountSeesNothing gives commands of another account's
// owner to this account's session: each is answered as if the session or
// handoff did not exist.
func TestDecide_OtherAccountSeesNothing(t *testing.T) {
	open := []domain.Event{parked(h1, alice, 0)}
	runDecide(t, []decideCase{
		{"park a new session", nil, park(mallory, h2), rejected(domain.ENOTFOUND, domain.MsgSessionNotFound)},
		{"escalate", open, escalate(mallory, h2), rejected(domain.ENOTFOUND, domain.MsgSessionNotFound)},
		{"claim", open, claim(mallory, h1), rejected(domain.ENOTFOUND, domain.MsgHandoffNotFound)},
		{"claim a claimed handoff", append(open, claimedBy(h1, bob, 1)), claim(mallory, h1), rejected(domain.ENOTFOUND, domain.MsgHandoffNotFound)},
		{"withdraw", open, withdraw(mallory, h1), rejected(domain.ENOTFOUND, domain.MsgSessionNotFound)},
	})
}

type unknownCommand struct{ domain.ClaimHandoff }

func TestDecide_UnknownCommandIsInternal(t *testing.T) {
	_, err := domain.Decide(state(), unknownCommand{})
	if domain.ErrorCode(err) != domain.EINTERNAL {
		t.Errorf("err = %v (code %s), want internal", err, domain.ErrorCode(err))
	}
}
