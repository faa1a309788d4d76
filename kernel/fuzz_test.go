package kernel_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"

	"github.com/osmose-os/osmose/caps"
	"github.com/osmose-os/osmose/kernel"
	"github.com/osmose-os/osmose/kernel/kerneltest"
	"github.com/osmose-os/osmose/ledger"
	"github.com/osmose-os/osmose/schema"
)

// bootstrapAndChallenge is a well-formed opening: bootstrap, then
// Gateway.challenge pipelined on it.
func bootstrapAndChallenge(t testing.TB) []byte {
	boot := rpcMessage(t, func(m rpccp.Message, _ *capnp.Segment) error {
		b, err := m.NewBootstrap()
		if err != nil {
			return err
		}
		b.SetQuestionId(0)
		return nil
	})
	call := rpcMessage(t, func(m rpccp.Message, seg *capnp.Segment) error {
		c, err := m.NewCall()
		if err != nil {
			return err
		}
		c.SetQuestionId(1)
		tgt, err := c.NewTarget()
		if err != nil {
			return err
		}
		pa, err := tgt.NewPromisedAnswer()
		if err != nil {
			return err
		}
		pa.SetQuestionId(0)
		c.SetInterfaceId(schema.Gateway_TypeID)
		c.SetMethodId(0)
		p, err := c.NewParams()
		if err != nil {
			return err
		}
		args, err := schema.NewGateway_challenge_Params(seg)
		if err != nil {
			return err
		}
		if err := args.SetPrincipal("cam/pem/f1/r1/light-1"); err != nil {
			return err
		}
		return p.SetContent(args.ToPtr())
	})
	return append(boot, call...)
}

// FuzzFrame feeds arbitrary bytes to a kernel connection: whatever arrives,
// the kernel must end only that connection, never panic, and keep serving.
// Run with go test -fuzz FuzzFrame ./kernel.
func FuzzFrame(f *testing.F) {
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{0xff}, 32))
	f.Add(bootstrapAndChallenge(f))
	f.Add(forgedCall(f))
	f.Add(append(bootstrapAndChallenge(f), forgedCall(f)...))

	led, err := ledger.Open(context.Background(), ledger.NewMemStore(), ledger.Options{Key: kerneltest.Key(seed, "kernel")})
	if err != nil {
		f.Fatal(err)
	}
	defer led.Close()
	top := kerneltest.Building(seed, 1)
	k, err := kernel.New(kernel.Config{
		Ledger: led, Topology: top, Now: kerneltest.NewClock(time.Unix(1e9, 0)).Now,
		Rand:    io.MultiReader(bytes.NewReader(make([]byte, 1<<20)), zeros{}),
		Policy:  []caps.PolicyFile{{Name: "test.cedar", Text: kerneltest.Policy}},
		Drivers: kerneltest.NewFakes(top, time.Now).Drivers(),
	})
	if err != nil {
		f.Fatal(err)
	}
	defer k.Close()

	f.Fuzz(func(t *testing.T, in []byte) {
		client, server := net.Pipe()
		served := make(chan struct{})
		go func() {
			defer close(served)
			k.ServeConn(context.Background(), server)
		}()
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			io.Copy(io.Discard, client)
		}()
		client.SetWriteDeadline(time.Now().Add(5 * time.Second))
		client.Write(in) // the kernel may hang up before reading it all
		client.Close()
		select {
		case <-served:
		case <-time.After(20 * time.Second):
			// A hang is a bug too: fail with every goroutine's stack.
			buf := make([]byte, 1<<22)
			t.Fatalf("connection not served to its end:\n%s", buf[:runtime.Stack(buf, true)])
		}
		<-drained
	})
}

// zeros is an endless reader of zero bytes (nonces in the fuzzer need not
// be secret).
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
