package sim

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"net"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/rpc"
	"capnproto.org/go/capnp/v3/rpc/transport"

	"github.com/osmose-os/osmose/schema"
)

// conn is one device program's Cap'n Proto connection to the kernel and
// its session.
type conn struct {
	rc      *rpc.Conn
	gw      schema.Gateway
	session schema.Session
}

// dial connects over nc and logs in as id with key, refusing a kernel
// whose id is not kernelID (empty: accept the id the kernel gives).
func dial(ctx context.Context, nc net.Conn, kernelID, id string, key ed25519.PrivateKey) (*conn, error) {
	rc := rpc.NewConn(transport.NewStream(nc), nil)
	c := &conn{rc: rc, gw: schema.Gateway(rc.Bootstrap(ctx))}
	s, err := login(ctx, c.gw, kernelID, id, key)
	if err != nil {
		c.gw.Release()
		c.rc.Close()
		return nil, err
	}
	c.session = s
	return c, nil
}

// close ends the connection, as a device that powers off; settle, if not
// nil, does it and waits until the kernel has recorded the session's end.
func (c *conn) close(ctx context.Context, settle func(ctx context.Context, hangUp func()) error) {
	hangUp := func() {
		c.rc.Close()
		c.session.Release()
		c.gw.Release()
	}
	if settle != nil {
		settle(ctx, hangUp)
	} else {
		hangUp()
	}
}

// login does the challenge–response of schema/doc.go. The caller releases
// the session.
func login(ctx context.Context, gw schema.Gateway, kernelID, id string, key ed25519.PrivateKey) (schema.Session, error) {
	cf, rel := gw.Challenge(ctx, func(p schema.Gateway_challenge_Params) error { return p.SetPrincipal(id) })
	defer rel()
	cr, err := cf.Struct()
	if err != nil {
		return schema.Session{}, fmt.Errorf("challenge: %w", err)
	}
	kid, err := cr.KernelId()
	if err != nil {
		return schema.Session{}, fmt.Errorf("challenge: %w", err)
	}
	if kernelID != "" && kid != kernelID {
		return schema.Session{}, fmt.Errorf("challenge: kernel id %q, want %q", kid, kernelID)
	}
	nonce, err := cr.Nonce()
	if err != nil {
		return schema.Session{}, fmt.Errorf("challenge: %w", err)
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
		return schema.Session{}, fmt.Errorf("login: %w", err)
	}
	return lr.Session().AddRef(), nil
}

// held is one capability Session.open returned.
type held struct {
	path  string
	class schema.DeviceClass
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
		out = append(out, held{path: target, class: classes(target), cap: hl.At(i).Cap().AddRef()})
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
