package kernel

import (
	"errors"
	"fmt"

	"capnproto.org/go/capnp/v3/exc"

	"github.com/osmose-os/osmose/caps"
)

// ErrorKind is the class of a refused or failed syscall, as the schema's
// error section names them. It starts the reason of every exception the
// kernel sends.
type ErrorKind uint8

// The error kinds.
const (
	Permission ErrorKind = iota + 1 // the grant does not allow it, or login failed
	NotExist                        // no such path, principal or grant
	Revoked                         // the grant or the session is dead
	Invalid                         // malformed arguments
	Overloaded                      // too many calls or challenges in flight
	Failed                          // the driver or the ledger failed
)

func (k ErrorKind) String() string {
	switch k {
	case Permission:
		return "permission"
	case NotExist:
		return "not-exist"
	case Revoked:
		return "revoked"
	case Invalid:
		return "invalid"
	case Overloaded:
		return "overloaded"
	default:
		return "failed"
	}
}

// Error is the one error type at the syscall boundary: what was being done
// (Op: a method name such as "setLevel" or "login"), the kind and the
// cause. Its text, "kind: op: cause", is the reason of the capnp exception
// the caller gets and of the ledger entry that records the refusal.
type Error struct {
	Op    string
	Kind  ErrorKind
	Cause error
}

func (e *Error) Error() string {
	if e.Op == "" {
		return e.Kind.String() + ": " + e.Cause.Error()
	}
	return e.Kind.String() + ": " + e.Op + ": " + e.Cause.Error()
}

func (e *Error) Unwrap() error { return e.Cause }

// errorf returns an *Error with a formatted cause.
func errorf(kind ErrorKind, op, format string, args ...any) *Error {
	return &Error{Op: op, Kind: kind, Cause: fmt.Errorf(format, args...)}
}

// Sentinel causes callers branch on with errors.Is.
var (
	ErrSessionEnded = errors.New("session ended")
	ErrGateReleased = errors.New("capability released")
	// ErrEndedInFlight: the call's grant ended while the driver had it.
	ErrEndedInFlight = errors.New("grant ended while the call was in flight")
	ErrLoginFailed   = errors.New("login failed")
	ErrTooMany       = errors.New("too many calls in flight")
)

// capsKind maps a caps decision code to the syscall error kind.
func capsKind(c caps.Code) ErrorKind {
	switch c {
	case caps.CodeNotFound:
		return NotExist
	case caps.CodeRevoked, caps.CodeExpired, caps.CodeUsedUp:
		return Revoked
	case caps.CodeInvalid:
		return Invalid
	default:
		return Permission
	}
}

// capsError turns a refused caps decision into an *Error.
func capsError(op string, d caps.Decision) *Error {
	return &Error{Op: op, Kind: capsKind(d.Code), Cause: d.Err()}
}

// toException maps any error to the capnp exception the caller gets: an
// *Error keeps its text, with type overloaded for Overloaded; anything else
// is already an exception (a driver's, or capnp's own) and passes as is.
func toException(err error) error {
	var e *Error
	if errors.As(err, &e) {
		typ := exc.Failed
		if e.Kind == Overloaded {
			typ = exc.Overloaded
		}
		return &exc.Exception{Type: typ, Cause: e}
	}
	return err
}
