package kernel

import (
	"context"
	"errors"

	"github.com/osmose-os/osmose/caps"
	"github.com/osmose-os/osmose/ledger"
	"github.com/osmose-os/osmose/schema"
)

// Forget erases a data subject while the kernel runs, on behalf of actor
// (an operator): the grants the person holds are revoked with their
// subtrees (one "revoke" entry that names no one), then the ledger forgets
// the subject (ledger.Forget: their bodies removed from disk, their secret
// and pseudonym mapping destroyed, signed "redaction" entries listing the
// removed bodies). subject is the person's principal id or the ledger's
// pseudonym for them. An unknown or already forgotten subject is a
// NotExist error and changes nothing.
func (k *Kernel) Forget(ctx context.Context, actor, subject string) (*ledger.Erasure, error) {
	const op = "forget"
	if subject == "" {
		return nil, errorf(Invalid, op, "no subject")
	}
	// Nothing changes for a subject the ledger does not know.
	if _, err := k.led.ResolveSubject(ctx, subject); err != nil {
		if errors.Is(err, ledger.ErrUnknownSubject) || errors.Is(err, ledger.ErrForgotten) {
			return nil, &Error{Op: op, Kind: NotExist, Cause: err}
		}
		return nil, &Error{Op: op, Kind: Failed, Cause: err}
	}
	// The person's sessions and grants end first, so their power ends
	// before their data does; a person the ledger does not know has none.
	// Given the ledger's pseudonym, the kernel finds the person it stands
	// for among those it has seen log in or reported present.
	person := subject
	if p, ok := k.top.Login(subject); !ok || p.Kind != schema.PrincipalKind_person {
		k.seq.mu.Lock()
		if id, ok := k.seq.persons[subject]; ok {
			person = id
		}
		k.seq.mu.Unlock()
	}
	var ended []*session
	k.mu.Lock()
	for c := range k.conns {
		c.mu.Lock()
		for _, s := range c.sessions {
			if s.p.Kind == schema.PrincipalKind_person && s.p.ID == person {
				ended = append(ended, s)
			}
		}
		c.mu.Unlock()
	}
	k.mu.Unlock()
	for _, s := range ended {
		s.hangUp("data subject forgotten", "logout")
	}
	now := k.now().UnixNano()
	if err := k.led.WaitRoom(ctx); err != nil {
		return nil, &Error{Op: op, Kind: Failed, Cause: err}
	}
	k.seq.mu.Lock()
	var revs []caps.Revocation
	for g := range k.seq.table.Grants() {
		if g.Holder.Kind != caps.Person || g.Holder.ID != person || g.Revoked {
			continue
		}
		d := k.seq.table.Revoke(caps.Revoke{Grant: g.ID, Reason: "data subject forgotten"})
		revs = append(revs, d.Revoked...)
	}
	_, rp, err := k.endGrants(ctx, actor, 0, "data subject forgotten", revs, now)
	k.seq.mu.Unlock()
	if err == nil && rp != nil {
		err = rp.Wait(ctx)
	}
	if err != nil {
		return nil, &Error{Op: op, Kind: Failed, Cause: err}
	}
	er, err := k.led.Forget(ctx, subject, ledger.ForgetOptions{Time: k.now().UnixNano(), Actor: actor})
	switch {
	case errors.Is(err, ledger.ErrUnknownSubject), errors.Is(err, ledger.ErrForgotten):
		return nil, &Error{Op: op, Kind: NotExist, Cause: err}
	case err != nil:
		return nil, &Error{Op: op, Kind: Failed, Cause: err}
	}
	return er, nil
}

// Forget erases a data subject (Kernel.Forget).
func (o *operator) Forget(ctx context.Context, call schema.Operator_forget) error {
	const op = "forget"
	if err := o.s.begin(op); err != nil {
		return err
	}
	defer o.s.c.leave()
	subject, err := call.Args().Subject()
	if err != nil {
		return toException(&Error{Op: op, Kind: Invalid, Cause: err})
	}
	er, err := o.s.k.Forget(ctx, o.s.p.ID, subject)
	if err != nil {
		return toException(err)
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	r, err := res.NewReport()
	if err != nil {
		return err
	}
	if len(er.Redactions) > 0 {
		r.SetSeq(er.Redactions[0])
	}
	r.SetBodies(uint64(len(er.Removed)))
	r.SetEntries(uint64(er.Entries))
	return nil
}
