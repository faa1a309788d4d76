package caps

import (
	"errors"
	"fmt"
	"strconv"
)

// Sentinel errors, one per Code. Decision.Err wraps the one for its code, so
// callers branch with errors.Is.
var (
	ErrNotFound     = errors.New("not found")
	ErrNotPermitted = errors.New("not permitted")
	ErrRevoked      = errors.New("revoked")
	ErrExpired      = errors.New("expired")
	ErrAmplify      = errors.New("amplification refused")
	ErrOutOfRange   = errors.New("argument out of range")
	ErrWindow       = errors.New("outside time window")
	ErrRateLimited  = errors.New("rate limited")
	ErrUsedUp       = errors.New("uses exhausted")
	ErrOutOfScope   = errors.New("outside place scope")
	ErrNoReshare    = errors.New("resharing not allowed")
	ErrNotPresent   = errors.New("person not present")
	ErrInvalid      = errors.New("invalid input")
)

// Code is the outcome of an input, small enough to record in a ledger entry.
// OK is zero.
type Code uint8

const (
	OK Code = iota
	CodeNotFound
	CodeNotPermitted
	CodeRevoked
	CodeExpired
	CodeAmplify
	CodeOutOfRange
	CodeWindow
	CodeRateLimited
	CodeUsedUp
	CodeOutOfScope
	CodeNoReshare
	CodeNotPresent
	CodeInvalid
	numCodes
)

var codeInfo = [numCodes]struct {
	name string
	err  error
}{
	OK:               {"ok", nil},
	CodeNotFound:     {"not-found", ErrNotFound},
	CodeNotPermitted: {"not-permitted", ErrNotPermitted},
	CodeRevoked:      {"revoked", ErrRevoked},
	CodeExpired:      {"expired", ErrExpired},
	CodeAmplify:      {"amplify", ErrAmplify},
	CodeOutOfRange:   {"out-of-range", ErrOutOfRange},
	CodeWindow:       {"window", ErrWindow},
	CodeRateLimited:  {"rate-limited", ErrRateLimited},
	CodeUsedUp:       {"used-up", ErrUsedUp},
	CodeOutOfScope:   {"out-of-scope", ErrOutOfScope},
	CodeNoReshare:    {"no-reshare", ErrNoReshare},
	CodeNotPresent:   {"not-present", ErrNotPresent},
	CodeInvalid:      {"invalid", ErrInvalid},
}

// String returns a short stable name ("ok", "revoked", "rate-limited", ...).
func (c Code) String() string {
	if c < numCodes {
		return codeInfo[c].name
	}
	return "code(" + strconv.Itoa(int(c)) + ")"
}

// Err returns the sentinel error for c, nil for OK.
func (c Code) Err() error {
	if c < numCodes {
		return codeInfo[c].err
	}
	return ErrInvalid
}

// Op names the input a Decision answers.
type Op uint8

const (
	OpOpen Op = iota + 1
	OpDelegate
	OpCall
	OpRevoke
	OpRelease
	OpEnter
	OpLeave
	OpPolicy
	OpTopology
)

var opNames = [...]string{OpOpen: "open", OpDelegate: "delegate", OpCall: "call", OpRevoke: "revoke",
	OpRelease: "release", OpEnter: "enter", OpLeave: "leave", OpPolicy: "policy", OpTopology: "topology"}

func (o Op) String() string {
	if int(o) < len(opNames) && opNames[o] != "" {
		return opNames[o]
	}
	return "op(" + strconv.Itoa(int(o)) + ")"
}

// Decision is what the table answers to one input. It holds only plain data
// so the kernel can write it to the ledger next to the input; replaying the
// inputs in order yields the same decisions.
type Decision struct {
	Op   Op
	Code Code
	// Grant is the grant created (open, delegate), called, revoked or
	// released; zero when none.
	Grant GrantID
	// Reason says why, for people: the refusal's cause, or for a grant the
	// policies that permitted it. Empty for an admitted call.
	Reason string
	// Revoked lists every grant this input revoked, each subtree in
	// pre-order, so the kernel can cancel their calls in flight.
	Revoked []Revocation
}

// Revocation is one revoked grant.
type Revocation struct {
	Grant GrantID
	// Root is the grant whose revocation caused this one (itself for the
	// root of a cascade).
	Root GrantID
	// Reason is set on the root of each cascade.
	Reason string
}

// OK reports whether the input was accepted.
func (d Decision) OK() bool { return d.Code == OK }

// Err returns nil for an accepted input, otherwise an error that wraps the
// sentinel for d.Code and carries the reason.
func (d Decision) Err() error {
	if d.Code == OK {
		return nil
	}
	if d.Grant != 0 {
		return fmt.Errorf("%s %s: %s: %w", d.Op, d.Grant, d.Reason, d.Code.Err())
	}
	return fmt.Errorf("%s: %s: %w", d.Op, d.Reason, d.Code.Err())
}
