package kernel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"capnproto.org/go/capnp/v3"

	"github.com/osmose-os/osmose/caps"
	"github.com/osmose-os/osmose/ledger"
	"github.com/osmose-os/osmose/schema"
)

// PolicyChange is what SetPolicy did.
type PolicyChange struct {
	Seq     uint64         // the "policy" entry
	Summary string         // e.g. "loaded 12 policies from 2 files"
	Revoked []caps.GrantID // standing grants the new policy no longer gives, with their subtrees
}

// policySource is the result body of a "policy" entry: the files as they
// were loaded, so that the ledger alone says which policy was in force.
type policySource struct {
	Files []policyFileJSON `json:"files"`
}

type policyFileJSON struct {
	Name string `json:"name"`
	Text string `json:"text"`
}

func encodePolicy(files []caps.PolicyFile) []byte {
	src := policySource{Files: make([]policyFileJSON, len(files))}
	for i, f := range files {
		src.Files[i] = policyFileJSON{Name: f.Name, Text: f.Text}
	}
	b, _ := json.Marshal(src) // strings only: cannot fail
	return b
}

// DecodePolicy reads the files of a "policy" entry's result body.
func DecodePolicy(body []byte) ([]caps.PolicyFile, error) {
	var src policySource
	if err := json.Unmarshal(body, &src); err != nil {
		return nil, fmt.Errorf("policy entry body: %w", err)
	}
	files := make([]caps.PolicyFile, len(src.Files))
	for i, f := range src.Files {
		files[i] = caps.PolicyFile{Name: f.Name, Text: f.Text}
	}
	return files, nil
}

// recordPolicy appends the "policy" entry of the policy the kernel starts
// with and waits until it is durable.
func recordPolicy(ctx context.Context, l *ledger.Ledger, files []caps.PolicyFile, now int64) error {
	_, _, err := l.Commit(ctx, ledger.Entry{
		Kind: ledger.KindPolicy, Actor: "kernel", Decision: ledger.DecisionAdmit,
		Reason: fmt.Sprintf("policy in force at start: %d files", len(files)), Time: now, Result: encodePolicy(files),
	})
	if err != nil {
		return fmt.Errorf("record policy: %w", err)
	}
	return nil
}

// SetPolicy replaces the kernel's policy while it runs, on behalf of
// actor. Every file is parsed and type-checked first; on any error the
// policy in force stays, the refusal is recorded, and the error wraps each
// *caps.PolicyError (file, line, reason). Then every standing grant is
// re-checked and those the new policy would not give are revoked with
// their subtrees, their calls in flight cancelled. The change is a
// "policy" entry (result body: the files); its revocations a "revoke"
// entry referring to it.
func (k *Kernel) SetPolicy(ctx context.Context, actor string, files []caps.PolicyFile) (PolicyChange, error) {
	now := k.now().UnixNano()
	if err := k.led.WaitRoom(ctx); err != nil {
		return PolicyChange{}, &Error{Op: "setPolicy", Kind: Failed, Cause: err}
	}
	k.seq.mu.Lock()
	dec, perr := k.seq.table.SetPolicy(files...)
	e := ledger.Entry{Kind: ledger.KindPolicy, Actor: actor, Decision: ledger.DecisionAdmit, Reason: truncate(dec.Reason), Time: now, Result: encodePolicy(files)}
	if perr != nil {
		e.Decision, e.Reason = ledger.DecisionDeny, truncate("invalid: "+perr.Error())
	}
	p, err := k.led.AppendNow(e)
	var ended []caps.GrantID
	var rp *ledger.Pending
	if err == nil && perr == nil {
		ended, rp, err = k.endGrants(ctx, actor, p.Seq(), "policy changed", dec.Revoked, now)
	}
	k.seq.mu.Unlock()
	if err == nil {
		err = p.Wait(ctx)
	}
	if err == nil && rp != nil {
		err = rp.Wait(ctx)
	}
	if err != nil {
		return PolicyChange{}, &Error{Op: "setPolicy", Kind: Failed, Cause: err}
	}
	if perr != nil {
		return PolicyChange{Seq: p.Seq()}, &Error{Op: "setPolicy", Kind: Invalid, Cause: perr}
	}
	return PolicyChange{Seq: p.Seq(), Summary: dec.Reason, Revoked: ended}, nil
}

// Presence records, on behalf of actor (a badge reader's bridge, an
// operator), that person entered (present) or left place. Leaving revokes
// the grants bound to the person's presence there, cancelling their calls
// in flight. The report is a "presence" entry whose bodies are the
// person's data (subject = person); the revocations are a "revoke" entry
// that names no one. It returns the grants ended.
func (k *Kernel) Presence(ctx context.Context, actor, person, place string, present bool) ([]caps.GrantID, error) {
	const op = "presence"
	if p, ok := k.top.Login(person); !ok || p.Kind != schema.PrincipalKind_person {
		return nil, errorf(NotExist, op, "no person %q in the topology", person)
	}
	if _, ok := k.top.Place(place); !ok {
		return nil, errorf(NotExist, op, "no place %q in the topology", place)
	}
	// The ledger knows the person by a pseudonym of its own, which erasure
	// destroys with the person's bodies.
	subject, err := k.led.Pseudonym(ctx, person)
	if err != nil {
		return nil, &Error{Op: op, Kind: Failed, Cause: err}
	}
	now := k.now().UnixNano()
	verb := "left"
	if present {
		verb = "entered"
	}
	body, _ := json.Marshal(struct {
		Person  string `json:"person"`
		Place   string `json:"place"`
		Present bool   `json:"present"`
	}{person, place, present})
	if err := k.led.WaitRoom(ctx); err != nil {
		return nil, &Error{Op: op, Kind: Failed, Cause: err}
	}
	k.seq.mu.Lock()
	k.seq.persons[subject] = person
	var dec caps.Decision
	if present {
		dec = k.seq.table.Enter(caps.Presence{Person: person, Place: place})
	} else {
		dec = k.seq.table.Leave(caps.Presence{Person: person, Place: place})
	}
	e := ledger.Entry{
		Kind: ledger.KindPresence, Actor: actor, Subject: subject, Device: place, Decision: ledger.DecisionAdmit,
		Reason: "a person " + verb + " " + place, Time: now, Params: body,
	}
	if !dec.OK() {
		// The person's id stays out of the envelope.
		e.Decision, e.Reason = ledger.DecisionDeny, truncate(fmt.Sprintf("%s: %s", dec.Code, place))
	}
	p, err := k.led.AppendNow(e)
	var ended []caps.GrantID
	var rp *ledger.Pending
	if err == nil && dec.OK() {
		ended, rp, err = k.endGrants(ctx, actor, p.Seq(), "presence binding no longer holds", dec.Revoked, now)
	}
	k.seq.mu.Unlock()
	if err == nil {
		err = p.Wait(ctx)
	}
	if err == nil && rp != nil {
		err = rp.Wait(ctx)
	}
	if err != nil {
		return nil, &Error{Op: op, Kind: Failed, Cause: err}
	}
	if !dec.OK() {
		return nil, capsError(op, dec)
	}
	return ended, nil
}

// endGrants records the grants a policy or presence change revoked as one
// "revoke" entry referring to the change's entry (ref), and cuts them. The
// caller holds k.seq.mu. It returns the grants and the entry (nil if
// none were revoked).
func (k *Kernel) endGrants(ctx context.Context, actor string, ref uint64, why string, revs []caps.Revocation, now int64) ([]caps.GrantID, *ledger.Pending, error) {
	if len(revs) == 0 {
		return nil, nil, nil
	}
	ended := make([]caps.GrantID, len(revs))
	for i, r := range revs {
		ended[i] = r.Grant
	}
	p, err := k.led.AppendNow(ledger.Entry{
		Kind: ledger.KindRevoke, Actor: actor, Grant: uint64(ended[0]), Decision: ledger.DecisionAdmit,
		Reason: truncate(fmt.Sprintf("%s: %d grants ended", why, len(ended))), Ref: ref, Time: now,
		Params: []byte(grantList(ended)),
	})
	// Cut after the entry has its seq (and even if it could not be
	// appended: the table has revoked them).
	k.cut(ended)
	return ended, p, err
}

// grantNames writes ids as the text list of a result.
func grantNames(seg *capnp.Segment, ids []caps.GrantID) (capnp.TextList, error) {
	l, err := capnp.NewTextList(seg, int32(len(ids)))
	if err != nil {
		return l, err
	}
	for i, id := range ids {
		if err := l.Set(i, id.String()); err != nil {
			return l, err
		}
	}
	return l, nil
}

// SetPolicy replaces the policy (Kernel.SetPolicy).
func (o *operator) SetPolicy(ctx context.Context, call schema.Operator_setPolicy) error {
	const op = "setPolicy"
	if err := o.s.begin(op); err != nil {
		return err
	}
	defer o.s.c.leave()
	fl, err := call.Args().Files()
	if err != nil {
		return toException(&Error{Op: op, Kind: Invalid, Cause: err})
	}
	files := make([]caps.PolicyFile, fl.Len())
	for i := range files {
		f := fl.At(i)
		name, err1 := f.Name()
		text, err2 := f.Text()
		if err := errors.Join(err1, err2); err != nil {
			return toException(&Error{Op: op, Kind: Invalid, Cause: err})
		}
		files[i] = caps.PolicyFile{Name: name, Text: text}
	}
	if len(files) == 0 {
		return toException(errorf(Invalid, op, "no policy files"))
	}
	ch, err := o.s.k.SetPolicy(ctx, o.s.p.ID, files)
	if err != nil {
		return toException(err)
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	if err := res.SetSummary(ch.Summary); err != nil {
		return err
	}
	l, err := grantNames(res.Segment(), ch.Revoked)
	if err != nil {
		return err
	}
	return res.SetRevoked(l)
}

// Presence reports a person entering or leaving a place (Kernel.Presence).
func (o *operator) Presence(ctx context.Context, call schema.Operator_presence) error {
	const op = "presence"
	if err := o.s.begin(op); err != nil {
		return err
	}
	defer o.s.c.leave()
	person, err1 := call.Args().Person()
	place, err2 := call.Args().Place()
	if err := errors.Join(err1, err2); err != nil {
		return toException(&Error{Op: op, Kind: Invalid, Cause: err})
	}
	ended, err := o.s.k.Presence(ctx, o.s.p.ID, person, strings.TrimSuffix(place, "/"), call.Args().Present())
	if err != nil {
		return toException(err)
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	l, err := grantNames(res.Segment(), ended)
	if err != nil {
		return err
	}
	return res.SetRevoked(l)
}
