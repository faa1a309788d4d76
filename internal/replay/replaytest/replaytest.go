// Package replaytest builds ledgers for replay's tests and benchmarks with
// a real kernel: package drivers on the simulator's hardware, a Badger
// ledger in a data directory, the simulator's logical clock shared by the
// kernel and the drivers (the setting in which every driver result
// replays exactly), and programs that are real Cap'n Proto clients over
// in-memory pipes.
//
// A test or benchmark:
//
//  1. Start a Kernel on a data directory (a ledger already there is
//     continued: the kernel's start entry ends the earlier run's grants).
//  2. Log principals in (Login) and drive them through Session's helpers,
//     moving Clock between steps when no call is in flight.
//  3. Close it; the ledger is then ready to open read-only and replay.
//
// Bench builds a large ledger this way in one call (for BenchmarkReplay
// and `osmose bench replay`), Story a small one with every kind of
// decision replay re-derives, and Forge a re-signed copy of a ledger with
// entries changed, which replay must catch.
package replaytest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/rpc"
	"capnproto.org/go/capnp/v3/rpc/transport"

	"github.com/osmose-os/osmose/caps"
	"github.com/osmose-os/osmose/drivers"
	"github.com/osmose-os/osmose/internal/topology"
	"github.com/osmose-os/osmose/kernel"
	"github.com/osmose-os/osmose/kernel/kerneltest"
	"github.com/osmose-os/osmose/ledger"
	"github.com/osmose-os/osmose/schema"
	"github.com/osmose-os/osmose/sim"
)

// Start is when a Kernel's clock starts by default: a Monday, 08:00 UTC.
var Start = time.Date(2025, 3, 3, 8, 0, 0, 0, time.UTC)

// Config configures a Kernel.
type Config struct {
	// Dir is the data directory: the ledger is Dir/ledger, the kernel's
	// key Dir/kernel.key. Required.
	Dir string
	// Topology is the building; its keys must derive from Seed (sim.Key).
	// Required.
	Topology *topology.Topology
	Seed     int64
	// Policy is the Cedar policy; empty means sim.Policy.
	Policy string
	// Clock is the kernel's and the drivers' clock; nil starts one at
	// Start. Pass the previous run's to continue its time.
	Clock *sim.Clock
}

// Kernel is a running kernel and its ledger.
type Kernel struct {
	Clock *sim.Clock
	World *sim.World
	K     *kernel.Kernel
	Led   *ledger.Ledger
	cfg   Config
	store *ledger.BadgerStore
	ctx   context.Context
	stop  context.CancelFunc
	wg    sync.WaitGroup
	conns []*rpc.Conn
}

// StartKernel starts a kernel on cfg.Dir.
func StartKernel(ctx context.Context, cfg Config) (*Kernel, error) {
	if cfg.Dir == "" || cfg.Topology == nil {
		return nil, errors.New("replaytest: Config.Dir and Config.Topology are required")
	}
	if cfg.Policy == "" {
		cfg.Policy = sim.Policy
	}
	if cfg.Clock == nil {
		cfg.Clock = sim.NewClock(Start)
	}
	world, err := sim.NewWorld(sim.WorldConfig{Topology: cfg.Topology, Seed: cfg.Seed, Start: cfg.Clock.Now()})
	if err != nil {
		return nil, err
	}
	devs := make([]drivers.Device, len(cfg.Topology.Devices))
	for i, d := range cfg.Topology.Devices {
		devs[i] = drivers.Device{Path: d.Path, Class: d.Class}
	}
	set, err := drivers.NewSet(devs, func(d drivers.Device) any { return world.Hardware(d.Path) }, cfg.Clock.Now)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	key := sim.Key(cfg.Seed, "kernel")
	if err := os.WriteFile(filepath.Join(cfg.Dir, "kernel.key"), key.Seed(), 0o600); err != nil {
		return nil, err
	}
	store, err := ledger.OpenBadger(filepath.Join(cfg.Dir, "ledger"), ledger.BadgerOptions{})
	if err != nil {
		return nil, err
	}
	led, err := ledger.Open(ctx, store, ledger.Options{Key: key, Origin: "osmose-replaytest", GenesisTime: cfg.Clock.Now().UnixNano()})
	if err != nil {
		store.Close()
		return nil, err
	}
	k, err := kernel.New(kernel.Config{
		Ledger: led, Topology: cfg.Topology, Policy: []caps.PolicyFile{{Name: "policy.cedar", Text: cfg.Policy}},
		Drivers: set.Clients(), Now: cfg.Clock.Now, Rand: rand.NewChaCha8([32]byte{byte(cfg.Seed), 'n'}),
	})
	if err != nil {
		led.Close()
		store.Close()
		return nil, err
	}
	kctx, stop := context.WithCancel(context.Background())
	return &Kernel{Clock: cfg.Clock, World: world, K: k, Led: led, cfg: cfg, store: store, ctx: kctx, stop: stop}, nil
}

// Close ends every connection, then the kernel, the ledger and its store.
func (k *Kernel) Close() error {
	for _, c := range k.conns {
		c.Close()
	}
	k.stop()
	k.wg.Wait()
	err := k.K.Close()
	if e := k.Led.Close(); err == nil {
		err = e
	}
	if e := k.store.Close(); err == nil {
		err = e
	}
	return err
}

// Session is a principal logged in on its own connection.
type Session struct {
	schema.Session
	ID  string
	ctx context.Context
	k   *Kernel
}

// Login connects a new client over a pipe and logs in as id with its key
// derived from the seed. Release the session to log out.
func (k *Kernel) Login(ctx context.Context, id string) (*Session, error) {
	cs, ks := net.Pipe()
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		k.K.ServeConn(k.ctx, ks)
	}()
	conn := rpc.NewConn(transport.NewStream(cs), nil)
	k.conns = append(k.conns, conn)
	gw := schema.Gateway(conn.Bootstrap(ctx))
	defer gw.Release()
	s, err := kerneltest.Login(ctx, gw, k.K.ID(), id, sim.Key(k.cfg.Seed, id))
	if err != nil {
		return nil, fmt.Errorf("log in as %s: %w", id, err)
	}
	return &Session{Session: s, ID: id, ctx: ctx, k: k}, nil
}

// Logout releases the session and waits for its logout entry, so that
// what follows is in a known order.
func (s *Session) Logout() error {
	n := s.k.Led.Size()
	s.Release()
	ctx, cancel := context.WithTimeout(s.ctx, time.Minute) // a guard, never a pace
	defer cancel()
	_, err := s.k.Led.WaitSize(ctx, n)
	return err
}

// Ask is what an open, grant or delegate asks for beyond the policy's
// defaults: methods, a level range, uses, a place.
type Ask struct {
	Methods  []string
	MaxLevel float64 // a range level=0..MaxLevel when > 0
	Uses     uint64
}

func (a *Ask) fill(c schema.Caveats) error {
	ml, err := c.NewMethods(int32(len(a.Methods)))
	if err != nil {
		return err
	}
	for i, m := range a.Methods {
		if err := ml.Set(i, m); err != nil {
			return err
		}
	}
	if a.MaxLevel > 0 {
		rl, err := c.NewRanges(1)
		if err != nil {
			return err
		}
		rl.At(0).SetField("level")
		rl.At(0).SetMax(a.MaxLevel)
	}
	c.SetMaxUses(a.Uses)
	return nil
}

// Open opens the devices at path of the given classes (all when none),
// asking for ask when not nil. It returns the capabilities, which the
// caller releases, and their grant ids.
func (s *Session) Open(path string, ask *Ask, classes ...schema.DeviceClass) ([]capnp.Client, []string, error) {
	if ask == nil {
		return kerneltest.Open(s.ctx, s.Session, path, classes...)
	}
	f, rel := s.Session.Open(s.ctx, func(p schema.Session_open_Params) error {
		if err := p.SetPath(path); err != nil {
			return err
		}
		l, err := p.NewClasses(int32(len(classes)))
		if err != nil {
			return err
		}
		for i, c := range classes {
			l.Set(i, c)
		}
		c, err := p.NewCaveats()
		if err != nil {
			return err
		}
		return ask.fill(c)
	})
	defer rel()
	r, err := f.Struct()
	if err != nil {
		return nil, nil, err
	}
	hl, err := r.Caps()
	if err != nil {
		return nil, nil, err
	}
	cs := make([]capnp.Client, hl.Len())
	ids := make([]string, hl.Len())
	for i := range cs {
		cs[i] = hl.At(i).Cap().AddRef()
		g, err := hl.At(i).Grant()
		if err != nil {
			return nil, nil, err
		}
		ids[i], _ = g.Id()
	}
	return cs, ids, nil
}

// Delegate gives grant to principal to, asking for ask.
func (s *Session) Delegate(grant, to string, ask Ask) (string, error) {
	f, rel := s.Session.Delegate(s.ctx, func(p schema.Session_delegate_Params) error {
		if err := p.SetGrant(grant); err != nil {
			return err
		}
		if err := p.SetTo(to); err != nil {
			return err
		}
		c, err := p.NewCaveats()
		if err != nil {
			return err
		}
		return ask.fill(c)
	})
	defer rel()
	r, err := f.Struct()
	if err != nil {
		return "", err
	}
	g, err := r.Grant()
	if err != nil {
		return "", err
	}
	return g.Id()
}

// Revoke revokes a grant.
func (s *Session) Revoke(grant string) error {
	f, rel := s.Session.Revoke(s.ctx, func(p schema.Session_revoke_Params) error { return p.SetGrant(grant) })
	defer rel()
	_, err := f.Struct()
	return err
}

// ReleaseGrant gives a grant up.
func (s *Session) ReleaseGrant(grant string) error {
	f, rel := s.Session.ReleaseGrant(s.ctx, func(p schema.Session_releaseGrant_Params) error { return p.SetGrant(grant) })
	defer rel()
	_, err := f.Struct()
	return err
}

// Operator returns the session's operator capability; the caller
// releases it.
func (s *Session) Operator() (schema.Operator, error) {
	f, rel := s.Session.Operator(s.ctx, nil)
	defer rel()
	r, err := f.Struct()
	if err != nil {
		return schema.Operator{}, err
	}
	return r.Operator().AddRef(), nil
}

// Presence reports, as an operator, that person entered or left place.
func Presence(ctx context.Context, op schema.Operator, person, place string, present bool) error {
	f, rel := op.Presence(ctx, func(p schema.Operator_presence_Params) error {
		if err := p.SetPerson(person); err != nil {
			return err
		}
		p.SetPresent(present)
		return p.SetPlace(place)
	})
	defer rel()
	_, err := f.Struct()
	return err
}

// SetPolicy replaces the policy, as an operator.
func SetPolicy(ctx context.Context, op schema.Operator, text string) error {
	f, rel := op.SetPolicy(ctx, func(p schema.Operator_setPolicy_Params) error {
		fl, err := p.NewFiles(1)
		if err != nil {
			return err
		}
		if err := fl.At(0).SetName("policy.cedar"); err != nil {
			return err
		}
		return fl.At(0).SetText(text)
	})
	defer rel()
	_, err := f.Struct()
	return err
}

// SetLevel calls Light.setLevel.
func SetLevel(ctx context.Context, l capnp.Client, level uint8) error {
	f, rel := schema.Light(l).SetLevel(ctx, func(p schema.Light_setLevel_Params) error {
		p.SetLevel(level)
		return nil
	})
	defer rel()
	_, err := f.Struct()
	return err
}

// LightState calls Light.state.
func LightState(ctx context.Context, l capnp.Client) error {
	f, rel := schema.Light(l).State(ctx, nil)
	defer rel()
	_, err := f.Struct()
	return err
}

// Forget erases a person while the kernel runs, as an operator.
func Forget(ctx context.Context, op schema.Operator, subject string) error {
	f, rel := op.Forget(ctx, func(p schema.Operator_forget_Params) error { return p.SetSubject(subject) })
	defer rel()
	_, err := f.Struct()
	return err
}
