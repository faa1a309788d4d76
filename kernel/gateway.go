package kernel

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/osmose-os/osmose/ledger"
	"github.com/osmose-os/osmose/schema"
)

// maxIDLen bounds a principal id presented at login.
const maxIDLen = 1024

// gateway is the bootstrap capability of one connection.
type gateway struct{ c *conn }

func checkID(op, id string) error {
	switch {
	case id == "":
		return errorf(Invalid, op, "empty principal id")
	case len(id) > maxIDLen:
		return errorf(Invalid, op, "principal id longer than %d bytes", maxIDLen)
	case strings.IndexByte(id, 0) >= 0:
		return errorf(Invalid, op, "principal id contains a zero byte")
	}
	return nil
}

// Challenge issues a single-use nonce for principal on this connection.
func (g *gateway) Challenge(ctx context.Context, call schema.Gateway_challenge) error {
	const op = "challenge"
	c, k := g.c, g.c.k
	if !c.enter() {
		return overloaded(op)
	}
	defer c.leave()
	principal, err := call.Args().Principal()
	if err != nil {
		return toException(&Error{Op: op, Kind: Invalid, Cause: err})
	}
	if err := checkID(op, principal); err != nil {
		return toException(err)
	}
	now := k.now()
	var n [schema.NonceSize]byte
	k.randMu.Lock()
	_, err = io.ReadFull(k.cfg.Rand, n[:])
	k.randMu.Unlock()
	if err != nil {
		return toException(&Error{Op: op, Kind: Failed, Cause: fmt.Errorf("read nonce: %w", err)})
	}
	c.mu.Lock()
	for key, v := range c.nonces {
		if !now.Before(v.expires) {
			delete(c.nonces, key)
		}
	}
	if len(c.nonces) >= k.cfg.MaxChallenges {
		c.mu.Unlock()
		return toException(errorf(Overloaded, op, "too many outstanding challenges"))
	}
	c.nonces[string(n[:])] = nonce{principal: principal, expires: now.Add(k.cfg.NonceTTL)}
	c.mu.Unlock()
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	if err := res.SetNonce(n[:]); err != nil {
		return err
	}
	return res.SetKernelId(k.cfg.ID)
}

// Login checks a signed challenge and returns a Session bound to the
// principal. Every attempt is on the ledger; the caller is answered once
// its entry is durable.
func (g *gateway) Login(ctx context.Context, call schema.Gateway_login) error {
	const op = "login"
	c, k := g.c, g.c.k
	if !c.enter() {
		return overloaded(op)
	}
	defer c.leave()
	args := call.Args()
	principal, err1 := args.Principal()
	nonceB, err2 := args.Nonce()
	sig, err3 := args.Signature()
	if err := errors.Join(err1, err2, err3); err != nil {
		return k.loginRefused(ctx, principal, &Error{Op: op, Kind: Invalid, Cause: err}, nil)
	}
	if err := checkID(op, principal); err != nil {
		return k.loginRefused(ctx, "", err, nil)
	}
	if len(nonceB) != int(schema.NonceSize) {
		return k.loginRefused(ctx, principal, errorf(Invalid, op, "nonce is %d bytes, want %d", len(nonceB), schema.NonceSize), nil)
	}
	if len(sig) != ed25519.SignatureSize {
		return k.loginRefused(ctx, principal, errorf(Invalid, op, "signature is %d bytes, want %d", len(sig), ed25519.SignatureSize), nil)
	}
	now := k.now()
	c.mu.Lock()
	n, ok := c.nonces[string(nonceB)]
	delete(c.nonces, string(nonceB)) // single use, whatever the outcome
	c.mu.Unlock()
	// The caller learns only "login failed"; the ledger records why.
	fail := func(why string) error {
		return k.loginRefused(ctx, principal, &Error{Op: op, Kind: Permission, Cause: ErrLoginFailed}, errors.New(why))
	}
	switch {
	case !ok:
		return fail("unknown or used nonce")
	case n.principal != principal:
		return fail("nonce issued to another principal")
	case !now.Before(n.expires):
		return fail("nonce expired")
	}
	p, ok := k.top.Login(principal)
	if !ok {
		return fail("unknown principal")
	}
	if !ed25519.Verify(p.Key, schema.LoginMessage(k.cfg.ID, principal, nonceB), sig) {
		return fail("bad signature")
	}
	s := &session{k: k, c: c, p: p}
	s.holder, s.canHold = capsPrincipal(p)
	if p.Kind == schema.PrincipalKind_person {
		subj, err := k.led.Pseudonym(ctx, p.ID)
		if err != nil {
			return toException(&Error{Op: op, Kind: Failed, Cause: fmt.Errorf("the person's pseudonym: %w", err)})
		}
		s.subject = subj
	}
	// Room is taken before the sequencer (see session.end).
	if err := k.led.Reserve(ctx); err != nil {
		return toException(&Error{Op: op, Kind: Failed, Cause: fmt.Errorf("record login: %w", err)})
	}
	k.seq.mu.Lock()
	if s.subject != "" {
		k.seq.persons[s.subject] = p.ID
	}
	pend, err := k.led.AppendReserved(ledger.Entry{
		Kind: ledger.KindLogin, Actor: p.ID, Subject: s.subject, Decision: ledger.DecisionAdmit,
		Reason: "as " + p.Kind.String(), Time: now.UnixNano(),
	})
	k.seq.mu.Unlock()
	if err == nil {
		err = pend.Wait(ctx)
	}
	if err != nil {
		return toException(&Error{Op: op, Kind: Failed, Cause: fmt.Errorf("record login: %w", err)})
	}
	k.tel.logins.Add(ctx, 1, k.tel.admitOpt)
	c.mu.Lock()
	c.sessions = append(c.sessions, s)
	c.mu.Unlock()
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetSession(newSessionClient(s))
}

// loginRefused records a refused login and returns the caller's exception.
// why, if set, is the detail only the ledger gets.
func (k *Kernel) loginRefused(ctx context.Context, principal string, e error, why error) error {
	reason := e.Error()
	if why != nil {
		reason += ": " + why.Error()
	}
	var p *ledger.Pending
	err := k.led.Reserve(ctx) // before the sequencer (see session.end)
	if err == nil {
		k.seq.mu.Lock()
		p, err = k.led.AppendReserved(ledger.Entry{
			Kind: ledger.KindLogin, Actor: truncate(principal), Decision: ledger.DecisionDeny,
			Reason: truncate(reason), Time: k.now().UnixNano(),
		})
		k.seq.mu.Unlock()
	}
	if err == nil {
		err = p.Wait(ctx)
	}
	k.tel.logins.Add(ctx, 1, k.tel.denyOpt)
	if err != nil {
		return toException(&Error{Op: "login", Kind: Failed, Cause: fmt.Errorf("record login: %w", err)})
	}
	return toException(e)
}
