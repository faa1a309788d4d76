package sim

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"net"
	"time"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/rpc"
	"capnproto.org/go/capnp/v3/rpc/transport"

	"github.com/osmose-os/osmose/schema"
)

// conn is one program's Cap'n Proto connection to the kernel and its
// session.
type conn struct {
	nc      net.Conn
	rc      *rpc.Conn
	gw      schema.Gateway
	session schema.Session
	id      string
	// The login's nonce and signature, which a malicious program replays.
	nonce, sig []byte
}

// dial connects over nc and logs in as id with key, refusing a kernel
// whose id is not kernelID (empty: accept the id the kernel gives).
func dial(ctx context.Context, nc net.Conn, kernelID, id string, key ed25519.PrivateKey) (*conn, error) {
	rc := rpc.NewConn(transport.NewStream(nc), nil)
	c := &conn{nc: nc, rc: rc, gw: schema.Gateway(rc.Bootstrap(ctx)), id: id}
	s, nonce, sig, err := login(ctx, c.gw, kernelID, id, key)
	if err != nil {
		c.gw.Release()
		c.rc.Close()
		return nil, err
	}
	c.session, c.nonce, c.sig = s, nonce, sig
	return c, nil
}

// Ending is how one connection ends, for Config.Settle.
type Ending struct {
	// Quit, if set, ends the session cleanly before the connection is
	// closed: the program releases its session and every capability, and
	// the kernel records one "logout" entry.
	Quit func()
	// Close closes the connection. When Quit is nil the kernel records one
	// entry for it: a "disconnect" (a crash, a dropped connection, a
	// hostile peer's bytes).
	Close func()
	// Subs is how many subscriptions to sensors the connection held: the
	// kernel's drivers drop them after it ends.
	Subs int
	// Called is when the kernel last called the program (a listener's
	// delivery), by Config.Wall; zero if never. The kernel's rpc layer
	// (go-capnp) sends its Finish for such a call 250 ms after the
	// answer, and records an error of its own if the connection ends
	// just then; Settle waits until that is past.
	Called time.Time
}

// end ends the connection through settle (see Config.Settle), or, without
// one, by doing e's steps at once.
func end(ctx context.Context, settle func(context.Context, Ending) error, e Ending) error {
	if settle != nil {
		return settle(ctx, e)
	}
	if e.Quit != nil {
		e.Quit()
	}
	e.Close()
	return nil
}

// quit releases the session and the bootstrap capability: the kernel ends
// the session ("logout") once the release reaches it.
func (c *conn) quit() {
	c.session.Release()
	c.gw.Release()
}

// hangUp closes the connection without a word to the kernel, as a device
// that loses power or a network that drops it: the kernel sees the byte
// stream end. Then the local side is shut down.
func (c *conn) hangUp() {
	c.nc.Close()
	c.rc.Close()
	c.session.Release()
	c.gw.Release()
}

// login does the challenge–response of schema/doc.go. The caller releases
// the session. It also returns the nonce and the signature it used.
func login(ctx context.Context, gw schema.Gateway, kernelID, id string, key ed25519.PrivateKey) (schema.Session, []byte, []byte, error) {
	cf, rel := gw.Challenge(ctx, func(p schema.Gateway_challenge_Params) error { return p.SetPrincipal(id) })
	defer rel()
	cr, err := cf.Struct()
	if err != nil {
		return schema.Session{}, nil, nil, fmt.Errorf("challenge: %w", err)
	}
	kid, err := cr.KernelId()
	if err != nil {
		return schema.Session{}, nil, nil, fmt.Errorf("challenge: %w", err)
	}
	if kernelID != "" && kid != kernelID {
		return schema.Session{}, nil, nil, fmt.Errorf("challenge: kernel id %q, want %q", kid, kernelID)
	}
	nonce, err := cr.Nonce()
	nonce = bytes.Clone(nonce) // kept after the answer is released
	if err != nil {
		return schema.Session{}, nil, nil, fmt.Errorf("challenge: %w", err)
	}
	sig := ed25519.Sign(key, schema.LoginMessage(kid, id, nonce))
	lf, rel2 := gw.Login(ctx, func(p schema.Gateway_login_Params) error {
		if err := p.SetPrincipal(id); err != nil {
			return err
		}
		if err := p.SetNonce(nonce); err != nil {
			return err
		}
		return p.SetSignature(sig)
	})
	defer rel2()
	lr, err := lf.Struct()
	if err != nil {
		return schema.Session{}, nil, nil, fmt.Errorf("login: %w", err)
	}
	return lr.Session().AddRef(), nonce, sig, nil
}

// replayLogin presents the nonce and signature of c's own login again,
// as an attacker who captured them would: the kernel refuses (a nonce is
// single-use) and records the attempt.
func (c *conn) replayLogin(ctx context.Context) error {
	f, rel := c.gw.Login(ctx, func(p schema.Gateway_login_Params) error {
		if err := p.SetPrincipal(c.id); err != nil {
			return err
		}
		if err := p.SetNonce(c.nonce); err != nil {
			return err
		}
		return p.SetSignature(c.sig)
	})
	defer rel()
	_, err := f.Struct()
	return err
}

// held is one capability Session.open returned.
type held struct {
	path  string
	class schema.DeviceClass
	grant string
	cap   capnp.Client
}

// open opens the devices at path (a place or a device) of the given
// classes; the caller releases each capability.
func (c *conn) open(ctx context.Context, path string, classes classOf, want ...schema.DeviceClass) ([]held, error) {
	f, rel := c.session.Open(ctx, func(p schema.Session_open_Params) error {
		if err := p.SetPath(path); err != nil {
			return err
		}
		l, err := p.NewClasses(int32(len(want)))
		if err != nil {
			return err
		}
		for i, c := range want {
			l.Set(i, c)
		}
		return nil
	})
	defer rel()
	r, err := f.Struct()
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	hl, err := r.Caps()
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	out := make([]held, 0, hl.Len())
	for i := 0; i < hl.Len(); i++ {
		g, err := hl.At(i).Grant()
		if err != nil {
			return nil, err
		}
		target, err := g.Target()
		if err != nil {
			return nil, err
		}
		id, err := g.Id()
		if err != nil {
			return nil, err
		}
		out = append(out, held{path: target, class: classes(target), grant: id, cap: hl.At(i).Cap().AddRef()})
	}
	return out, nil
}

// classOf returns a device's class by path.
type classOf func(path string) schema.DeviceClass

// do waits for a call's answer and releases it.
func do(f interface{ Ptr() (capnp.Ptr, error) }, rel capnp.ReleaseFunc) error {
	defer rel()
	_, err := f.Ptr()
	return err
}
