package replay

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/osmose-os/osmose/ledger"
	"github.com/osmose-os/osmose/schema"
)

// State is the kernel's state after one entry (time travel): what replay
// rebuilt from the entries up to it.
type State struct {
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"` // the entry's logical time
	// Run is the kernel run the entry is in (1 for the first), which
	// started at RunStart. Grants of earlier runs are not live in it.
	Run      int        `json:"run"`
	RunStart uint64     `json:"run_start"`
	Topology uint64     `json:"topology_seq"` // the entry completing the run's topology
	Policy   policyInfo `json:"policy"`       // the policy in force
	// Grants are the live grants: neither revoked nor released nor
	// expired at Time, by id.
	Grants []GrantState `json:"grants"`
	// Presence is who is where, people by their ledger pseudonyms.
	Presence []PresenceState `json:"presence"`
	// Sessions are the principals logged in, with how many sessions each.
	Sessions []SessionState `json:"sessions"`
	// Devices are the devices' states, by path.
	Devices []DeviceState `json:"devices"`
	// ended is how every grant of the run that is not live stands.
	ended map[string]string
}

// GrantState is one live grant.
type GrantState struct {
	ID        string   `json:"id"`
	Holder    string   `json:"holder"` // "kind:id"
	Target    string   `json:"target"`
	Interface string   `json:"interface"`
	Methods   []string `json:"methods"`
	Caveats   string   `json:"caveats,omitempty"`
	// Chain is the grant's ancestors, parent first, each "g2 (holder)".
	Chain    []string `json:"chain,omitempty"`
	Made     uint64   `json:"made"` // seq of the entry that made it
	UsesLeft *int     `json:"uses_left,omitempty"`
}

// PresenceState is where one person (by pseudonym) is.
type PresenceState struct {
	Subject string   `json:"subject"`
	Places  []string `json:"places"`
}

// SessionState is a principal's open sessions.
type SessionState struct {
	Principal string `json:"principal"`
	Sessions  int    `json:"sessions"`
}

// DeviceState is what one device is doing.
type DeviceState struct {
	Path  string `json:"path"`
	Class string `json:"class"`
	// State is what its replayed driver reports (with --drivers), in the
	// Cap'n Proto text format; the world's values in it (a measured
	// temperature) are the last the record gave.
	State string `json:"state,omitempty"`
	// Reported is the last reading or button event it reported, or a
	// read's result, and the entry that carried it.
	Reported    string `json:"reported,omitempty"`
	ReportedSeq uint64 `json:"reported_seq,omitempty"`
	// LastCall is the last admitted call on it, and its entry.
	LastCall    string `json:"last_call,omitempty"`
	LastCallSeq uint64 `json:"last_call_seq,omitempty"`
}

// State returns the state after the last entry replayed. With drivers,
// it asks each device's replayed driver its state (at the entry's time).
func (rp *Replay) State(ctx context.Context) (*State, error) {
	e := rp.eng
	if rp.next == 0 || e.last == nil {
		return nil, fmt.Errorf("no entry replayed yet")
	}
	st := &State{Seq: rp.next - 1, Time: time.Unix(0, e.last.Time).UTC(), Run: e.rep.Runs, ended: maps.Clone(e.ended),
		Grants: []GrantState{}, Presence: []PresenceState{}, Sessions: []SessionState{}, Devices: []DeviceState{}}
	for subj, places := range e.presence {
		st.Presence = append(st.Presence, PresenceState{Subject: subj, Places: slices.Clone(places)})
	}
	sort.Slice(st.Presence, func(i, j int) bool { return st.Presence[i].Subject < st.Presence[j].Subject })
	r := e.run
	if r == nil {
		return st, nil
	}
	st.RunStart, st.Topology, st.Policy = r.start, r.topSeq, r.policy
	for p, n := range r.sessions {
		if n > 0 {
			st.Sessions = append(st.Sessions, SessionState{Principal: p, Sessions: n})
		}
	}
	sort.Slice(st.Sessions, func(i, j int) bool { return st.Sessions[i].Principal < st.Sessions[j].Principal })
	if r.table != nil {
		st.grants(e, r, unix(e.last.Time))
	}
	if r.top != nil {
		if err := st.devices(ctx, e, r); err != nil {
			return nil, err
		}
	}
	return st, nil
}

// endings says how every grant of a run that is not live at now ended;
// with restart, the live ones end too, with the run.
func endings(e *engine, r *run, now time.Time, restart bool, out map[string]string) {
	for g := range r.table.Grants() {
		switch {
		case g.Revoked:
			out[g.ID.String()] = "revoked"
		case g.Released:
			out[g.ID.String()] = "released"
		case !r.table.Live(g.ID, now).OK():
			out[g.ID.String()] = "expired"
		case restart:
			out[g.ID.String()] = "kernel restarted"
		}
	}
	// Released grants without children are gone from the table.
	for id := r.first; uint64(id) <= e.maxGrant; id++ {
		if _, ok := r.table.Grant(id); !ok && r.grantSeq[id] != 0 {
			out[id.String()] = "released"
		}
	}
}

func (st *State) grants(e *engine, r *run, now time.Time) {
	endings(e, r, now, false, st.ended)
	for g := range r.table.Grants() {
		id := g.ID.String()
		if _, ended := st.ended[id]; ended {
			continue
		}
		f, _ := e.cat.MethodName(g.Interface, 0)
		gs := GrantState{ID: id, Holder: g.Holder.String(), Target: g.Target, Interface: f,
			Caveats: g.Caveats.String(), Made: r.grantSeq[g.ID]}
		for _, m := range g.Methods {
			gs.Methods = append(gs.Methods, m.Name)
		}
		if g.Caveats.Uses != 0 {
			n := g.UsesLeft
			gs.UsesLeft = &n
		}
		for p := g.Parent; p != 0; {
			pg, ok := r.table.Grant(p)
			if !ok {
				gs.Chain = append(gs.Chain, p.String())
				break
			}
			gs.Chain = append(gs.Chain, fmt.Sprintf("%s (%s)", p, pg.Holder.ID))
			p = pg.Parent
		}
		st.Grants = append(st.Grants, gs)
	}
}

func (st *State) devices(ctx context.Context, e *engine, r *run) error {
	for _, d := range r.top.Devices {
		ds := DeviceState{Path: d.Path, Class: d.Class.String()}
		if c := e.lastCall[d.Path]; c != nil && c.Env.Seq > r.start {
			f, m := e.cat.MethodName(c.Env.Interface, c.Env.Method)
			ds.LastCall = f + "." + m + render(schemaInfo().types(c.Env.Interface, c.Env.Method).params, orEmpty(c.Params))
			ds.LastCallSeq = c.Env.Seq
		}
		if o := e.lastObs[d.Path]; o != nil && o.Env.Seq > r.start {
			ds.ReportedSeq = o.Env.Seq
			if o.Env.Kind == ledger.KindReturn {
				ds.Reported = describeResult(o.Env.Interface, o.Env.Method, o.Result)
			} else {
				ds.Reported = render(schemaInfo().types(o.Env.Interface, o.Env.Method).params, orEmpty(o.Params))
			}
		}
		if r.devs != nil {
			if dv := r.devs.byPath[d.Path]; dv != nil {
				s, err := r.devs.state(ctx, dv, e.last.Time)
				if err != nil {
					return fmt.Errorf("state of %s: %w", d.Path, err)
				}
				ds.State = s
			}
		}
		st.Devices = append(st.Devices, ds)
	}
	return nil
}

// orEmpty renders absent params as the empty struct.
func orEmpty(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// stateMethod is the method that reads a device class's state, and
// whether it has one.
func stateMethod(c schema.DeviceClass) (iface uint64, method uint16, ok bool) {
	switch c {
	case schema.DeviceClass_light:
		return schema.Light_TypeID, 2, true
	case schema.DeviceClass_thermostat:
		return schema.Thermostat_TypeID, mThermostatState, true
	case schema.DeviceClass_doorLock:
		return schema.DoorLock_TypeID, mLockState, true
	case schema.DeviceClass_display:
		return schema.Display_TypeID, 2, true
	case schema.DeviceClass_speaker:
		return schema.Speaker_TypeID, mSpeakerState, true
	case schema.DeviceClass_microphone:
		return schema.Microphone_TypeID, mMicFormat, true
	}
	return 0, 0, false
}

// state asks a replayed driver its state at time ns.
func (d *devices) state(ctx context.Context, dv *device, ns int64) (string, error) {
	iface, m, ok := stateMethod(dv.class)
	if !ok {
		return "", nil
	}
	ans, release := dv.client.SendCall(context.WithValue(ctx, inputKey{}, &callInput{time: ns, method: m}), capnp.Send{Method: capnp.Method{InterfaceID: iface, MethodID: m}})
	defer release()
	s, err := ans.Struct()
	if err != nil {
		return "", err
	}
	// What the world decides (a measured temperature, a door's contact,
	// whether a speaker still plays) and the time of the query are left
	// out: replay knows them only from the record.
	switch dv.class {
	case schema.DeviceClass_thermostat:
		st, err := schema.Thermostat_state_Results(s).State()
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("(setpoint = %g, mode = %s)", st.Setpoint(), st.Mode()), nil
	case schema.DeviceClass_doorLock:
		st, err := schema.DoorLock_state_Results(s).State()
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("(locked = %t, relockAt = %d, time = %d)", st.Locked(), st.RelockAt(), st.Time()), nil
	case schema.DeviceClass_speaker:
		st, err := schema.Speaker_state_Results(s).State()
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("(volume = %d)", st.Volume()), nil
	}
	out, err := capnp.Canonicalize(s)
	if err != nil {
		return "", err
	}
	return describeResult(iface, m, out), nil
}

// Text is the state in lines, for people.
func (st *State) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "state after seq %d (%s), kernel run %d (started at seq %d)\n", st.Seq, st.Time.Format(time.RFC3339Nano), st.Run, st.RunStart)
	if st.Policy.Seq != 0 {
		fmt.Fprintf(&b, "policy: seq %d, files %s\n", st.Policy.Seq, strings.Join(st.Policy.Files, ", "))
	}
	fmt.Fprintf(&b, "grants live: %d\n", len(st.Grants))
	for _, g := range st.Grants {
		fmt.Fprintf(&b, "  %s %s on %s %s(%s)", g.ID, g.Holder, g.Target, g.Interface, strings.Join(g.Methods, ", "))
		if g.Caveats != "" {
			fmt.Fprintf(&b, " [%s]", g.Caveats)
		}
		if len(g.Chain) > 0 {
			fmt.Fprintf(&b, " from %s", strings.Join(g.Chain, " ← "))
		}
		fmt.Fprintf(&b, " (seq %d)\n", g.Made)
	}
	fmt.Fprintf(&b, "presence: %d people\n", len(st.Presence))
	for _, p := range st.Presence {
		fmt.Fprintf(&b, "  %s in %s\n", p.Subject, strings.Join(p.Places, ", "))
	}
	fmt.Fprintf(&b, "sessions: %d principals\n", len(st.Sessions))
	for _, s := range st.Sessions {
		fmt.Fprintf(&b, "  %s (%d)\n", s.Principal, s.Sessions)
	}
	fmt.Fprintf(&b, "devices: %d\n", len(st.Devices))
	for _, d := range st.Devices {
		fmt.Fprintf(&b, "  %s (%s)", d.Path, d.Class)
		if d.State != "" {
			fmt.Fprintf(&b, " %s", d.State)
		}
		if d.Reported != "" {
			fmt.Fprintf(&b, " reported %s (seq %d)", d.Reported, d.ReportedSeq)
		}
		if d.LastCall != "" {
			fmt.Fprintf(&b, " last call %s (seq %d)", d.LastCall, d.LastCallSeq)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// Diff is what changed between two states.
type Diff struct {
	From        uint64          `json:"from"`
	To          uint64          `json:"to"`
	Restarts    int             `json:"restarts"` // kernel runs started in between
	Policy      *policyInfo     `json:"policy,omitempty"`
	GrantsMade  []GrantState    `json:"grants_made"`
	GrantsEnded []GrantEnd      `json:"grants_ended"`
	Presence    []PresenceDelta `json:"presence"`
	Sessions    []SessionDelta  `json:"sessions"`
	Devices     []DeviceDelta   `json:"devices"`
}

// GrantEnd is a grant live at From and not at To.
type GrantEnd struct {
	ID     string `json:"id"`
	Holder string `json:"holder"`
	Target string `json:"target"`
	How    string `json:"how"` // revoked, released, expired, kernel restarted
}

// PresenceDelta is where a person came and went.
type PresenceDelta struct {
	Subject string   `json:"subject"`
	Entered []string `json:"entered,omitempty"`
	Left    []string `json:"left,omitempty"`
}

// SessionDelta is a change in a principal's open sessions.
type SessionDelta struct {
	Principal string `json:"principal"`
	From      int    `json:"from"`
	To        int    `json:"to"`
}

// DeviceDelta is a change of a device's state or of what it reported.
type DeviceDelta struct {
	Path string `json:"path"`
	What string `json:"what"` // state, reported, last call
	From string `json:"from"`
	To   string `json:"to"`
}

// Compare returns what changed from state a to state b.
func Compare(a, b *State) *Diff {
	d := &Diff{From: a.Seq, To: b.Seq, Restarts: b.Run - a.Run,
		GrantsMade: []GrantState{}, GrantsEnded: []GrantEnd{}, Presence: []PresenceDelta{}, Sessions: []SessionDelta{}, Devices: []DeviceDelta{}}
	if a.Policy.Seq != b.Policy.Seq {
		p := b.Policy
		d.Policy = &p
	}
	live := map[string]GrantState{}
	for _, g := range b.Grants {
		live[g.ID] = g
	}
	before := map[string]bool{}
	for _, g := range a.Grants {
		before[g.ID] = true
		if _, ok := live[g.ID]; ok && a.Run == b.Run {
			continue
		}
		how := b.ended[g.ID]
		if how == "" {
			how = "kernel restarted"
		}
		d.GrantsEnded = append(d.GrantsEnded, GrantEnd{ID: g.ID, Holder: g.Holder, Target: g.Target, How: how})
	}
	for _, g := range b.Grants {
		if !before[g.ID] || a.Run != b.Run {
			d.GrantsMade = append(d.GrantsMade, g)
		}
	}
	where := func(ps []PresenceState) map[string][]string {
		m := map[string][]string{}
		for _, p := range ps {
			m[p.Subject] = p.Places
		}
		return m
	}
	pa, pb := where(a.Presence), where(b.Presence)
	var subjects []string
	for s := range pa {
		subjects = append(subjects, s)
	}
	for s := range pb {
		if _, ok := pa[s]; !ok {
			subjects = append(subjects, s)
		}
	}
	sort.Strings(subjects)
	for _, s := range subjects {
		delta := PresenceDelta{Subject: s}
		for _, p := range pb[s] {
			if !slices.Contains(pa[s], p) {
				delta.Entered = append(delta.Entered, p)
			}
		}
		for _, p := range pa[s] {
			if !slices.Contains(pb[s], p) {
				delta.Left = append(delta.Left, p)
			}
		}
		if delta.Entered != nil || delta.Left != nil {
			d.Presence = append(d.Presence, delta)
		}
	}
	sa, sb := map[string]int{}, map[string]int{}
	for _, s := range a.Sessions {
		sa[s.Principal] = s.Sessions
	}
	for _, s := range b.Sessions {
		sb[s.Principal] = s.Sessions
	}
	var principals []string
	for p := range sa {
		principals = append(principals, p)
	}
	for p := range sb {
		if _, ok := sa[p]; !ok {
			principals = append(principals, p)
		}
	}
	sort.Strings(principals)
	for _, p := range principals {
		if sa[p] != sb[p] {
			d.Sessions = append(d.Sessions, SessionDelta{Principal: p, From: sa[p], To: sb[p]})
		}
	}
	devs := map[string]DeviceState{}
	for _, x := range a.Devices {
		devs[x.Path] = x
	}
	for _, y := range b.Devices {
		x := devs[y.Path]
		for _, c := range [...]struct{ what, from, to string }{
			{"state", x.State, y.State},
			{"reported", x.Reported, y.Reported},
			{"last call", x.LastCall, y.LastCall},
		} {
			if c.from != c.to {
				d.Devices = append(d.Devices, DeviceDelta{Path: y.Path, What: c.what, From: c.from, To: c.to})
			}
		}
	}
	return d
}

// Text is the diff in lines, for people.
func (d *Diff) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "from seq %d to seq %d", d.From, d.To)
	if d.Restarts > 0 {
		fmt.Fprintf(&b, " (kernel restarts: %d)", d.Restarts)
	}
	b.WriteString("\n")
	if d.Policy != nil {
		fmt.Fprintf(&b, "policy changed at seq %d: files %s\n", d.Policy.Seq, strings.Join(d.Policy.Files, ", "))
	}
	for _, g := range d.GrantsMade {
		fmt.Fprintf(&b, "+ grant %s %s on %s %s(%s)", g.ID, g.Holder, g.Target, g.Interface, strings.Join(g.Methods, ", "))
		if g.Caveats != "" {
			fmt.Fprintf(&b, " [%s]", g.Caveats)
		}
		fmt.Fprintf(&b, " (seq %d)\n", g.Made)
	}
	for _, g := range d.GrantsEnded {
		fmt.Fprintf(&b, "- grant %s %s on %s: %s\n", g.ID, g.Holder, g.Target, g.How)
	}
	for _, p := range d.Presence {
		for _, pl := range p.Entered {
			fmt.Fprintf(&b, "+ %s in %s\n", p.Subject, pl)
		}
		for _, pl := range p.Left {
			fmt.Fprintf(&b, "- %s in %s\n", p.Subject, pl)
		}
	}
	for _, s := range d.Sessions {
		fmt.Fprintf(&b, "~ sessions of %s: %d → %d\n", s.Principal, s.From, s.To)
	}
	for _, x := range d.Devices {
		from := x.From
		if from == "" {
			from = "-"
		}
		to := x.To
		if to == "" {
			to = "-"
		}
		fmt.Fprintf(&b, "~ %s %s: %s → %s\n", x.Path, x.What, from, to)
	}
	return b.String()
}
