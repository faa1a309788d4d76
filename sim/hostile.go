package sim

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"time"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"

	"github.com/osmose-os/osmose/internal/topology"
	"github.com/osmose-os/osmose/schema"
)

// The malicious device program. It runs its device's ordinary program
// (a sensor's: subscribe to its own readings) and, at the steps the fault
// plan gives it, attacks, in turn:
//
//	trespass   opens a device of another room: "permission", a refused
//	           grant on the ledger
//	forge      calls a Light method on its sensor's gate ("unimplemented",
//	           a refused call on the ledger) and asks for the operator
//	           interface ("permission")
//	replay     opens a light of its room, calls it, gives the grant up
//	           (Session.release), then calls through the old gate again
//	           ("revoked"); and presents its own login's nonce and
//	           signature again ("permission": a nonce is single-use)
//	flood      sends FloodCalls reads on its sensor at once: the first
//	           MaxInFlight are admitted, the rest refused "overloaded"
//	           (not recorded). With Config.Hardware the sensor's answers
//	           are held until the last call is refused and then let go one
//	           at a time, so the same calls are admitted, in the same
//	           order, in every run
//	garbage    opens a new connection and sends bytes no kernel should
//	           take, by turns: random bytes, an oversized frame, a call on
//	           a capability id it was never given, a frame that is not an
//	           rpc message; the kernel aborts the connection and records a
//	           "disconnect" naming why
type attackKind int

const (
	attackTrespass attackKind = iota
	attackForge
	attackReplay
	attackFlood
	attackGarbage
)

var attackKinds = []attackKind{attackTrespass, attackForge, attackReplay, attackFlood, attackGarbage}

// attack makes one attack of a malicious program.
func (r *runner) attack(ctx context.Context, p *program, k attackKind) {
	r.mu.Lock()
	r.rep.Faults.Attacks++
	r.mu.Unlock()
	switch k {
	case attackTrespass:
		r.trespass(ctx, p)
	case attackForge:
		r.forge(ctx, p)
	case attackReplay:
		r.replay(ctx, p)
	case attackFlood:
		r.flood(ctx, p)
	case attackGarbage:
		r.garbage(ctx, p)
	}
}

// verdict counts the kernel's answer to one call of a malicious program.
func (r *runner) verdict(who, what string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fr := &r.rep.Faults
	kind := ""
	if err != nil {
		kind = denialKind(err)
	}
	switch {
	case err == nil:
		fr.Admitted++
	case kind == "overloaded":
		fr.Overloaded++
	case kind != "":
		fr.Denied++
	default:
		r.failures++
		r.cfg.Logger.Warn(who + ": " + what + ": " + err.Error())
	}
}

func (r *runner) trespass(ctx context.Context, p *program) {
	var others []topology.Device
	for _, d := range r.cfg.Topology.Devices {
		if topology.Parent(d.Path) != p.room {
			others = append(others, d)
		}
	}
	if len(others) == 0 {
		return
	}
	d := others[r.hash(p.dev.Path, "trespass")%uint64(len(others))]
	hs, err := p.c.open(ctx, d.Path, r.classOf)
	for _, h := range hs {
		h.cap.Release()
	}
	r.verdict(p.dev.Path, "open "+d.Path, err)
}

func (r *runner) forge(ctx context.Context, p *program) {
	if own, ok := p.own(); ok {
		err := do(schema.Light(own.cap).SetLevel(ctx, func(q schema.Light_setLevel_Params) error { q.SetLevel(100); return nil }))
		r.verdict(p.dev.Path, "Light.setLevel on its sensor", err)
	}
	f, rel := p.c.session.Operator(ctx, nil)
	_, err := f.Struct()
	rel()
	r.verdict(p.dev.Path, "operator", err)
}

func (r *runner) replay(ctx context.Context, p *program) {
	light := ""
	for _, d := range r.cfg.Topology.Under(p.room) {
		if d.Class == schema.DeviceClass_light && topology.Parent(d.Path) == p.room {
			light = d.Path
			break
		}
	}
	state := func(c capnp.Client) error { return do(schema.Light(c).State(ctx, nil)) }
	if light != "" {
		hs, err := p.c.open(ctx, light, r.classOf)
		r.verdict(p.dev.Path, "open "+light, err)
		if err == nil && len(hs) == 1 {
			h := hs[0]
			r.verdict(p.dev.Path, "state", state(h.cap))
			f, rel := p.c.session.ReleaseGrant(ctx, func(q schema.Session_releaseGrant_Params) error { return q.SetGrant(h.grant) })
			_, err := f.Struct()
			rel()
			if err != nil {
				r.logf("%s: release %s: %v", p.dev.Path, h.grant, err)
			}
			r.verdict(p.dev.Path, "state after release", state(h.cap))
			h.cap.Release()
			r.mu.Lock()
			r.rep.Faults.Replays++
			r.mu.Unlock()
		}
	}
	r.verdict(p.dev.Path, "login replay", p.c.replayLogin(ctx))
	r.mu.Lock()
	r.rep.Faults.Replays++
	r.mu.Unlock()
}

func (r *runner) flood(ctx context.Context, p *program) {
	own, ok := p.own()
	if !ok || own.class == schema.DeviceClass_switch {
		return
	}
	n := r.cfg.FloodCalls
	var h *Hold
	if r.cfg.Hardware {
		h = r.cfg.World.Hold(own.path)
		defer h.Release()
	}
	s := schema.Sensor(own.cap)
	futs := make([]schema.Sensor_read_Results_Future, n)
	rels := make([]capnp.ReleaseFunc, n)
	for i := range n {
		futs[i], rels[i] = s.Read(ctx, nil)
	}
	// The gate takes its calls in order: once the last is answered (it is
	// refused, being past the bound), every call has been admitted or
	// refused, and the admitted ones wait on the held sensor.
	wait, cancel := context.WithTimeout(ctx, 30*time.Second)
	select {
	case <-futs[n-1].Done():
	case <-wait.Done():
		// Not refused: the flood was within the kernel's bound.
		if h != nil {
			h.Release()
		}
	}
	cancel()
	for i := range n {
		if h != nil {
			select {
			case <-futs[i].Done():
			default:
				h.Next() // one answer, and its return entry, at a time
			}
		}
		_, err := futs[i].Struct()
		rels[i]()
		r.verdict(p.dev.Path, "flood read", err)
	}
}

func (r *runner) garbage(ctx context.Context, p *program) {
	b := hostileBytes(p.garbage, r.hash(p.dev.Path, "garbage"))
	p.garbage++
	nc, err := r.cfg.Dial(ctx)
	if err != nil {
		r.logf("%s: dial: %v", p.dev.Path, err)
		return
	}
	err = end(ctx, r.cfg.Settle, Ending{Close: func() {
		wrote := make(chan struct{})
		go func() {
			defer close(wrote)
			nc.Write(b)
		}()
		// Read the kernel's abort until it hangs up.
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			io.Copy(io.Discard, nc)
		}()
		wait, cancel := context.WithTimeout(ctx, 10*time.Second)
		select {
		case <-drained:
		case <-wait.Done():
		}
		cancel()
		nc.Close()
		<-wrote
		<-drained
	}})
	if err != nil {
		r.logf("%s: garbage: %v", p.dev.Path, err)
	}
	r.mu.Lock()
	r.rep.Faults.Hostile++
	r.mu.Unlock()
}

// hostileBytes returns the bytes of the i-th hostile connection: random
// bytes (a segment count no frame has), an oversized frame, a call on a
// capability id never given, or a frame that is not an rpc message. Each
// makes the kernel abort the connection at once, whatever its limits.
func hostileBytes(i int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, uint64(i)))
	switch i % 4 {
	case 0:
		b := make([]byte, 4+16+rng.IntN(240))
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		copy(b, []byte{0xff, 0xff, 0xff, 0xff})
		return b
	case 1:
		b := make([]byte, 8)
		binary.LittleEndian.PutUint32(b[4:], 1<<26+uint32(rng.IntN(1<<20))) // one segment of > 512 MiB
		return b
	case 2:
		return forgedCall(1000 + uint32(rng.IntN(1000)))
	}
	return append([]byte{0, 0, 0, 0, 2, 0, 0, 0}, bytes.Repeat([]byte{0xee}, 16)...)
}

// forgedCall is one framed rpc message: a call of Light.setLevel on
// imported capability id, which the kernel never exported.
func forgedCall(id uint32) []byte {
	msg, seg := capnp.NewSingleSegmentMessage(nil)
	m, err := rpccp.NewRootMessage(seg)
	if err != nil {
		panic(err) // a fresh message: cannot fail
	}
	call, _ := m.NewCall()
	call.SetQuestionId(1)
	tgt, _ := call.NewTarget()
	tgt.SetImportedCap(id)
	call.SetInterfaceId(schema.Light_TypeID)
	call.SetMethodId(1)
	params, _ := call.NewParams()
	st, _ := capnp.NewStruct(seg, capnp.ObjectSize{DataSize: 8})
	params.SetContent(st.ToPtr())
	b, err := msg.Marshal()
	if err != nil {
		panic(err)
	}
	return b
}
