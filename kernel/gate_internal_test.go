package kernel

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/osmose-os/osmose/schema"
)

type countCancels struct{ n atomic.Int32 }

func (c *countCancels) Cancel(context.Context, schema.Subscription_cancel) error {
	c.n.Add(1)
	return nil
}

// TestPipelineAfterAnswer: a call pipelined on a gated call's answer once
// the answer is given (the queue is then made already settled) reaches
// the capability in the results, or gets the answer's error.
func TestPipelineAfterAnswer(t *testing.T) {
	cancel := capnp.Method{InterfaceID: schema.Subscription_TypeID, MethodID: 0, InterfaceName: "Subscription", MethodName: "cancel"}
	pipelined := func(c *gcall) error {
		ans, rel := c.PipelineSend(context.Background(), []capnp.PipelineOp{{Field: 0}}, capnp.Send{Method: cancel})
		defer rel()
		select {
		case <-ans.Done():
		case <-time.After(10 * time.Second):
			return errors.New("the pipelined call was never answered")
		}
		_, err := ans.Struct()
		return err
	}

	subs := new(countCancels)
	ret := new(capnp.StructReturner)
	res, err := ret.AllocResults(capnp.ObjectSize{PointerCount: 1})
	if err != nil {
		t.Fatal(err)
	}
	id := res.Message().CapTable().Add(capnp.Client(schema.Subscription_ServerToClient(subs)))
	if err := res.SetPtr(0, capnp.NewInterface(res.Segment(), id).ToPtr()); err != nil {
		t.Fatal(err)
	}
	c := &gcall{m: cancel, r: capnp.Recv{Returner: ret, ReleaseArgs: func() {}}, admitted: true, results: res}
	c.answer()
	if err := pipelined(c); err != nil {
		t.Fatalf("pipelined on results: %v", err)
	}
	if n := subs.n.Load(); n != 1 {
		t.Errorf("the results' capability got %d calls, want 1", n)
	}
	res.Message().Release() // a successful answer's results are its caller's

	failed := errors.New("driver failed")
	c = &gcall{m: cancel, r: capnp.Recv{Returner: new(capnp.StructReturner), ReleaseArgs: func() {}}, admitted: true, err: failed}
	c.answer()
	if err := pipelined(c); !errors.Is(err, failed) {
		t.Errorf("pipelined on an error: %v, want %v", err, failed)
	}
}
