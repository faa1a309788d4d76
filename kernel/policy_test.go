package kernel_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/osmose-os/osmose/kernel"
	"github.com/osmose-os/osmose/kernel/kerneltest"
	"github.com/osmose-os/osmose/ledger"
	"github.com/osmose-os/osmose/schema"
)

func opPresence(o schema.Operator, person, place string, present bool) ([]string, error) {
	f, rel := o.Presence(context.Background(), func(p schema.Operator_presence_Params) error {
		p.SetPresent(present)
		if err := p.SetPerson(person); err != nil {
			return err
		}
		return p.SetPlace(place)
	})
	defer rel()
	r, err := f.Struct()
	if err != nil {
		return nil, err
	}
	return textList(r.Revoked())
}

func opSetPolicy(o schema.Operator, name, text string) (string, []string, error) {
	f, rel := o.SetPolicy(context.Background(), func(p schema.Operator_setPolicy_Params) error {
		fl, err := p.NewFiles(1)
		if err != nil {
			return err
		}
		if err := fl.At(0).SetName(name); err != nil {
			return err
		}
		return fl.At(0).SetText(text)
	})
	defer rel()
	r, err := f.Struct()
	if err != nil {
		return "", nil, err
	}
	sum, _ := r.Summary()
	ids, err := textList(r.Revoked())
	return sum, ids, err
}

func textList(l capnp.TextList, err error) ([]string, error) {
	if err != nil {
		return nil, err
	}
	out := make([]string, l.Len())
	for i := range out {
		if out[i], err = l.At(i); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// TestPresenceBoundGrant: a person gets a room's light only while present
// (reported by an operator's presence bridge); leaving revokes the grant;
// the presence entry keeps the person out of its envelope.
func TestPresenceBoundGrant(t *testing.T) {
	h := newHarness(t, 2)
	const room, target = "cam/pem/f1/r1", "cam/pem/f1/r1/light-1"
	o := h.operator(h.login("op"))
	p := h.login("p-ada")
	if _, _, err := kerneltest.Open(context.Background(), p.sess, target); err == nil {
		t.Fatal("open before entering the room succeeded")
	}
	if _, err := opPresence(o, "p-nobody", room, true); err == nil || !strings.Contains(err.Error(), "not-exist") {
		t.Errorf("presence of an unknown person: %v", err)
	}
	if _, err := opPresence(o, "p-ada", "cam/pem/f9", true); err == nil || !strings.Contains(err.Error(), "not-exist") {
		t.Errorf("presence in an unknown place: %v", err)
	}
	start := uint64(h.led.Size())
	if _, err := opPresence(o, "p-ada", room, true); err != nil {
		t.Fatal(err)
	}
	c, grant := h.open(p, target)
	light := schema.Light(c)
	if err := setLevel(light, 30); err != nil {
		t.Fatal(err)
	}
	// Leaving another room ends nothing.
	if got, err := opPresence(o, "p-ada", "cam/pem/f1/r2", false); err != nil || len(got) != 0 {
		t.Fatalf("leaving r2: %v, %v", got, err)
	}
	got, err := opPresence(o, "p-ada", room, false)
	if err != nil || len(got) != 1 || got[0] != grant {
		t.Fatalf("leaving: revoked %v, %v; want [%s]", got, err, grant)
	}
	wantErr(t, "call after leaving", setLevel(light, 40), "revoked: ")

	rs := h.entries(start)
	if got, want := kinds(rs), "presence/admit grant/admit call/admit return presence/admit presence/admit revoke/admit call/deny"; got != want {
		t.Fatalf("ledger:\n got %s\nwant %s", got, want)
	}
	enter, leave, rev := rs[0], rs[5], rs[6]
	for _, r := range []*ledger.Record{enter, leave} {
		e := r.Envelope
		if e.Actor != "op" || e.Subject == "" || e.Subject == "p-ada" || strings.Contains(e.Reason, "p-ada") {
			t.Errorf("presence envelope %+v: want actor op, a pseudonymous subject, no person named", e)
		}
		if !strings.Contains(string(r.Params()), `"person":"p-ada"`) {
			t.Errorf("presence body %q", r.Params())
		}
	}
	if e := rev.Envelope; e.Ref != leave.Envelope.Seq || e.Subject != "" || string(rev.Params()) != grant {
		t.Errorf("revoke entry %+v params %q: want ref %d and [%s]", e, rev.Params(), leave.Envelope.Seq, grant)
	}
}

// TestSetPolicy: a policy with an error changes nothing and says where;
// a new policy revokes the standing grants it no longer gives; both are on
// the ledger, with the policy's text.
func TestSetPolicy(t *testing.T) {
	h := newHarness(t, 2)
	const target = "cam/pem/f1/r1/light-2"
	d := h.login("cam/pem/f1/r1/light-1")
	c, grant := h.open(d, target)
	th, tgrant := h.open(d, "cam/pem/f1/r1/thermostat")
	defer th.Release()
	light := schema.Light(c)
	o := h.operator(h.login("op"))
	start := uint64(h.led.Size())

	bad := "permit (principal is Operator, action, resource);\n\npermit (principal, action, resource)\nwhen { principal.nosuch == 1 };\n"
	_, _, err := opSetPolicy(o, "bad.cedar", bad)
	if err == nil || !strings.Contains(err.Error(), "bad.cedar:3") || !strings.Contains(err.Error(), "nosuch") {
		t.Fatalf("bad policy: %v, want an error naming bad.cedar:3 and the attribute", err)
	}
	if err := setLevel(light, 20); err != nil {
		t.Fatalf("call after a refused policy: %v", err)
	}
	// The new policy no longer gives device programs lights.
	next := strings.Replace(kerneltest.Policy, `@range("level=0..80")
permit (principal is Device, action in Action::"Light", resource is Device)
when { principal.place == resource.place };`, "", 1)
	if next == kerneltest.Policy {
		t.Fatal("test policy edit did not apply")
	}
	sum, revoked, err := opSetPolicy(o, "next.cedar", next)
	if err != nil {
		t.Fatal(err)
	}
	if len(revoked) != 1 || revoked[0] != grant || !strings.Contains(sum, "policies") {
		t.Errorf("set policy: %q, revoked %v; want [%s] (not %s)", sum, revoked, grant, tgrant)
	}
	wantErr(t, "call after the policy change", setLevel(light, 30), "revoked: ")

	rs := h.entries(start)
	if got, want := kinds(rs), "policy/deny call/admit return policy/admit revoke/admit call/deny"; got != want {
		t.Fatalf("ledger:\n got %s\nwant %s", got, want)
	}
	if e := rs[0].Envelope; !strings.Contains(e.Reason, "bad.cedar:3") || e.Actor != "op" {
		t.Errorf("refused policy entry %+v", e)
	}
	files, err := kernel.DecodePolicy(rs[3].Result())
	if err != nil || len(files) != 1 || files[0].Name != "next.cedar" || files[0].Text != next {
		t.Errorf("policy entry body: %v, %v", files, err)
	}
	if e := rs[4].Envelope; e.Ref != rs[3].Envelope.Seq || string(rs[4].Params()) != grant {
		t.Errorf("revoke entry %+v params %q", e, rs[4].Params())
	}
}

// holdingLight is a Light driver whose setLevel waits until its context
// ends, and reports why.
type holdingLight struct {
	started, finished chan struct{}
	cause             error // set before finished is closed
}

func (l *holdingLight) Set(context.Context, schema.Light_set) error     { return nil }
func (l *holdingLight) State(context.Context, schema.Light_state) error { return nil }
func (l *holdingLight) SetLevel(ctx context.Context, call schema.Light_setLevel) error {
	close(l.started)
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
	}
	l.cause = context.Cause(ctx)
	close(l.finished)
	return ctx.Err()
}

// TestRevokeCancelsInFlight: revoking a grant cancels the calls its
// drivers still have: the driver sees its context end, the caller gets
// "revoked", and the return entry says why.
func TestRevokeCancelsInFlight(t *testing.T) {
	const target = "cam/pem/f1/r1/light-2"
	hl := &holdingLight{started: make(chan struct{}), finished: make(chan struct{})}
	h := newHarness(t, 1, func(c *kernel.Config) {
		c.Drivers[target].Release()
		c.Drivers[target] = capnp.Client(schema.Light_ServerToClient(hl))
	})
	d := h.login("cam/pem/f1/r1/light-1")
	c, grant := h.open(d, target)
	o := h.operator(h.login("op"))
	start := uint64(h.led.Size())
	done := make(chan error, 1)
	go func() { done <- setLevel(schema.Light(c), 50) }()
	<-hl.started
	if err := opRevoke(o, grant); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		wantErr(t, "call in flight", err, "revoked: setLevel: grant ended while the call was in flight")
	case <-time.After(5 * time.Second):
		t.Fatal("the call in flight was not cancelled")
	}
	// The driver may finish after the caller is answered.
	select {
	case <-hl.finished:
	case <-time.After(5 * time.Second):
		t.Fatal("the driver's context did not end")
	}
	if hl.cause == nil || !strings.Contains(hl.cause.Error(), "revoked") {
		t.Errorf("driver's context ended with %v, want a revocation", hl.cause)
	}
	rs := h.entries(start)
	if got, want := kinds(rs), "call/admit revoke/admit return"; got != want {
		t.Fatalf("ledger:\n got %s\nwant %s", got, want)
	}
	if r := rs[2].Envelope; r.Ref != rs[0].Envelope.Seq || !strings.Contains(r.Reason, "in flight") {
		t.Errorf("return entry %+v", r)
	}
}

// TestOperatorForget: an operator forgets a person while the kernel runs:
// their session and grants end, their bodies (presence, calls) leave the
// ledger, the ledger still verifies, and a second forget is "not-exist".
func TestOperatorForget(t *testing.T) {
	h := newHarness(t, 1)
	const room, target = "cam/pem/f1/r1", "cam/pem/f1/r1/light-1"
	o := h.operator(h.login("op"))
	p := h.login("p-ada")
	if _, err := opPresence(o, "p-ada", room, true); err != nil {
		t.Fatal(err)
	}
	c, _ := h.open(p, target)
	if err := setLevel(schema.Light(c), 35); err != nil {
		t.Fatal(err)
	}
	// Forgotten by the ledger's pseudonym, as osmose people lists it.
	pseudonym := ""
	for _, r := range h.entries(0) {
		if e := r.Envelope; e.Kind == ledger.KindLogin && e.Actor == "p-ada" {
			pseudonym = e.Subject
		}
	}
	if pseudonym == "" || pseudonym == "p-ada" {
		t.Fatalf("the person's login is filed under %q", pseudonym)
	}
	f, rel := o.Forget(context.Background(), func(p schema.Operator_forget_Params) error { return p.SetSubject(pseudonym) })
	r, err := f.Struct()
	if err != nil {
		t.Fatal(err)
	}
	rep, _ := r.Report()
	// The presence entry's body and the call's params.
	if rep.Bodies() < 2 || rep.Entries() < 2 || rep.Seq() == 0 {
		t.Errorf("forget report: %d bodies, %d entries, redaction seq %d", rep.Bodies(), rep.Entries(), rep.Seq())
	}
	redSeq := rep.Seq()
	rel()
	wantErr(t, "call after forget", setLevel(schema.Light(c), 40), "revoked: setLevel: session ended")
	red, err := h.led.Read(context.Background(), redSeq)
	if err != nil || red.Envelope.Kind != ledger.KindRedaction || strings.Contains(string(red.Params()), "p-ada") {
		t.Errorf("redaction entry %+v, %v", red, err)
	}
	if _, err := h.led.Verify(context.Background(), nil); err != nil {
		t.Errorf("verify after forget: %v", err)
	}
	f2, rel2 := o.Forget(context.Background(), func(p schema.Operator_forget_Params) error { return p.SetSubject("p-ada") })
	_, err = f2.Struct()
	rel2()
	wantErr(t, "second forget", err, "not-exist: forget")
}
