package replay

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/osmose-os/osmose/caps"
	"github.com/osmose-os/osmose/internal/topology"
	"github.com/osmose-os/osmose/kernel"
	"github.com/osmose-os/osmose/ledger"
	"github.com/osmose-os/osmose/schema"
)

// engine is the replay state machine: it takes the entries in seq order
// and re-derives each one from the state the entries before it built.
// Everything it needs is in the entries (and, for bodies an erasure
// removed, the redaction lists): no clock, no randomness, no network. It
// runs on one goroutine; the drivers it re-runs (devices.go) answer on
// their own, as every capnp server does, and a checker goroutine compares
// their answers.
type engine struct {
	opts     Options
	cat      *kernel.Catalog
	redacted map[uint64]map[string]bool // seq -> binary CIDs of its bodies a redaction lists
	rep      Report

	maxGrant uint64 // highest grant id any entry so far names
	last     *ledger.Envelope
	run      *run                // the kernel run under way; nil before the first start entry
	presence map[string][]string // ledger pseudonym -> places, sorted
	subjects map[string]string   // person id -> ledger pseudonym (from presence bodies, logins)
	personOf map[string]string   // the reverse
	// erased are the people whose presence bodies an erasure removed, by
	// ledger pseudonym (see bindErased).
	erased map[string]*erasedPerson
	// ended says how the grants of earlier runs ended, by id ("revoked",
	// "released", "expired", "kernel restarted").
	ended map[string]string
	// For states: by device, the last admitted call on it and the last
	// thing it reported (a reading, a button event, a read's result).
	lastCall map[string]*Entry
	lastObs  map[string]*Entry
	scratch  []byte
}

// run is the state of one kernel run: from a start entry to the next.
type run struct {
	start    uint64
	first    caps.GrantID
	parts    [][]byte
	partsSum [32]byte
	top      *topology.Topology
	topSeq   uint64
	table    *caps.Table
	policy   policyInfo
	// dead are the grants this run ended (revoked, released): the gate
	// refuses their calls before asking the table (gate.go, admit).
	dead     map[caps.GrantID]bool
	grantSeq map[caps.GrantID]uint64 // entry that made each grant
	made     map[uint64]caps.GrantID // seq of a making entry -> grant
	holders  map[string]caps.Principal
	info     map[caps.GrantID]grantInfo // what calls check of each grant made
	ends     map[uint64]*pendingEnd     // seq of a policy/presence change -> its revocations
	calls    map[uint64]*callRec        // admitted calls awaiting their return
	devs     *devices                   // nil when drivers are not re-run
	sessions map[string]int             // login id -> sessions open
	opaque   int                        // presence entries whose person is unknown (erased)
}

type policyInfo struct {
	Seq   uint64   `json:"seq"`
	Files []string `json:"files"`
	Note  string   `json:"note"`
}

// pendingEnd is the "revoke" entry a policy or presence change must be
// followed by.
type pendingEnd struct {
	actor  string
	why    string
	time   int64
	ended  []caps.GrantID
	opaque bool // the change was opaque: take its list as recorded
}

// grantInfo is what a call is checked against of its grant.
type grantInfo struct {
	iface  uint64
	target string
	holder string
}

// callRec is an admitted call awaiting its return entry.
type callRec struct {
	env    *ledger.Envelope
	method string
	p      *pending // the call as its device's driver runs it; nil for a derived gate's
}

func newEngine(opts Options, redacted map[uint64]map[string]bool) *engine {
	e := &engine{opts: opts, cat: kernel.NewCatalog(), redacted: redacted, rep: newReport(),
		presence: map[string][]string{}, subjects: map[string]string{}, personOf: map[string]string{}, erased: map[string]*erasedPerson{}, ended: map[string]string{},
		lastCall: map[string]*Entry{}, lastObs: map[string]*Entry{}}
	e.rep.Drivers = opts.Drivers
	return e
}

func (e *engine) close() {
	if e.run != nil && e.run.devs != nil {
		e.run.devs.close()
	}
}

// apply replays one entry. It returns a *Divergence when the entry is not
// what replay derives, or another error when the entry cannot be replayed
// at all.
func (e *engine) apply(ctx context.Context, en *Entry) error {
	err := e.dispatch(ctx, en)
	e.maxGrant = max(e.maxGrant, en.Env.Grant)
	e.last = en.Env
	if err != nil {
		// A result still being compared came before this entry.
		if serr := e.settle(); serr != nil {
			return serr
		}
	}
	return err
}

// settle waits for every driver answer still being compared and returns
// the first divergence among them.
func (e *engine) settle() error {
	if e.run == nil || e.run.devs == nil {
		return nil
	}
	return e.run.devs.wait()
}

func (e *engine) dispatch(ctx context.Context, en *Entry) error {
	env := en.Env
	t := e.rep.tally(env.Kind)
	if env.Kind == ledger.KindGenesis {
		if env.Seq != 0 {
			return e.diverge(en, "kind", "genesis only at seq 0", string(env.Kind), "")
		}
		t.Input++
		return nil
	}
	if env.Seq == 0 {
		return e.diverge(en, "kind", "genesis", string(env.Kind), "")
	}
	switch env.Kind {
	case ledger.KindStart:
		return e.start(en, t)
	case ledger.KindRedaction:
		e.input(t, "redaction entries: the erasures' own record (ledger verify checks them)")
		return nil
	}
	r := e.run
	if r == nil {
		if env.Kind == ledger.KindLogin || env.Kind == "logout" || env.Kind == "disconnect" {
			e.input(t, "entries before any start entry")
			return nil
		}
		return e.diverge(en, "order", "a start entry before it", "a "+string(env.Kind)+" entry before any start entry", "")
	}
	switch env.Kind {
	case kernel.KindTopology:
		return e.topology(en, t)
	case ledger.KindPolicy:
		return e.policy(en, t)
	}
	if r.table == nil && env.Kind != ledger.KindLogin && env.Kind != "logout" && env.Kind != "disconnect" {
		return e.diverge(en, "order", "the run's topology and policy entries first", "a "+string(env.Kind)+" entry", "the kernel records them at start, before it serves anyone")
	}
	switch env.Kind {
	case ledger.KindLogin:
		return e.login(en, t)
	case "logout", "disconnect":
		if strings.HasPrefix(env.Actor, "conn:") {
			e.input(t, "connection ends")
		} else {
			if r.sessions[env.Actor] > 0 {
				r.sessions[env.Actor]--
			}
			e.input(t, "session ends (the connection's fate is not a decision)")
		}
		return nil
	case ledger.KindGrant, ledger.KindDelegate:
		return e.grant(en, t)
	case ledger.KindRevoke, ledger.KindRelease:
		return e.retire(en, t)
	case ledger.KindPresence:
		return e.presenceEntry(en, t)
	case ledger.KindCall:
		return e.call(ctx, en, t)
	case ledger.KindReturn:
		return e.ret(ctx, en, t)
	}
	t.Skipped++
	return nil
}

func (e *engine) input(t *Tally, why string) {
	t.Input++
	e.rep.Inputs[why]++
}

// diverge reports that en is not what replay derives, unless one of its
// bodies is damaged.
func (e *engine) diverge(en *Entry, what, replayed, recorded, hint string) error {
	if err := en.verifyBodies(); err != nil {
		return err
	}
	return &Divergence{Seq: en.Env.Seq, Kind: en.Env.Kind, Entry: e.describe(en), What: what,
		Recorded: recorded, Replayed: replayed, Hint: hint}
}

// check compares a recorded envelope field with what replay derived.
func (e *engine) check(en *Entry, what, recorded, replayed string) error {
	if recorded == replayed {
		return nil
	}
	return e.diverge(en, what, quote(replayed), quote(recorded), "")
}

func (e *engine) gone(en *Entry, link bool) bool {
	m := e.redacted[en.Env.Seq]
	if m == nil {
		return false
	}
	if link {
		return m[en.Env.Params.KeyString()]
	}
	return m[en.Env.Result.KeyString()]
}

// missing reports a body the envelope links that is not stored. On a
// redaction list it is an erased body (opaque); otherwise the ledger is
// damaged.
func (e *engine) missing(en *Entry, params bool) error {
	name := "result"
	if params {
		name = "params"
	}
	if e.gone(en, params) {
		return nil
	}
	return corrupt(en.Env.Seq, "its %s body is missing and no redaction entry lists it (osmose ledger verify)", name)
}

func unix(ns int64) time.Time { return time.Unix(0, ns) }

// ---- start, topology, policy ----

func (e *engine) start(en *Entry, t *Tally) error {
	env := en.Env
	first := caps.GrantID(e.maxGrant + 1)
	if err := e.check(en, "reason", env.Reason, kernel.StartReason(first)); err != nil {
		return err
	}
	if e.run != nil && e.run.devs != nil {
		if err := e.run.devs.wait(); err != nil {
			return err
		}
		e.run.devs.close()
	}
	if e.run != nil && e.run.table != nil && e.last != nil {
		endings(e, e.run, unix(e.last.Time), true, e.ended)
	}
	// A new kernel knows no one's presence: people are reported again.
	clear(e.presence)
	for _, ep := range e.erased {
		ep.steps = nil
	}
	e.run = &run{start: env.Seq, first: first, dead: map[caps.GrantID]bool{}, grantSeq: map[caps.GrantID]uint64{},
		made: map[uint64]caps.GrantID{}, holders: map[string]caps.Principal{}, info: map[caps.GrantID]grantInfo{}, ends: map[uint64]*pendingEnd{},
		calls: map[uint64]*callRec{}, sessions: map[string]int{}}
	e.rep.Runs++
	t.Checked++
	return nil
}

func (e *engine) topology(en *Entry, t *Tally) error {
	r, env := e.run, en.Env
	if r.table != nil {
		return e.diverge(en, "order", "topology entries only at start", "a topology entry after the run's policy entry", "")
	}
	part, of, sum, err := kernel.ParseTopologyPart(env.Reason)
	if err != nil {
		return e.diverge(en, "reason", "a topology part", quote(env.Reason), "")
	}
	if en.Result == nil {
		return corrupt(env.Seq, "topology entry without its body")
	}
	if part != len(r.parts)+1 || (part > 1 && sum != r.partsSum) {
		return e.diverge(en, "topology part", fmt.Sprintf("part %d", len(r.parts)+1), quote(env.Reason), "")
	}
	r.parts = append(r.parts, en.Result)
	r.partsSum = sum
	if part < of {
		t.Input++
		return nil
	}
	data := bytes.Join(r.parts, nil)
	if sha256.Sum256(data) != sum {
		return e.diverge(en, "topology", fmt.Sprintf("sha256 %x", sum), fmt.Sprintf("parts hashing to %x", sha256.Sum256(data)), "")
	}
	top, err := topology.Parse(fmt.Sprintf("topology of seq %d", env.Seq), data)
	if err != nil {
		return e.diverge(en, "topology", "a topology the kernel started with", err.Error(), "")
	}
	r.top, r.topSeq = top, env.Seq
	e.input(t, "topology: the building the kernel started with")
	return nil
}

func (e *engine) policy(en *Entry, t *Tally) error {
	r, env := e.run, en.Env
	if en.Result == nil {
		if en.ResultGone {
			return e.missing(en, false)
		}
		return corrupt(env.Seq, "policy entry without its files")
	}
	files, err := kernel.DecodePolicy(en.Result)
	if err != nil {
		return corrupt(env.Seq, "%v", err)
	}
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = f.Name
	}
	if r.table == nil {
		// The policy the kernel started with: the run's table is built now.
		if r.top == nil {
			return e.diverge(en, "order", "the run's topology entries before its policy", "a policy entry", "a ledger of a kernel that did not record its topology cannot be replayed")
		}
		if err := e.check(en, "reason", env.Reason, kernel.StartPolicyReason(len(files))); err != nil {
			return err
		}
		if err := e.check(en, "decision", string(env.Decision), string(ledger.DecisionAdmit)); err != nil {
			return err
		}
		table, err := caps.New(caps.Config{
			Interfaces: e.cat.Interfaces(), Topology: kernel.CapsTopology(r.top), Policy: files,
			Location: e.opts.Location, FirstGrant: r.first,
		})
		if err != nil {
			return e.diverge(en, "policy", "the caps table refuses it: "+err.Error(), "the kernel started with it", "")
		}
		r.table = table
		r.policy = policyInfo{Seq: env.Seq, Files: names, Note: env.Reason}
		if e.opts.Drivers {
			if r.devs, err = newDevices(e, r.top); err != nil {
				return fmt.Errorf("seq %d: start the drivers: %w", env.Seq, err)
			}
		}
		t.Checked++
		return nil
	}
	dec, perr := r.table.SetPolicy(files...)
	want, reason := ledger.DecisionAdmit, kernel.Truncate(dec.Reason)
	if perr != nil {
		want, reason = ledger.DecisionDeny, kernel.PolicyRefusal(perr)
	}
	if err := e.check(en, "decision", string(env.Decision), string(want)); err != nil {
		return err
	}
	if err := e.check(en, "reason", env.Reason, reason); err != nil {
		return err
	}
	if perr == nil {
		r.policy = policyInfo{Seq: env.Seq, Files: names, Note: env.Reason}
		e.revoked(env, kernel.WhyPolicy, dec.Revoked, false)
	}
	t.Checked++
	return nil
}

// revoked notes the revocations a policy or presence change made: the
// "revoke" entry that refers to it must list them.
func (e *engine) revoked(env *ledger.Envelope, why string, revs []caps.Revocation, opaque bool) {
	if len(revs) == 0 && !opaque {
		return
	}
	ids := make([]caps.GrantID, len(revs))
	for i, rv := range revs {
		ids[i] = rv.Grant
		e.run.dead[rv.Grant] = true
	}
	e.run.ends[env.Seq] = &pendingEnd{actor: env.Actor, why: why, time: env.Time, ended: ids, opaque: opaque}
}

// ---- logins ----

func (e *engine) login(en *Entry, t *Tally) error {
	env, r := en.Env, e.run
	if env.Decision == ledger.DecisionAdmit && r.top != nil {
		if _, ok := r.top.Login(env.Actor); !ok {
			return e.diverge(en, "principal", "no principal "+quote(env.Actor)+" in the run's topology", "a login admitted", "")
		}
		r.sessions[env.Actor]++
		if env.Subject != "" {
			// A person's login names their pseudonym: who an erased
			// presence was is known from here on.
			if err := e.learn(en, env.Actor, env.Subject); err != nil {
				return err
			}
		}
	}
	e.input(t, "logins (the signature and nonce are not on the ledger)")
	return nil
}

// holder returns the grant holder a login id stands for, as a session or
// an operator's grant does (capsPrincipal of the topology's principal).
func (e *engine) holder(id string) (caps.Principal, bool) {
	r := e.run
	if p, ok := r.holders[id]; ok {
		return p, true
	}
	tp, ok := r.top.Login(id)
	if !ok {
		return caps.Principal{}, false
	}
	p, ok := kernel.CapsPrincipal(tp)
	if ok {
		r.holders[id] = p
	}
	return p, ok
}

// ---- grants ----

func (e *engine) grant(en *Entry, t *Tally) error {
	env, r := en.Env, e.run
	if en.Params == nil {
		if en.ParamsGone {
			if err := e.missing(en, true); err != nil {
				return err
			}
		}
		return e.grantUnasked(en, t)
	}
	q, err := kernel.DecodeGrantRequest(en.Params)
	if err != nil {
		return corrupt(env.Seq, "%v", err)
	}
	holder, ok := e.holder(q.Holder)
	if !ok {
		return e.diverge(en, "holder", "no principal "+quote(q.Holder)+" that can hold grants", "a "+string(env.Kind)+" entry for it", "")
	}
	now := unix(env.Time)
	var dec caps.Decision
	var parent caps.GrantID
	var ask func() caps.Decision
	if env.Kind == ledger.KindGrant {
		if q.From != 0 {
			return corrupt(env.Seq, "a grant entry whose request names a parent, %s", q.From)
		}
		ask = func() caps.Decision {
			return r.table.Open(caps.Open{Holder: holder, Target: env.Device, Interface: env.Interface, Methods: q.Methods, Caveats: q.Caveats, Now: now})
		}
	} else {
		parent = q.From
		ask = func() caps.Decision {
			return r.table.Delegate(caps.Delegate{From: parent, To: holder, Methods: q.Methods, Caveats: q.Caveats, Now: now})
		}
	}
	if dec = ask(); !dec.OK() && env.Decision == ledger.DecisionAdmit {
		dec = e.bindErased(holder, dec, ask)
	}
	t.Checked++
	return e.granted(en, dec, parent)
}

// granted checks a grant or delegate entry against the table's decision
// dec and records the grant made.
func (e *engine) granted(en *Entry, dec caps.Decision, parent caps.GrantID) error {
	env, r := en.Env, e.run
	want, reason := ledger.DecisionAdmit, kernel.Truncate(dec.Reason)
	if !dec.OK() {
		want, reason = ledger.DecisionDeny, kernel.Refusal(string(env.Kind), dec)
	}
	if err := e.check(en, "decision", string(env.Decision), string(want)); err != nil {
		if !dec.OK() {
			err.(*Divergence).Replayed += ": " + reason
		}
		return err
	}
	if err := e.check(en, "reason", env.Reason, reason); err != nil {
		return err
	}
	if err := e.check(en, "grant", fmt.Sprint(env.Grant), fmt.Sprint(uint64(dec.Grant))); err != nil {
		return err
	}
	if err := e.check(en, "ref", fmt.Sprint(env.Ref), fmt.Sprint(r.grantSeq[parent])); err != nil {
		return err
	}
	if !dec.OK() {
		return nil
	}
	g, _ := r.table.Grant(dec.Grant)
	if err := e.check(en, "target", env.Device, g.Target); err != nil {
		return err
	}
	grantor := "policy"
	if g.Parent != 0 {
		if pg, ok := r.table.Grant(g.Parent); ok {
			grantor = pg.Holder.ID
		}
	}
	body, err := e.cat.GrantBody(g, grantor)
	if err != nil {
		return fmt.Errorf("seq %d: encode the grant: %w", env.Seq, err)
	}
	switch {
	case en.Result != nil:
		var key string
		key, e.scratch = bodyKey(body, en.ResultSalt, e.scratch)
		if key != env.Result.KeyString() {
			return e.diverge(en, "grant body", describeGrant(body), describeGrant(en.Result), "")
		}
	case en.ResultGone:
		if err := e.missing(en, false); err != nil {
			return err
		}
	default:
		return corrupt(env.Seq, "a %s entry without the grant it made", env.Kind)
	}
	r.grantSeq[dec.Grant] = env.Seq
	r.made[env.Seq] = dec.Grant
	r.info[dec.Grant] = grantInfo{iface: g.Interface, target: g.Target, holder: g.Holder.ID}
	return nil
}

// grantUnasked replays a grant or delegate entry of a kernel that did not
// record the request: an admitted one is asked again with the methods
// and caveats the grant got (the policy's caveats meet the requested
// ones, so asking with the result asks no more); a refused one cannot be
// asked again, and is an input.
func (e *engine) grantUnasked(en *Entry, t *Tally) error {
	env, r := en.Env, e.run
	if env.Decision != ledger.DecisionAdmit || en.Result == nil {
		e.input(t, "refused grant requests a kernel did not record (no request body)")
		return nil
	}
	g, err := decodeGrant(en.Result)
	if err != nil {
		return corrupt(env.Seq, "grant body: %v", err)
	}
	holder, ok := e.holder(g.holder)
	if !ok {
		return e.diverge(en, "holder", "no principal "+quote(g.holder)+" that can hold grants", "a grant for it", "")
	}
	now := unix(env.Time)
	var dec caps.Decision
	var parent caps.GrantID
	if env.Kind == ledger.KindGrant {
		dec = r.table.Open(caps.Open{Holder: holder, Target: env.Device, Interface: env.Interface, Methods: g.methods, Caveats: g.caveats, Now: now})
	} else {
		parent = r.made[env.Ref]
		dec = r.table.Delegate(caps.Delegate{From: parent, To: holder, Methods: g.methods, Caveats: g.caveats, Now: now})
	}
	t.Checked++
	e.rep.Inputs["grants asked again with what they got (the kernel did not record the request)"]++
	return e.granted(en, dec, parent)
}

// ---- revocations and releases ----

func (e *engine) retire(en *Entry, t *Tally) error {
	env, r := en.Env, e.run
	if pe, ok := r.ends[env.Ref]; ok && env.Kind == ledger.KindRevoke {
		delete(r.ends, env.Ref)
		return e.changeEnded(en, t, pe)
	}
	if env.Kind == ledger.KindRevoke && env.Ref == 0 && strings.HasPrefix(env.Reason, kernel.WhyForgotten+":") {
		return e.forgotten(en, t)
	}
	id := caps.GrantID(env.Grant)
	by, ok := e.holder(env.Actor)
	if !ok {
		return e.diverge(en, "actor", "no principal "+quote(env.Actor)+" that holds grants", "a "+string(env.Kind)+" by it", "")
	}
	g, _ := r.table.Grant(id)
	var dec caps.Decision
	op := "revoke"
	if env.Kind == ledger.KindRelease {
		op = "release"
		dec = r.table.Release(id)
	} else {
		dec = r.table.Revoke(caps.Revoke{Grant: id, By: by, Reason: "revoked by " + env.Actor})
	}
	want, reason := ledger.DecisionAdmit, kernel.Truncate(dec.Reason)
	var list string
	if !dec.OK() {
		want, reason = ledger.DecisionDeny, kernel.Refusal(op, dec)
	} else {
		ended := make([]caps.GrantID, 0, len(dec.Revoked)+1)
		if op == "release" {
			ended = append(ended, id)
		}
		for _, rv := range dec.Revoked {
			ended = append(ended, rv.Grant)
		}
		for _, id := range ended {
			r.dead[id] = true
		}
		list = kernel.GrantList(ended)
	}
	for _, c := range [...]struct{ what, rec, rep string }{
		{"decision", string(env.Decision), string(want)},
		{"reason", env.Reason, reason},
		{"target", env.Device, g.Target},
		{"interface", fmt.Sprintf("%#x", env.Interface), fmt.Sprintf("%#x", g.Interface)},
		{"ref", fmt.Sprint(env.Ref), fmt.Sprint(r.grantSeq[id])},
		{"grants ended", string(en.Params), list},
	} {
		if err := e.check(en, c.what, c.rec, c.rep); err != nil {
			return err
		}
	}
	t.Checked++
	return nil
}

// forgotten checks the "revoke" entry of a person's erasure while the
// kernel ran (forget.go, Forget): the kernel revoked, in id order, every
// live grant the person held, with its subtree. The entry names no one:
// the person is the holder of the first grant it lists, and every live
// grant of theirs must be on the list.
func (e *engine) forgotten(en *Entry, t *Tally) error {
	env, r := en.Env, e.run
	ids, ok := parseGrantList(string(en.Params))
	if !ok || len(ids) == 0 {
		return corrupt(env.Seq, "a revoke entry without its list of ended grants")
	}
	g, ok := r.table.Grant(ids[0])
	if !ok || g.Holder.Kind != caps.Person {
		return e.diverge(en, "grants ended", "a list that starts with a person's grant", quote(string(en.Params)), "")
	}
	person := g.Holder
	var ended []caps.GrantID
	for g := range r.table.Grants() {
		if g.Holder != person || g.Revoked {
			continue
		}
		for _, rv := range r.table.Revoke(caps.Revoke{Grant: g.ID, Reason: kernel.WhyForgotten}).Revoked {
			ended = append(ended, rv.Grant)
		}
	}
	for _, id := range ended {
		r.dead[id] = true
	}
	for _, c := range [...]struct{ what, rec, rep string }{
		{"decision", string(env.Decision), string(ledger.DecisionAdmit)},
		{"reason", env.Reason, kernel.EndedGrantsReason(kernel.WhyForgotten, len(ended))},
		{"grant", fmt.Sprint(env.Grant), fmt.Sprint(uint64(ended[0]))},
		{"grants ended", string(en.Params), kernel.GrantList(ended)},
	} {
		if err := e.check(en, c.what, c.rec, c.rep); err != nil {
			return err
		}
	}
	t.Checked++
	return nil
}

// changeEnded checks the "revoke" entry that lists the grants a policy or
// presence change ended (policy.go, endGrants).
func (e *engine) changeEnded(en *Entry, t *Tally, pe *pendingEnd) error {
	env, r := en.Env, e.run
	if pe.opaque {
		// The change's person is unknown (erased): its list is taken as
		// recorded, and the grants it names end here.
		ids, _ := parseGrantList(string(en.Params))
		for _, id := range ids {
			if g, ok := r.table.Grant(id); ok && !g.Revoked {
				r.table.Revoke(caps.Revoke{Grant: id, Reason: env.Reason})
			}
			r.dead[id] = true
		}
		e.input(t, "revocations of erased presence changes, applied as recorded")
		return nil
	}
	first := uint64(0)
	if len(pe.ended) > 0 {
		first = uint64(pe.ended[0])
	}
	for _, c := range [...]struct{ what, rec, rep string }{
		{"actor", env.Actor, pe.actor},
		{"decision", string(env.Decision), string(ledger.DecisionAdmit)},
		{"reason", env.Reason, kernel.EndedGrantsReason(pe.why, len(pe.ended))},
		{"grant", fmt.Sprint(env.Grant), fmt.Sprint(first)},
		{"time", fmt.Sprint(env.Time), fmt.Sprint(pe.time)},
		{"grants ended", string(en.Params), kernel.GrantList(pe.ended)},
	} {
		if err := e.check(en, c.what, c.rec, c.rep); err != nil {
			return err
		}
	}
	t.Checked++
	return nil
}

func parseGrantList(s string) ([]caps.GrantID, bool) {
	var out []caps.GrantID
	for _, f := range strings.Fields(s) {
		var n uint64
		if _, err := fmt.Sscanf(f, "g%d", &n); err != nil || n == 0 {
			return nil, false
		}
		out = append(out, caps.GrantID(n))
	}
	return out, true
}

// ---- presence ----

type presenceBody struct {
	Person  string `json:"person"`
	Place   string `json:"place"`
	Present bool   `json:"present"`
}

// erasedPerson is a person whose presence entries were erased: the
// envelopes say where their pseudonym entered and left, not who it was.
// Replay learns who (bindErased) when a decision about a person can only
// have been made with that presence; until then it is not in the table.
type erasedPerson struct {
	steps  []presenceBody // where the pseudonym went, Person unset
	person string         // the person id, once bound
}

func (e *engine) presenceEntry(en *Entry, t *Tally) error {
	env, r := en.Env, e.run
	var b presenceBody
	if en.Params == nil {
		if err := e.missing(en, true); err != nil {
			return err
		}
		// Erased: who it was is gone. The place and the verb are in the
		// envelope; the revocations it caused follow as recorded.
		t.Opaque++
		if env.Decision != ledger.DecisionAdmit {
			return nil
		}
		b = presenceBody{Place: env.Device, Present: strings.HasPrefix(env.Reason, "a person entered ")}
		ep := e.erased[env.Subject]
		if ep == nil {
			ep = &erasedPerson{person: e.personOf[env.Subject]}
			e.erased[env.Subject] = ep
		}
		if ep.person == "" {
			r.opaque++
			ep.steps = append(ep.steps, b)
			e.move(env.Subject, env.Device, b.Present)
			e.revoked(env, kernel.WhyPresence, nil, true)
			return nil
		}
		// Bound: replayed as the person it was, and checked.
		b.Person = ep.person
		t.Opaque--
		t.Checked++
		return e.report(en, b)
	}
	if err := json.Unmarshal(en.Params, &b); err != nil {
		return corrupt(env.Seq, "presence body: %v", err)
	}
	t.Checked++
	return e.report(en, b)
}

// report replays a presence report of b.Person (whose body may be gone
// when bindErased found who it was).
func (e *engine) report(en *Entry, b presenceBody) error {
	env, r := en.Env, e.run
	p := caps.Presence{Person: b.Person, Place: b.Place}
	var dec caps.Decision
	if b.Present {
		dec = r.table.Enter(p)
	} else {
		dec = r.table.Leave(p)
	}
	want, reason := ledger.DecisionAdmit, kernel.PresenceReason(b.Present, b.Place)
	if !dec.OK() {
		want, reason = ledger.DecisionDeny, kernel.PresenceRefusal(dec, b.Place)
	}
	for _, c := range [...]struct{ what, rec, rep string }{
		{"place", env.Device, b.Place},
		{"decision", string(env.Decision), string(want)},
		{"reason", env.Reason, reason},
	} {
		if err := e.check(en, c.what, c.rec, c.rep); err != nil {
			return err
		}
	}
	if err := e.learn(en, b.Person, env.Subject); err != nil {
		return err
	}
	if dec.OK() {
		e.move(env.Subject, b.Place, b.Present)
		e.revoked(env, kernel.WhyPresence, dec.Revoked, false)
	}
	return nil
}

// learn records that person's ledger pseudonym is subject; one person
// has one pseudonym. If presence entries of the pseudonym were erased
// before, they are replayed now as the person's.
func (e *engine) learn(en *Entry, person, subject string) error {
	if prev, ok := e.subjects[person]; ok {
		if prev != subject {
			return e.diverge(en, "subject", quote(prev), quote(subject), "one person has one pseudonym on a ledger")
		}
		return nil
	}
	if prev, ok := e.personOf[subject]; ok && prev != person {
		return e.diverge(en, "subject", "the pseudonym of "+prev, "the pseudonym of "+person, "one pseudonym stands for one person")
	}
	e.subjects[person], e.personOf[subject] = subject, person
	if ep := e.erased[subject]; ep != nil && ep.person == "" {
		e.bind(ep, person)
		e.rep.Inputs["people whose erased presence a later entry named"]++
	}
	return nil
}

// bind replays an erased pseudonym's presence so far as person's.
func (e *engine) bind(ep *erasedPerson, person string) {
	ep.person = person
	r := e.run
	for _, st := range ep.steps {
		p := caps.Presence{Person: person, Place: st.Place}
		if st.Present {
			r.table.Enter(p)
		} else {
			r.table.Leave(p)
		}
	}
	r.opaque -= len(ep.steps)
}

// bindErased is asked when a grant for a person holder would be refused
// though the ledger says it was made: if the holder has no presence
// replay knows of, and people's presence was erased, the decision may
// have rested on it. It tries each erased pseudonym in turn as the
// holder: replays its presence so far as the holder's and asks again
// (ask has no effect when it refuses). The first that makes the
// decision come out as recorded is who it was, from then on; the others
// are undone. It returns the decision asked again, or the refusal.
func (e *engine) bindErased(holder caps.Principal, refused caps.Decision, ask func() caps.Decision) caps.Decision {
	r := e.run
	if holder.Kind != caps.Person || len(e.erased) == 0 || len(r.table.Present(holder.ID)) > 0 {
		return refused
	}
	if _, known := e.subjects[holder.ID]; known {
		return refused
	}
	subjects := make([]string, 0, len(e.erased))
	for subj, ep := range e.erased {
		if ep.person == "" {
			subjects = append(subjects, subj)
		} else if ep.person == holder.ID {
			return refused
		}
	}
	slices.Sort(subjects)
	for _, subj := range subjects {
		ep := e.erased[subj]
		for _, st := range ep.steps {
			p := caps.Presence{Person: holder.ID, Place: st.Place}
			if st.Present {
				r.table.Enter(p)
			} else {
				r.table.Leave(p)
			}
		}
		if d := ask(); d.OK() {
			ep.person = holder.ID
			r.opaque -= len(ep.steps)
			e.subjects[holder.ID], e.personOf[subj] = subj, holder.ID
			e.rep.Inputs["people whose erased presence replay matched to a later decision"]++
			return d
		}
		for _, place := range r.table.Present(holder.ID) {
			r.table.Leave(caps.Presence{Person: holder.ID, Place: place})
		}
	}
	return refused
}

// move records a pseudonym entering or leaving a place, as the caps table
// does for its person (leaving a place leaves everything inside it).
func (e *engine) move(subject, place string, present bool) {
	at := e.presence[subject]
	if present {
		if i, found := slices.BinarySearch(at, place); !found {
			at = slices.Insert(at, i, place)
		}
	} else {
		at = slices.DeleteFunc(at, func(p string) bool { return topology.Within(p, place) })
	}
	if len(at) == 0 {
		delete(e.presence, subject)
	} else {
		e.presence[subject] = at
	}
}

// ---- calls ----

func (e *engine) call(ctx context.Context, en *Entry, t *Tally) error {
	env, r := en.Env, e.run
	id := caps.GrantID(env.Grant)
	_, mName := e.cat.MethodName(env.Interface, env.Method)
	deny := env.Decision == ledger.DecisionDeny
	if deny && (env.Reason == kernel.SessionEndedRefusal(mName) || env.Reason == kernel.ReleasedRefusal(mName)) {
		e.input(t, "calls refused for a session or capability that had ended (which session a call came by is not on the ledger)")
		return nil
	}
	g, ok := r.info[id]
	if !ok {
		return e.diverge(en, "grant", "no "+id.String()+" in this run", "a call under "+id.String(), "")
	}
	device := env.Interface == g.iface && int(env.Method) < e.cat.Methods(env.Interface)
	if !device && deny && strings.HasPrefix(env.Reason, "unimplemented: ") {
		gateName, _ := e.cat.MethodName(g.iface, 0)
		if err := e.check(en, "reason", env.Reason, kernel.UnknownMethodRefusal(gateName, mName, env.Interface, env.Method)); err != nil {
			return err
		}
		t.Checked++
		return nil
	}
	if device {
		if err := e.check(en, "device", env.Device, g.target); err != nil {
			return err
		}
		if err := e.check(en, "caller", env.Actor, g.holder); err != nil {
			err.(*Divergence).Hint = "a device gate is called by its grant's holder"
			return err
		}
	}
	now := unix(env.Time)
	var dec caps.Decision
	opaque := false
	switch {
	case r.dead[id]:
		dec = caps.Decision{Code: caps.CodeRevoked}
	case !device:
		dec = r.table.Live(id, now)
	case en.Params == nil && env.Params.Defined():
		if err := e.missing(en, true); err != nil {
			return err
		}
		// Erased arguments: admission is not re-derived; an admitted
		// call still spends its uses and rate on the chain.
		opaque = true
		if !deny {
			r.table.Admit(caps.Call{Grant: id, Method: env.Method, Now: now})
		}
	default:
		var args []caps.Arg
		if en.Params != nil && e.cat.HasArgs(env.Interface, env.Method) {
			args = e.cat.CallArgs(env.Interface, env.Method, en.paramsStruct())
		}
		dec = r.table.Admit(caps.Call{Grant: id, Method: env.Method, Args: args, Now: now})
	}
	if opaque {
		t.Opaque++
	} else {
		want, reason := ledger.DecisionAdmit, ""
		switch {
		case r.dead[id]:
			want, reason = ledger.DecisionDeny, kernel.EndedRefusal(mName, id)
		case !dec.OK():
			want, reason = ledger.DecisionDeny, kernel.Refusal(mName, dec)
		}
		if string(env.Decision) != string(want) {
			rep := string(want)
			if reason != "" {
				rep += ": " + reason
			}
			rec := string(env.Decision)
			if env.Reason != "" {
				rec += ": " + env.Reason
			}
			return e.diverge(en, "decision", quote(rep), quote(rec), "")
		}
		if err := e.check(en, "reason", env.Reason, reason); err != nil {
			return err
		}
		t.Checked++
	}
	if env.Decision != ledger.DecisionAdmit {
		return nil
	}
	switch {
	case device:
		e.lastCall[env.Device] = en
	case env.Interface == schema.ReadingListener_TypeID || env.Interface == schema.SwitchListener_TypeID:
		e.lastObs[env.Device] = en
	}
	c := &callRec{env: env, method: mName}
	if device && r.devs != nil {
		c.p = r.devs.call(en, opaque)
	}
	r.calls[env.Seq] = c
	return nil
}

// rootStruct reads canonical Cap'n Proto bytes as a struct; the zero
// Struct when they do not decode.
func rootStruct(data []byte) capnp.Struct {
	msg, _, err := capnp.NewMessage(capnp.SingleSegment(data))
	if err != nil {
		return capnp.Struct{}
	}
	p, err := msg.Root()
	if err != nil {
		return capnp.Struct{}
	}
	return p.Struct()
}

func (e *engine) ret(ctx context.Context, en *Entry, t *Tally) error {
	env, r := en.Env, e.run
	c, ok := r.calls[env.Ref]
	if !ok {
		return e.diverge(en, "ref", "a return only for an admitted call awaiting it", fmt.Sprintf("a return for seq %d", env.Ref), "")
	}
	delete(r.calls, env.Ref)
	ce := c.env
	if env.Actor != ce.Actor || env.Grant != ce.Grant || env.Device != ce.Device || env.Interface != ce.Interface || env.Method != ce.Method {
		for _, f := range [...]struct{ what, rec, rep string }{
			{"actor", env.Actor, ce.Actor},
			{"grant", fmt.Sprint(env.Grant), fmt.Sprint(ce.Grant)},
			{"device", env.Device, ce.Device},
			{"method", fmt.Sprintf("%#x.%d", env.Interface, env.Method), fmt.Sprintf("%#x.%d", ce.Interface, ce.Method)},
		} {
			if err := e.check(en, f.what, f.rec, f.rep); err != nil {
				return err
			}
		}
	}
	if en.ResultGone {
		if err := e.missing(en, false); err != nil {
			return err
		}
	}
	if env.Interface == schema.Sensor_TypeID && env.Method == mSensorRead && en.Result != nil {
		e.lastObs[env.Device] = en
	}
	interrupted := env.Reason != "" && env.Reason == kernel.InFlightError(c.method, caps.GrantID(ce.Grant))
	switch {
	case c.p == nil && !e.opts.Drivers:
		e.input(t, "results (drivers not re-run)")
	case c.p == nil:
		e.input(t, "results of callbacks and subscriptions (a program's or a derived capability's answer)")
	case en.ResultGone || c.p.opaque:
		t.Opaque++
		c.p.setReturn(en, true)
		return r.devs.drain(ctx, c.p.dev)
	case interrupted:
		e.rep.Results.Interrupted++
		e.input(t, "returns of calls interrupted by their grant's end")
		c.p.setReturn(en, true)
		return r.devs.drain(ctx, c.p.dev)
	default:
		c.p.setReturn(en, false)
		t.Checked++
		return r.devs.drain(ctx, c.p.dev)
	}
	return nil
}

// ---- the end ----

// notes says what the replayed prefix leaves open; complete says it is
// the whole ledger.
func (e *engine) notes(complete bool) []string {
	out := append([]string(nil), e.rep.Notes...)
	r := e.run
	if r == nil {
		return out
	}
	if n := len(r.calls); n > 0 {
		if complete {
			out = append(out, fmt.Sprintf("%d admitted calls have no return entry (the kernel stopped while the drivers had them)", n))
		} else {
			out = append(out, fmt.Sprintf("%d admitted calls return after the last entry replayed", n))
		}
	}
	n := 0
	for _, pe := range r.ends {
		if !pe.opaque {
			n++
		}
	}
	if n > 0 && complete {
		out = append(out, fmt.Sprintf("%d policy or presence changes revoked grants whose revoke entry is not on the ledger", n))
	}
	if r.opaque > 0 {
		out = append(out, fmt.Sprintf("%d presence entries were erased: who was where is unknown to replay, and later decisions are re-derived without it", r.opaque))
	}
	return out
}
