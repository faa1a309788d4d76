package main

// osmose trace: every call on a device, by a principal or under a grant,
// from a ledger opened read-only, with its decision and its result.

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/encoding/text"
	"capnproto.org/go/capnp/v3/schemas"
	capnpschema "capnproto.org/go/capnp/v3/std/capnp/schema"
	"github.com/ipfs/go-cid"

	"github.com/osmose-os/osmose/internal/authority"
	"github.com/osmose-os/osmose/ledger"
	"github.com/osmose-os/osmose/schema"
)

const traceDoc = `
Trace lists every call on the device ID, by the principal ID, or under the
grant ID (g12 or 12), with seqs from --from to --to (both included;
default: the whole ledger), in seq order, one line each:

  SEQ TIME ACTOR GRANT DEVICE Interface.method(params) DECISION RESULT

An admitted call is paired with its "return" entry (the entry whose ref is
the call's seq), which gives the result: decoded with the schema when the
interface is one of osmose's, otherwise its size and CID; "failed:" and the
driver's error; or "no return" when the ledger holds none (the kernel
stopped first). A denied call shows the kernel's reason. A body that has
been erased reads "(erased)". --json prints one JSON object per line.

Output is streamed: trace reads only the entries the index names and holds
only the calls still waiting for their return.`

// traceMaxPending bounds the admitted calls trace holds while it waits
// for their return entries; beyond it, the oldest one's return is looked
// up directly.
const traceMaxPending = 4096

func runTrace(ctx context.Context, e *env, args []string) error {
	var lf ledgerFlags
	fs := ledgerFlagSet(e, "trace", "trace --data DIR [--from SEQ] [--to SEQ] [--json] device|principal|grant ID", traceDoc, &lf)
	fromS := fs.String("from", "", "the first `SEQ` to list (default 0)")
	toS := fs.String("to", "", "the last `SEQ` to list (default: the last entry)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usagef("want device|principal|grant and an ID, got %d arguments", len(pos))
	}
	var ix ledger.Index
	value := pos[1]
	switch pos[0] {
	case "device":
		ix, value = ledger.ByDevice, strings.Trim(value, "/")
	case "principal":
		ix = ledger.ByPrincipal
	case "grant":
		id, ok := authority.ParseName(value)
		if !ok {
			return usagef("%q is not a grant id (g12 or 12)", value)
		}
		ix, value = ledger.ByGrant, strconv.FormatUint(id, 10)
	default:
		return usagef("trace what? %q: want device, principal or grant", pos[0])
	}
	if value == "" {
		return usagef("empty %s ID", pos[0])
	}
	seqFlag := func(name, s string) (uint64, bool, error) {
		if s == "" {
			return 0, false, nil
		}
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, false, usagef("--%s %s: want a seq (a number)", name, s)
		}
		return n, true, nil
	}
	from, _, err := seqFlag("from", *fromS)
	if err != nil {
		return err
	}
	to, hasTo, err := seqFlag("to", *toS)
	if err != nil {
		return err
	}
	if hasTo && from > to {
		return usagef("--from %d is after --to %d", from, to)
	}
	l, closeFn, err := openLedger(ctx, &lf)
	if err != nil {
		return err
	}
	defer closeFn()
	size := uint64(l.Size())
	if !hasTo {
		to = size - 1
	}
	for _, s := range []uint64{from, to} {
		if s >= size {
			return failf("no entry at seq %d: the ledger holds seqs 0 to %d", s, size-1)
		}
	}
	known := false
	if err := l.Lookup(ctx, ix, value, 0, size, func(uint64) bool { known = true; return false }); err != nil {
		return failf("read the %s index: %v", ix, err)
	}
	if !known {
		return failf("no entry on the ledger names %s %s", pos[0], pos[1])
	}
	t := &tracer{ctx: ctx, e: e, l: l, json: lf.json, to: to, size: size, pending: map[uint64]*traceRow{}}
	err = l.Lookup(ctx, ix, value, from, size, t.entry)
	if err == nil {
		err = t.err
	}
	if err != nil {
		return failf("%v", err)
	}
	// What is left never returned on the ledger.
	for len(t.queue) > 0 {
		t.queue[0].done = true
		if err := t.flush(); err != nil {
			return err
		}
	}
	if t.rows == 0 && !lf.json {
		fmt.Fprintf(e.stderr, "no call on the ledger for %s %s in seqs %d to %d\n", pos[0], pos[1], from, to)
	}
	return nil
}

// traceRow is one call and, once known, its return.
type traceRow struct {
	call *ledger.Record
	ret  *ledger.Record
	done bool
}

// tracer pairs calls with their returns as the index streams by and
// prints each call, in seq order, once its return is known.
type tracer struct {
	ctx     context.Context
	e       *env
	l       *ledger.Ledger
	json    bool
	to      uint64
	size    uint64
	queue   []*traceRow          // calls not yet printed, in seq order
	pending map[uint64]*traceRow // admitted calls waiting for a return, by seq
	rows    int
	err     error
}

// entry handles one seq of the index; it returns false to stop.
func (t *tracer) entry(seq uint64) bool {
	if seq > t.to && len(t.pending) == 0 {
		return false
	}
	r, err := t.l.Read(t.ctx, seq)
	if err != nil {
		t.err = fmt.Errorf("read seq %d: %w", seq, err)
		return false
	}
	switch env := r.Envelope; {
	case env.Kind == "return":
		if row, ok := t.pending[env.Ref]; ok {
			row.ret, row.done = r, true
			delete(t.pending, env.Ref)
		}
	case env.Kind == ledger.KindCall && seq <= t.to:
		row := &traceRow{call: r, done: env.Decision != ledger.DecisionAdmit}
		t.queue = append(t.queue, row)
		if !row.done {
			t.pending[seq] = row
		}
		if len(t.pending) > traceMaxPending {
			if err := t.resolveHead(); err != nil {
				t.err = err
				return false
			}
		}
	}
	if err := t.flush(); err != nil {
		t.err = err
		return false
	}
	return true
}

// resolveHead finds the return of the oldest waiting call by reading the
// entries of its grant after it.
func (t *tracer) resolveHead() error {
	var row *traceRow
	for _, q := range t.queue {
		if !q.done {
			row = q
			break
		}
	}
	env := row.call.Envelope
	var lerr error
	err := t.l.Lookup(t.ctx, ledger.ByGrant, strconv.FormatUint(env.Grant, 10), env.Seq+1, t.size, func(s uint64) bool {
		r, err := t.l.Read(t.ctx, s)
		if err != nil {
			lerr = fmt.Errorf("read seq %d: %w", s, err)
			return false
		}
		if r.Envelope.Kind == "return" && r.Envelope.Ref == env.Seq {
			row.ret = r
			return false
		}
		return true
	})
	if err == nil {
		err = lerr
	}
	row.done = true
	delete(t.pending, env.Seq)
	return err
}

// flush prints the calls at the head of the queue whose return is known.
func (t *tracer) flush() error {
	n := 0
	for _, row := range t.queue {
		if !row.done {
			break
		}
		if err := t.print(row); err != nil {
			return err
		}
		n++
	}
	t.queue = t.queue[n:]
	return nil
}

// traceJSON is one line of trace --json.
type traceJSON struct {
	Seq         uint64      `json:"seq"`
	Time        string      `json:"time"`
	Actor       string      `json:"actor"`
	Grant       string      `json:"grant,omitempty"`
	Device      string      `json:"device"`
	Interface   string      `json:"interface"`
	InterfaceID string      `json:"interface_id"`
	Method      string      `json:"method"`
	Params      bodyJSON    `json:"params"`
	Decision    string      `json:"decision"`
	Reason      string      `json:"reason,omitempty"`
	Return      *returnJSON `json:"return,omitempty"`
}

type returnJSON struct {
	Seq    uint64    `json:"seq"`
	Time   string    `json:"time"`
	Error  string    `json:"error,omitempty"`
	Result *bodyJSON `json:"result,omitempty"`
}

// bodyJSON is a body as trace shows it: decoded text when the schema is
// known, else its size; its CID when there is one.
type bodyJSON struct {
	Text  string `json:"text,omitempty"`
	Size  int    `json:"size,omitempty"`
	CID   string `json:"cid,omitempty"`
	State string `json:"state"` // present, erased or none
}

func (t *tracer) print(row *traceRow) error {
	t.rows++
	env := row.call.Envelope
	m := lookupMethod(env.Interface, env.Method)
	j := traceJSON{
		Seq: env.Seq, Time: logicalTime(env.Time), Actor: env.Actor, Device: env.Device,
		Interface: m.iface, InterfaceID: fmt.Sprintf("%#016x", env.Interface), Method: m.name,
		Params:   describeBody(env.Params, row.call.Params(), row.call.ParamsBlock != nil, m.params),
		Decision: string(env.Decision), Reason: env.Reason,
	}
	if env.Grant != 0 {
		j.Grant = authority.Name(env.Grant)
	}
	if r := row.ret; r != nil {
		re := r.Envelope
		j.Return = &returnJSON{Seq: re.Seq, Time: logicalTime(re.Time), Error: re.Reason}
		if re.Result.Defined() {
			b := describeBody(re.Result, r.Result(), r.ResultBlock != nil, m.results)
			j.Return.Result = &b
		}
	}
	if t.json {
		b, err := json.Marshal(j)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(t.e.stdout, "%s\n", b)
		return err
	}
	params := j.Params.Text
	switch {
	case j.Params.State == "erased":
		params = "(erased)"
	case params == "" && j.Params.State == "present":
		params = fmt.Sprintf("(%d bytes %s)", j.Params.Size, j.Params.CID)
	case params == "":
		params = "()"
	}
	var result string
	switch r := j.Return; {
	case env.Decision != ledger.DecisionAdmit:
		result = dash(env.Reason)
	case r == nil:
		result = "no return on the ledger"
	case r.Error != "":
		result = "failed: " + r.Error
	case r.Result == nil:
		result = "→ ()"
	case r.Result.State == "erased":
		result = "→ (erased)"
	case r.Result.Text != "":
		result = "→ " + r.Result.Text
	default:
		result = fmt.Sprintf("→ %d bytes %s", r.Result.Size, r.Result.CID)
	}
	_, err := fmt.Fprintf(t.e.stdout, "%d %s %s %s %s %s.%s%s %s %s\n", env.Seq, j.Time, dash(env.Actor), dash(j.Grant),
		dash(env.Device), m.iface, m.name, params, dash(j.Decision), result)
	return err
}

// describeBody decodes a body with the schema's struct type id (0 when
// unknown).
func describeBody(link cid.Cid, data []byte, present bool, typeID uint64) bodyJSON {
	if !link.Defined() {
		return bodyJSON{State: "none"}
	}
	b := bodyJSON{CID: link.String(), State: "erased"}
	if !present {
		return b
	}
	b.State, b.Size = "present", len(data)
	if typeID != 0 {
		b.Text = decodeStruct(typeID, data)
	}
	return b
}

// decodeStruct renders canonical Cap'n Proto bytes of a struct in the
// Cap'n Proto text format, or "" if they do not decode.
func decodeStruct(typeID uint64, data []byte) string {
	msg, _, err := capnp.NewMessage(capnp.SingleSegment(data))
	if err != nil {
		return ""
	}
	p, err := msg.Root()
	if err != nil {
		return ""
	}
	var sb strings.Builder
	enc := text.NewEncoder(&sb)
	enc.UseRegistry(catalog().reg)
	if err := enc.Encode(typeID, p.Struct()); err != nil {
		return ""
	}
	return sb.String()
}

// method is what trace knows of one interface method.
type method struct {
	iface, name     string
	params, results uint64 // struct type ids, 0 when unknown
}

// schemaCatalog is every interface of osmose's schemas, read from the
// schema reflection data the generated code carries.
type schemaCatalog struct {
	reg    *schemas.Registry
	ifaces map[uint64]string
	meths  map[uint64][]method
}

var (
	catOnce sync.Once
	cat     *schemaCatalog
)

func catalog() *schemaCatalog {
	catOnce.Do(func() {
		c := &schemaCatalog{reg: &schemas.Registry{}, ifaces: map[uint64]string{}, meths: map[uint64][]method{}}
		schema.RegisterSchema(c.reg)
		cat = c
		b, err := c.reg.Find(schema.Light_TypeID)
		if err != nil {
			return
		}
		msg, err := capnp.Unmarshal(b)
		if err != nil {
			return
		}
		req, err := capnpschema.ReadRootCodeGeneratorRequest(msg)
		if err != nil {
			return
		}
		nodes, err := req.Nodes()
		if err != nil {
			return
		}
		for i := 0; i < nodes.Len(); i++ {
			n := nodes.At(i)
			if n.Which() != capnpschema.Node_Which_interface {
				continue
			}
			dn, _ := n.DisplayName()
			name := dn[min(int(n.DisplayNamePrefixLength()), len(dn)):]
			c.ifaces[n.Id()] = name
			ms, err := n.Interface().Methods()
			if err != nil {
				continue
			}
			for j := 0; j < ms.Len(); j++ {
				m := ms.At(j)
				mn, _ := m.Name()
				c.meths[n.Id()] = append(c.meths[n.Id()], method{iface: name, name: mn, params: m.ParamStructType(), results: m.ResultStructType()})
			}
		}
	})
	return cat
}

// interfaceName returns the schema name of an interface id, or "".
func interfaceName(id uint64) string { return catalog().ifaces[id] }

// lookupMethod describes method ordinal m of interface id; an unknown one
// is named by its ids.
func lookupMethod(id uint64, m uint16) method {
	c := catalog()
	if ms := c.meths[id]; int(m) < len(ms) {
		return ms[m]
	}
	name := c.ifaces[id]
	if name == "" {
		name = fmt.Sprintf("%#016x", id)
	}
	return method{iface: name, name: fmt.Sprintf("@%d", m)}
}
