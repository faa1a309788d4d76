package replaytest

import (
	"context"
	"fmt"
	"strings"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/osmose-os/osmose/schema"
	"github.com/osmose-os/osmose/sim"
)

// StorySeed is the seed of Story's building.
const StorySeed = 42

// Story writes into the data directory dir a ledger that exercises every
// kind of decision replay re-derives, through a real kernel and real
// clients, in two kernel runs. In room r101 of a one-room building with
// two people:
//
//	op opens light-1                                      g1 (root)
//	the badges report p-0001 in r101; p-0001 opens light-1 g2 (bound to presence)
//	p-0001: setLevel 50 (admit), 90 (deny: range 0..80)   "denied"
//	op delegates g1 to the switch: setLevel, level ≤ 40    g3
//	the switch: setLevel 30 (admit), 60 (deny: range)
//	the switch delegates g3 to p-0002 (refused: not in the room)
//	the switch opens light-1 asking level ≤ 20            g4 (attenuation of g3)
//	the switch: setLevel 25 on g4 (deny)
//	op revokes g1: g1, g3, g4 end                         "revoke"
//	the switch: setLevel 10 on g3 (deny: ended)
//	the occupancy sensor opens light-2 and the thermostat g5, g6
//	the occupancy sensor releases g6                       "release"
//	the badges report p-0001 out: g2 ends                  "leave"
//	the badges report p-0002 in; p-0002 opens light-2      g7, sets 20 %
//	op forgets p-0002: g7 ends, their bodies are erased    "forget"
//	op sets a policy the table refuses, then one without
//	lights for devices: g5 ends                           "policy"
//	(the kernel restarts)                                  "restart"
//	the occupancy sensor opens the thermostat             g8, sets 21 °C
//
// The clock moves a minute between steps. It returns the seqs of the
// entries named in quotes above, and "end" (the last).
func Story(ctx context.Context, dir string) (map[string]uint64, error) {
	top, err := sim.Generate(sim.GenConfig{Floors: 1, Rooms: 1, DevicesPerRoom: 10, People: 2, Seed: StorySeed})
	if err != nil {
		return nil, err
	}
	k, err := StartKernel(ctx, Config{Dir: dir, Topology: top, Seed: StorySeed})
	if err != nil {
		return nil, err
	}
	marks := map[string]uint64{}
	clock := k.Clock
	err = story(ctx, k, marks)
	if cerr := k.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	marks["restart"] = uint64(k.Led.Size()) // the next kernel's start entry
	clock.Set(clock.Now().Add(time.Hour))
	k, err = StartKernel(ctx, Config{Dir: dir, Topology: top, Seed: StorySeed, Clock: clock})
	if err != nil {
		return nil, err
	}
	err = story2(ctx, k)
	if cerr := k.Close(); err == nil {
		err = cerr
	}
	marks["end"] = uint64(k.Led.Size()) - 1
	return marks, err
}

const room = "campus/hq/f1/r101"

func story(ctx context.Context, k *Kernel, marks map[string]uint64) (err error) {
	step := func() { k.Clock.Set(k.Clock.Now().Add(time.Minute)) }
	var held []capnp.Client
	defer func() {
		for _, c := range held {
			c.Release()
		}
	}()
	open := func(s *Session, path string, ask *Ask) (capnp.Client, string, error) {
		cs, ids, err := s.Open(path, ask)
		if err != nil {
			return capnp.Client{}, "", fmt.Errorf("%s opens %s: %w", s.ID, path, err)
		}
		if len(cs) != 1 {
			return capnp.Client{}, "", fmt.Errorf("%s opens %s: %d capabilities", s.ID, path, len(cs))
		}
		held = append(held, cs[0])
		return cs[0], ids[0], nil
	}
	denied := func(err error, what string) error {
		if err == nil {
			return fmt.Errorf("%s was admitted", what)
		}
		if !strings.Contains(err.Error(), "permission") && !strings.Contains(err.Error(), "revoked") {
			return fmt.Errorf("%s: %w, want a refusal", what, err)
		}
		return nil
	}
	op, err := k.Login(ctx, sim.OperatorID)
	if err != nil {
		return err
	}
	badgeSession, err := k.Login(ctx, sim.BadgesID)
	if err != nil {
		return err
	}
	badges, err := badgeSession.Operator()
	if err != nil {
		return err
	}
	defer badges.Release()
	_, g1, err := open(op, room+"/light-1", nil)
	if err != nil {
		return err
	}
	step()
	if err := Presence(ctx, badges, sim.PersonID(1), room, true); err != nil {
		return fmt.Errorf("p-0001 in: %w", err)
	}
	ada, err := k.Login(ctx, sim.PersonID(1))
	if err != nil {
		return err
	}
	adaLight, _, err := open(ada, room+"/light-1", nil)
	if err != nil {
		return err
	}
	if err := SetLevel(ctx, adaLight, 50); err != nil {
		return err
	}
	if err := denied(SetLevel(ctx, adaLight, 90), "p-0001's setLevel 90"); err != nil {
		return err
	}
	marks["denied"] = uint64(k.Led.Size()) - 1
	step()
	g3, err := op.Delegate(g1, room+"/switch", Ask{Methods: []string{"setLevel"}, MaxLevel: 40})
	if err != nil {
		return fmt.Errorf("op delegates %s: %w", g1, err)
	}
	sw, err := k.Login(ctx, room+"/switch")
	if err != nil {
		return err
	}
	swLight, got, err := open(sw, room+"/light-1", nil)
	if err != nil {
		return err
	}
	if got != g3 {
		return fmt.Errorf("the switch opened %s, want %s", got, g3)
	}
	if err := SetLevel(ctx, swLight, 30); err != nil {
		return err
	}
	if err := denied(SetLevel(ctx, swLight, 60), "the switch's setLevel 60"); err != nil {
		return err
	}
	if _, err := sw.Delegate(g3, sim.PersonID(2), Ask{}); err == nil {
		return fmt.Errorf("the switch delegated %s to p-0002, who is not in the room", g3)
	}
	step()
	dim, _, err := open(sw, room+"/light-1", &Ask{MaxLevel: 20})
	if err != nil {
		return err
	}
	if err := denied(SetLevel(ctx, dim, 25), "setLevel 25 on the attenuation"); err != nil {
		return err
	}
	step()
	if err := op.Revoke(g1); err != nil {
		return err
	}
	marks["revoke"] = uint64(k.Led.Size()) - 1
	if err := denied(SetLevel(ctx, swLight, 10), "setLevel 10 on a revoked grant"); err != nil {
		return err
	}
	step()
	occ, err := k.Login(ctx, room+"/occupancy")
	if err != nil {
		return err
	}
	if _, _, err := open(occ, room+"/light-2", nil); err != nil {
		return err
	}
	_, g6, err := open(occ, room+"/thermostat", nil)
	if err != nil {
		return err
	}
	if err := occ.ReleaseGrant(g6); err != nil {
		return err
	}
	marks["release"] = uint64(k.Led.Size()) - 1
	step()
	if err := Presence(ctx, badges, sim.PersonID(1), room, false); err != nil {
		return fmt.Errorf("p-0001 out: %w", err)
	}
	marks["leave"] = uint64(k.Led.Size()) - 2 // the presence entry; its revoke follows
	step()
	opCap, err := op.Operator()
	if err != nil {
		return err
	}
	defer opCap.Release()
	if err := Presence(ctx, badges, sim.PersonID(2), room, true); err != nil {
		return fmt.Errorf("p-0002 in: %w", err)
	}
	bob, err := k.Login(ctx, sim.PersonID(2))
	if err != nil {
		return err
	}
	bobLight, _, err := open(bob, room+"/light-2", nil)
	if err != nil {
		return err
	}
	if err := SetLevel(ctx, bobLight, 20); err != nil {
		return err
	}
	n := uint64(k.Led.Size())
	if err := Forget(ctx, opCap, sim.PersonID(2)); err != nil {
		return fmt.Errorf("forget p-0002: %w", err)
	}
	marks["forget"] = n + 1 // after p-0002's logout
	step()
	const rule = "permit (principal is Device, action in Action::\"Light\", resource is Device)\nwhen { principal.place == resource.place };"
	if !strings.Contains(sim.Policy, rule) {
		return fmt.Errorf("sim.Policy has no rule for device programs' lights to drop")
	}
	// A policy the table refuses (a caveat on a forbid) changes nothing;
	// then one without lights for devices.
	bad := strings.Replace(sim.Policy, rule, strings.Replace(rule, "permit", "forbid", 1), 1)
	if err := SetPolicy(ctx, opCap, bad); err == nil {
		return fmt.Errorf("a policy with a caveat on a forbid was accepted")
	}
	noLights := strings.Replace(sim.Policy, rule, strings.Replace(rule, "principal.place == resource.place", "false", 1), 1)
	if err := SetPolicy(ctx, opCap, noLights); err != nil {
		return fmt.Errorf("set policy: %w", err)
	}
	marks["policy"] = uint64(k.Led.Size()) - 2 // the policy entry; its revoke follows
	for _, s := range []*Session{occ, sw, ada, badgeSession, op} {
		if err := s.Logout(); err != nil {
			return err
		}
	}
	return nil
}

func story2(ctx context.Context, k *Kernel) error {
	occ, err := k.Login(ctx, room+"/occupancy")
	if err != nil {
		return err
	}
	cs, _, err := occ.Open(room+"/thermostat", nil)
	if err != nil || len(cs) != 1 {
		return fmt.Errorf("open the thermostat after the restart: %d, %w", len(cs), err)
	}
	defer cs[0].Release()
	f, rel := schema.Thermostat(cs[0]).SetSetpoint(ctx, func(p schema.Thermostat_setSetpoint_Params) error {
		p.SetCelsius(21)
		return nil
	})
	_, err = f.Struct()
	rel()
	if err != nil {
		return err
	}
	return occ.Logout()
}
