// Package domain holds the handoff ledger's rules: the commands a user can
// give, the events they produce, the state folded from those events and the
// pure decisions that turn one into the other. It imports no database, HTTP
// or messaging package.
package domain

import (
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Code classifies an error for callers that must translate it, such as the
// HTTP layer, which holds the only table from code to status.
type Code string

// Error codes returned by the ledger.
const (
	EINVALID      Code = "invalid"
	ENOTFOUND     Code = "not_found"
	ECONFLICT     Code = "conflict"
	EFORBIDDEN    Code = "forbidden"
	EUNAUTHORIZED Code = "unauthorized"
	// EUNAVAILABLE: the ledger cannot answer now but will soon, such as
	// when the read models are behind the log or the database cannot be
	// reached; the client should retry.
	EUNAVAILABLE Code = "unavailable"
	EINTERNAL    Code = "internal"
)

// ErrDatabaseUnavailable is matched (errors.Is, ErrorCode EUNAVAILABLE) by
// the errors of a store that could not reach its database, or lost it in the
// middle of a statement: the client should retry. A command that failed so
// may still have committed.
var ErrDatabaseUnavailable = Errorf(EUNAVAILABLE, "Database unavailable, please retry")

// Error is a ledger error with a code and a message meant for the user.
type Error struct {
	Code    Code
	Message string
}

func (e *Error) Error() string { return e.Message }

// Errorf returns an *Error with the given code and formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error or *ClaimedError in err's
// chain, EINTERNAL for any other non-nil error and "" for nil.
func ErrorCode(err error) Code {
	if err == nil {
		return ""
	}
	var claimed *ClaimedError
	if errors.As(err, &claimed) {
		return ECONFLICT
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the user-facing message of err, or a generic one
// for internal errors, whose text must not leak.
func ErrorMessage(err error) string {
	var claimed *ClaimedError
	if errors.As(err, &claimed) {
		return claimed.Error()
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "Internal server error"
}

// ClaimedError is returned when a claim or withdrawal meets a handoff that
// somebody has already claimed; it says who and when.
type ClaimedError struct {
	ClaimedBy uuid.UUID
	ClaimedAt time.Time
}

func (e *ClaimedError) Error() string { return "Handoff already claimed" }

// Messages kept identical to the endpoints the ledger replaces, because
// existing clients match on them.
const (
	MsgSessionNotFound  = "Session not found"
	MsgHandoffNotFound  = "Handoff not found"
	MsgClaimRoleNeeded  = "Engineer or admin access required"
	MsgOpenHandoffExist = "Session already has an open handoff"
	MsgHandoffWithdrawn = "Handoff already withdrawn"
)

// Messages of the roles the ledger adds.
const (
	MsgReadOnlyRole    = "Auditor access is read-only"
	MsgEraseRoleNeeded = "Owner or admin access required"
	MsgAuditRoleNeeded = "Auditor, admin or owner access required"
)
