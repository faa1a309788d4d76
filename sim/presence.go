package sim

import (
	"context"
	"fmt"

	"github.com/osmose-os/osmose/schema"
)

// Presence. The door badges report every person entering and leaving a
// room to the kernel through a bridge program, and people log in with
// their own keys to use the room they are in.
//
//	badges bridge   logs in as BadgesID (an operator by kind), takes
//	                Session.operator, and reports each door badge event
//	                of the world, in its order, with Operator.presence
//	person          logs in the first time they want something of a room;
//	                on entering a room, half the time, opens its lights
//	                (grants bound to their presence there, by the policy),
//	                reads the first one and, if it is off or not at their
//	                preferred level (50-80 %, from the seed), sets them to
//	                it; leaving the room, they drop the capabilities: the
//	                kernel has revoked the grants on the badge's report

const personUseOdds = 0.5

// bridge is the door-badge bridge: one session holding the Operator
// capability.
type bridge struct {
	r  *runner
	c  *conn
	op schema.Operator
}

// startBridge logs the door-badge bridge in, if the topology has it with
// a key derived from the seed. Without one, nobody reports presence.
func (r *runner) startBridge(ctx context.Context) error {
	p, ok := r.cfg.Topology.Login(BadgesID)
	switch {
	case !ok:
		return fmt.Errorf("not in the topology: no presence reports")
	case p.Kind != schema.PrincipalKind_operator:
		return fmt.Errorf("kind %s, want operator (Operator.presence): no presence reports", p.Kind)
	case !r.seeded(BadgesID, p.Key):
		return fmt.Errorf("key not derived from the seed: no presence reports")
	}
	nc, err := r.cfg.Dial(ctx)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	c, err := dial(ctx, nc, r.cfg.KernelID, BadgesID, Key(r.cfg.Seed, BadgesID))
	if err != nil {
		return err
	}
	f, rel := c.session.Operator(ctx, nil)
	defer rel()
	res, err := f.Struct()
	if err != nil {
		c.hangUp()
		return fmt.Errorf("operator: %w", err)
	}
	r.badges = &bridge{r: r, c: c, op: res.Operator().AddRef()}
	return nil
}

// stop logs the bridge out.
func (b *bridge) stop(ctx context.Context) {
	if err := end(ctx, b.r.cfg.Settle, Ending{
		Quit:  func() { b.op.Release(); b.c.quit() },
		Close: b.c.hangUp,
	}); err != nil {
		b.r.logf("%s: stop: %v", BadgesID, err)
	}
}

// addPeople makes the world's people who are persons of the topology
// occupants: the badges report them, and those whose key derives from the
// seed can log in.
func (r *runner) addPeople() {
	for _, person := range r.cfg.World.People() {
		p, ok := r.cfg.Topology.Login(person.ID)
		if !ok || p.Kind != schema.PrincipalKind_person {
			continue
		}
		o := &occupant{r: r, id: person.ID, canLogin: r.seeded(person.ID, p.Key),
			level: uint8(50 + 10*(mix(uint64(r.cfg.Seed)^hashString(person.ID))%4))}
		r.people[person.ID] = o
		r.order = append(r.order, o)
	}
	if len(r.order) < len(r.cfg.World.People()) {
		r.rep.Skipped = append(r.rep.Skipped, fmt.Sprintf("%d of %d people are not persons of the topology: no presence reports for them",
			len(r.cfg.World.People())-len(r.order), len(r.cfg.World.People())))
	}
}

// badge reports one door badge event to the kernel, then lets the person
// drop what they held of a room they left.
func (r *runner) badge(ctx context.Context, e Event) {
	o := r.people[e.Person]
	if r.badges == nil || o == nil {
		return
	}
	f, rel := r.badges.op.Presence(ctx, func(p schema.Operator_presence_Params) error {
		p.SetPresent(e.Present)
		if err := p.SetPerson(e.Person); err != nil {
			return err
		}
		return p.SetPlace(e.Place)
	})
	res, err := f.Struct()
	n := 0
	if err == nil {
		l, lerr := res.Revoked()
		n, err = l.Len(), lerr
	}
	rel()
	r.mu.Lock()
	if err != nil {
		r.failures++
	} else {
		r.rep.Presence++
		r.rep.PresenceRevoked += n
	}
	r.mu.Unlock()
	if err != nil {
		r.logf("%s: presence %v: %v", BadgesID, e, err)
	}
	if !e.Present {
		o.left(e.Place)
	}
}

// occupant is a person's program: their own session, opened the first
// time they want something.
type occupant struct {
	r        *runner
	id       string
	canLogin bool
	level    uint8 // preferred light level, %

	c      *conn
	failed bool // their login failed: do not try again
	room   string
	caps   []held
}

// entered runs when the person has come into room (after the badge's
// report and the room's sensors): now and then they use its lights.
func (o *occupant) entered(ctx context.Context, room string) {
	r := o.r
	if !o.canLogin || o.failed || r.chance(o.id, "use", room) >= personUseOdds {
		return
	}
	if o.c == nil {
		nc, err := r.cfg.Dial(ctx)
		if err != nil {
			r.logf("%s: dial: %v", o.id, err)
			return
		}
		c, err := dial(ctx, nc, r.cfg.KernelID, o.id, Key(r.cfg.Seed, o.id))
		if err != nil {
			r.logf("%s: login: %v", o.id, err)
			o.failed = true
			return
		}
		o.c = c
		r.mu.Lock()
		r.rep.PeopleIn++
		r.mu.Unlock()
	}
	o.release()
	var caps []held
	err := o.call("open", func() error {
		var err error
		caps, err = o.c.open(ctx, room, r.classOf, schema.DeviceClass_light)
		return err
	})
	if err != nil || len(caps) == 0 {
		return
	}
	o.caps, o.room = caps, room
	r.mu.Lock()
	r.rep.PersonGrants += len(caps)
	r.mu.Unlock()
	on, level := false, uint8(0)
	if o.call("state", func() error {
		f, rel := schema.Light(caps[0].cap).State(ctx, nil)
		defer rel()
		res, err := f.Struct()
		if err != nil {
			return err
		}
		st, err := res.State()
		if err != nil {
			return err
		}
		on, level = st.On(), st.Level()
		return nil
	}) != nil {
		return
	}
	if on && level == o.level {
		return
	}
	for _, h := range caps {
		o.call("setLevel", func() error {
			return do(schema.Light(h.cap).SetLevel(ctx, func(q schema.Light_setLevel_Params) error { q.SetLevel(o.level); return nil }))
		})
	}
}

func (o *occupant) call(what string, f func() error) error {
	o.r.mu.Lock()
	o.r.rep.PersonCalls++
	o.r.mu.Unlock()
	return o.r.do(o.id, what, f)
}

// left runs when the person has left room: the kernel has revoked their
// grants there; they drop the capabilities.
func (o *occupant) left(room string) {
	if o.room == room {
		o.release()
	}
}

func (o *occupant) release() {
	for _, h := range o.caps {
		h.cap.Release()
	}
	o.caps, o.room = nil, ""
}

// stop logs the person out, if they logged in.
func (o *occupant) stop(ctx context.Context) {
	if o.c == nil {
		return
	}
	c := o.c
	if err := end(ctx, o.r.cfg.Settle, Ending{
		Quit:  func() { o.release(); c.quit() },
		Close: c.hangUp,
	}); err != nil {
		o.r.logf("%s: stop: %v", o.id, err)
	}
	o.c = nil
}

// hashString is FNV-1a of s.
func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}
