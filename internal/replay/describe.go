package replay

import (
	"fmt"
	"strings"
	"sync"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/encoding/text"
	"capnproto.org/go/capnp/v3/schemas"
	capnpschema "capnproto.org/go/capnp/v3/std/capnp/schema"

	"github.com/osmose-os/osmose/caps"
	"github.com/osmose-os/osmose/kernel"
	"github.com/osmose-os/osmose/ledger"
	"github.com/osmose-os/osmose/schema"
)

// Rendering entries and bodies for people: divergences and states name
// calls as "Light.setLevel(level = 40)", from the schema reflection data
// the generated code carries.

type methodTypes struct{ params, results uint64 }

type reflection struct {
	reg   *schemas.Registry
	meths map[uint64][]methodTypes
}

var schemaInfo = sync.OnceValue(func() *reflection {
	r := &reflection{reg: &schemas.Registry{}, meths: map[uint64][]methodTypes{}}
	schema.RegisterSchema(r.reg)
	b, err := r.reg.Find(schema.Light_TypeID)
	if err != nil {
		return r
	}
	msg, err := capnp.Unmarshal(b)
	if err != nil {
		return r
	}
	req, err := capnpschema.ReadRootCodeGeneratorRequest(msg)
	if err != nil {
		return r
	}
	nodes, err := req.Nodes()
	if err != nil {
		return r
	}
	for i := 0; i < nodes.Len(); i++ {
		n := nodes.At(i)
		if n.Which() != capnpschema.Node_Which_interface {
			continue
		}
		ms, err := n.Interface().Methods()
		if err != nil {
			continue
		}
		for j := 0; j < ms.Len(); j++ {
			m := ms.At(j)
			r.meths[n.Id()] = append(r.meths[n.Id()], methodTypes{m.ParamStructType(), m.ResultStructType()})
		}
	}
	return r
})

// render writes canonical bytes of a struct of type typeID in the Cap'n
// Proto text format; a size and "bytes" when it does not decode.
func render(typeID uint64, data []byte) string {
	if data == nil {
		return "nothing"
	}
	if typeID != 0 {
		if s := rootStruct(data); s.IsValid() {
			var b strings.Builder
			enc := text.NewEncoder(&b)
			enc.UseRegistry(schemaInfo().reg)
			if enc.Encode(typeID, s) == nil {
				return b.String()
			}
		}
	}
	return fmt.Sprintf("%d bytes", len(data))
}

func (r *reflection) types(iface uint64, m uint16) methodTypes {
	if ms := r.meths[iface]; int(m) < len(ms) {
		return ms[m]
	}
	return methodTypes{}
}

// describeResult renders a call's results.
func describeResult(iface uint64, m uint16, data []byte) string {
	return render(schemaInfo().types(iface, m).results, data)
}

// describeGrant renders a grant body.
func describeGrant(data []byte) string { return render(schema.Grant_TypeID, data) }

// describe says what an entry is, in one line.
func (e *engine) describe(en *Entry) string {
	env := en.Env
	var b strings.Builder
	b.WriteString(string(env.Kind))
	if env.Actor != "" {
		b.WriteString(" by " + env.Actor)
	}
	if env.Grant != 0 {
		b.WriteString(" under " + caps.GrantID(env.Grant).String())
	}
	if env.Device != "" {
		b.WriteString(" on " + env.Device)
	}
	if env.Kind == ledger.KindCall || env.Kind == ledger.KindReturn {
		f, m := e.cat.MethodName(env.Interface, env.Method)
		fmt.Fprintf(&b, ": %s.%s", f, m)
		if env.Kind == ledger.KindCall {
			if en.Params != nil {
				b.WriteString(render(schemaInfo().types(env.Interface, env.Method).params, en.Params))
			} else {
				b.WriteString("()")
			}
		} else {
			fmt.Fprintf(&b, " (the return of seq %d)", env.Ref)
		}
	}
	return b.String()
}

// grantFields is what a grant body says of the grant, for asking again.
type grantFields struct {
	holder  string
	methods []string
	caveats caps.Caveats
}

// decodeGrant reads a grant body's holder, methods and caveats. The
// caveats are converted as the kernel converts requested ones
// (kernel.DecodeGrantRequest), by way of a request body.
func decodeGrant(body []byte) (grantFields, error) {
	var f grantFields
	s := rootStruct(body)
	if !s.IsValid() {
		return f, fmt.Errorf("not a Cap'n Proto struct")
	}
	g := schema.Grant(s)
	var err error
	if f.holder, err = g.Holder(); err != nil {
		return f, err
	}
	ms, err := g.Methods()
	if err != nil {
		return f, err
	}
	_, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
	if err != nil {
		return f, err
	}
	q, err := schema.NewRootSession_delegate_Params(seg)
	if err != nil {
		return f, err
	}
	if err := q.SetTo(f.holder); err != nil {
		return f, err
	}
	var qc schema.Caveats
	if g.HasCaveats() {
		c, err := g.Caveats()
		if err == nil {
			err = q.SetCaveats(c)
		}
		if err == nil {
			qc, err = q.Caveats()
		}
		if err != nil {
			return f, err
		}
	} else if qc, err = q.NewCaveats(); err != nil {
		return f, err
	}
	ml, err := qc.NewMethods(int32(ms.Len()))
	if err != nil {
		return f, err
	}
	for i := 0; i < ms.Len(); i++ {
		m, err := ms.At(i)
		if err != nil {
			return f, err
		}
		if err := ml.Set(i, m); err != nil {
			return f, err
		}
	}
	b, err := capnp.Canonicalize(capnp.Struct(q))
	if err != nil {
		return f, err
	}
	r, err := kernel.DecodeGrantRequest(b)
	if err != nil {
		return f, err
	}
	f.methods, f.caveats = r.Methods, r.Caveats
	return f, nil
}
