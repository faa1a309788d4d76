package main

// The fixture of the caps and trace scripts: a ledger written by a real
// kernel, driven over Cap'n Proto by real clients.

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"time"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/rpc"
	"capnproto.org/go/capnp/v3/rpc/transport"
	"github.com/rogpeppe/go-internal/testscript"

	"github.com/osmose-os/osmose/caps"
	"github.com/osmose-os/osmose/kernel"
	"github.com/osmose-os/osmose/kernel/kerneltest"
	"github.com/osmose-os/osmose/ledger"
	"github.com/osmose-os/osmose/schema"
)

// capsSeed is the key seed of the fixture's building.
const capsSeed = "caps-script"

// capsWorld is a kernel on a Badger ledger, served over in-memory pipes.
type capsWorld struct {
	ctx     context.Context
	k       *kernel.Kernel
	led     *ledger.Ledger
	store   *ledger.BadgerStore
	clients []*kerneltest.Client
	cancel  context.CancelFunc
	served  sync.WaitGroup // the ServeConn goroutines
}

func newCapsWorld(dir string) (*capsWorld, error) {
	store, err := ledger.OpenBadger(filepath.Join(dir, "ledger"), ledger.BadgerOptions{})
	if err != nil {
		return nil, err
	}
	clock := kerneltest.NewClock(time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC))
	led, err := ledger.Open(context.Background(), store, ledger.Options{
		Key: kerneltest.Key(capsSeed, "kernel"), Origin: "osmose/test", GenesisTime: clock.Now().UnixNano(),
	})
	if err != nil {
		store.Close()
		return nil, err
	}
	top := kerneltest.Building(capsSeed, 2)
	fakes := kerneltest.NewFakes(top, clock.Now)
	k, err := kernel.New(kernel.Config{
		Ledger: led, Topology: top, Now: clock.Now, Rand: bytes.NewReader(bytes.Repeat([]byte{7}, 1<<20)),
		Policy:  []caps.PolicyFile{{Name: "test.cedar", Text: kerneltest.Policy}},
		Drivers: fakes.Drivers(),
	})
	if err != nil {
		led.Close()
		store.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &capsWorld{ctx: ctx, k: k, led: led, store: store, cancel: cancel}, nil
}

// login connects a client over a pipe and logs in as id. The session is
// the caller's to release.
func (w *capsWorld) login(id string) (schema.Session, error) {
	cs, ks := net.Pipe()
	w.served.Add(1)
	go func() {
		defer w.served.Done()
		w.k.ServeConn(w.ctx, ks)
	}()
	conn := rpc.NewConn(transport.NewStream(cs), nil)
	c := &kerneltest.Client{Conn: conn, Gateway: schema.Gateway(conn.Bootstrap(w.ctx))}
	w.clients = append(w.clients, c)
	return kerneltest.Login(w.ctx, c.Gateway, w.k.ID(), id, kerneltest.Key(capsSeed, id))
}

// end releases a session and waits for its logout entry, so that every
// run writes the same ledger.
func (w *capsWorld) end(s schema.Session) error {
	size := w.led.Size()
	s.Release()
	ctx, cancel := context.WithTimeout(w.ctx, time.Minute) // a guard, never a pace
	defer cancel()
	if _, err := w.led.WaitSize(ctx, size); err != nil {
		return fmt.Errorf("wait for the session's end on the ledger: %w", err)
	}
	return nil
}

func (w *capsWorld) close() error {
	for _, c := range w.clients {
		c.Close()
	}
	w.cancel()
	// Every connection is gone before Close, which then has none to
	// tear down.
	w.served.Wait()
	err := w.k.Close()
	if e := w.led.Close(); err == nil {
		err = e
	}
	if e := w.store.Close(); err == nil {
		err = e
	}
	return err
}

func openOne(ctx context.Context, s schema.Session, path string) (capnp.Client, string, error) {
	cs, ids, err := kerneltest.Open(ctx, s, path)
	if err != nil {
		return capnp.Client{}, "", fmt.Errorf("open %s: %w", path, err)
	}
	if len(cs) != 1 {
		for _, c := range cs {
			c.Release()
		}
		return capnp.Client{}, "", fmt.Errorf("open %s: %d capabilities", path, len(cs))
	}
	return cs[0], ids[0], nil
}

func delegate(ctx context.Context, s schema.Session, grant, to string, methods []string, maxLevel float64) (string, error) {
	f, rel := s.Delegate(ctx, func(p schema.Session_delegate_Params) error {
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
		ml, err := c.NewMethods(int32(len(methods)))
		if err != nil {
			return err
		}
		for i, m := range methods {
			ml.Set(i, m)
		}
		if maxLevel > 0 {
			rl, err := c.NewRanges(1)
			if err != nil {
				return err
			}
			rl.At(0).SetField("level")
			rl.At(0).SetMax(maxLevel)
		}
		return nil
	})
	defer rel()
	r, err := f.Struct()
	if err != nil {
		return "", fmt.Errorf("delegate %s to %s: %w", grant, to, err)
	}
	g, err := r.Grant()
	if err != nil {
		return "", err
	}
	return g.Id()
}

func revoke(ctx context.Context, s schema.Session, grant string) error {
	f, rel := s.Revoke(ctx, func(p schema.Session_revoke_Params) error { return p.SetGrant(grant) })
	defer rel()
	_, err := f.Struct()
	return err
}

func release(ctx context.Context, s schema.Session, grant string) error {
	f, rel := s.ReleaseGrant(ctx, func(p schema.Session_releaseGrant_Params) error { return p.SetGrant(grant) })
	defer rel()
	_, err := f.Struct()
	return err
}

func lightLevel(ctx context.Context, l schema.Light, level uint8) error {
	f, rel := l.SetLevel(ctx, func(p schema.Light_setLevel_Params) error {
		p.SetLevel(level)
		return nil
	})
	defer rel()
	_, err := f.Struct()
	return err
}

func lightState(ctx context.Context, l schema.Light) error {
	f, rel := l.State(ctx, nil)
	defer rel()
	_, err := f.Struct()
	return err
}

// makeCapsLedger runs a kernel into the data directory dir and drives it
// through this story (grant ids as the kernel assigns them on a new
// ledger):
//
//	op opens r1/light-1                                      g1 (root, the policy)
//	op delegates g1 to scenes: setLevel and state, level ≤60  g2
//	scenes delegates g2 to r1/switch                         g3
//	r1/switch opens r1/light-2                               g4 (root)
//	r1/switch opens r1/lock                                  g5 (root), then releases it
//	scenes: setLevel 40 (admit), 70 (deny: range)
//	r1/switch on g3: setLevel 30, state
//	op revokes g2: g2 and g3 end
//	r1/switch on g3: setLevel 20 (deny: revoked)
//	r1/switch on g4: setLevel 10
//
// It returns the seqs of note: "revoke", "release" and "end" (the last
// entry).
func makeCapsLedger(dir string) (map[string]uint64, error) {
	w, err := newCapsWorld(dir)
	if err != nil {
		return nil, err
	}
	seqs := map[string]uint64{}
	err = w.story(seqs)
	if e := w.close(); err == nil {
		err = e
	}
	// Closing a connection may add a "disconnect" entry.
	seqs["end"] = uint64(w.led.Size() - 1)
	return seqs, err
}

func (w *capsWorld) story(seqs map[string]uint64) error {
	ctx := w.ctx
	const room = "cam/pem/f1/r1"
	op, err := w.login("op")
	if err != nil {
		return err
	}
	opLight, g1, err := openOne(ctx, op, room+"/light-1")
	if err != nil {
		return err
	}
	defer opLight.Release()
	g2, err := delegate(ctx, op, g1, "scenes", []string{"setLevel", "state"}, 60)
	if err != nil {
		return err
	}
	scenes, err := w.login("scenes")
	if err != nil {
		return err
	}
	g3, err := delegate(ctx, scenes, g2, room+"/switch", nil, 0)
	if err != nil {
		return err
	}
	sw, err := w.login(room + "/switch")
	if err != nil {
		return err
	}
	l2, _, err := openOne(ctx, sw, room+"/light-2")
	if err != nil {
		return err
	}
	defer l2.Release()
	lock, g5, err := openOne(ctx, sw, room+"/lock")
	if err != nil {
		return err
	}
	lock.Release()
	if err := release(ctx, sw, g5); err != nil {
		return err
	}
	seqs["release"] = uint64(w.led.Size() - 1)

	sl, _, err := openOne(ctx, scenes, room+"/light-1")
	if err != nil {
		return err
	}
	defer sl.Release()
	if err := lightLevel(ctx, schema.Light(sl), 40); err != nil {
		return err
	}
	if err := lightLevel(ctx, schema.Light(sl), 70); err == nil {
		return fmt.Errorf("setLevel 70 on %s was admitted", g2)
	}
	swl, got, err := openOne(ctx, sw, room+"/light-1")
	if err != nil {
		return err
	}
	defer swl.Release()
	if got != g3 {
		return fmt.Errorf("switch opened %s, want %s", got, g3)
	}
	if err := lightLevel(ctx, schema.Light(swl), 30); err != nil {
		return err
	}
	if err := lightState(ctx, schema.Light(swl)); err != nil {
		return err
	}
	if err := revoke(ctx, op, g2); err != nil {
		return err
	}
	seqs["revoke"] = uint64(w.led.Size() - 1)
	if err := lightLevel(ctx, schema.Light(swl), 20); err == nil {
		return fmt.Errorf("setLevel 20 on revoked %s was admitted", g3)
	}
	if err := lightLevel(ctx, schema.Light(l2), 10); err != nil {
		return err
	}
	for _, s := range []schema.Session{sw, scenes, op} {
		if err := w.end(s); err != nil {
			return err
		}
	}
	return nil
}

// mkcaps DIR: a data directory DIR whose ledger a real kernel wrote (see
// makeCapsLedger); sets $REVOKE, $RELEASE and $END to the seqs of the
// revocation of g2, the release of g5 and the last entry, and
// $BEFORE_REVOKE and $BEFORE_RELEASE to the seqs just before.
func cmdMkcaps(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: mkcaps DIR")
	}
	seqs, err := makeCapsLedger(ts.MkAbs(args[0]))
	ts.Check(err)
	ts.Setenv("REVOKE", fmt.Sprint(seqs["revoke"]))
	ts.Setenv("RELEASE", fmt.Sprint(seqs["release"]))
	ts.Setenv("END", fmt.Sprint(seqs["end"]))
	ts.Setenv("BEFORE_REVOKE", fmt.Sprint(seqs["revoke"]-1))
	ts.Setenv("BEFORE_RELEASE", fmt.Sprint(seqs["release"]-1))
}
