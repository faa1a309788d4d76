package main

// The auditor's provenance tools: osmose caps who and caps why. Both read
// a ledger opened read-only (see ledger.go) and fold its grant, delegate,
// revoke and release entries with internal/authority; neither needs the
// kernel.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/osmose-os/osmose/internal/authority"
	"github.com/osmose-os/osmose/ledger"
)

// capsFlags are the flags of the caps commands.
type capsFlags struct {
	ledgerFlags
	at string
}

func capsFlagSet(e *env, name, synopsis, doc string, cf *capsFlags) *flag.FlagSet {
	fs := ledgerFlagSet(e, name, synopsis, doc, &cf.ledgerFlags)
	fs.StringVar(&cf.at, "at", "", "the state after the entry at `SEQ` (default: the last entry)")
	return fs
}

// loadAuthority opens the ledger and folds its authority entries up to the
// entry at --at (or the last), returning the history and that point.
func loadAuthority(ctx context.Context, cf *capsFlags) (*authority.History, authority.At, func(), error) {
	var at authority.At
	var seq uint64
	if cf.at != "" {
		n, err := strconv.ParseUint(cf.at, 10, 64)
		if err != nil {
			return nil, at, nil, usagef("--at %s: want a seq (a number)", cf.at)
		}
		seq = n
	}
	l, closeFn, err := openLedger(ctx, &cf.ledgerFlags)
	if err != nil {
		return nil, at, nil, err
	}
	size := uint64(l.Size())
	if cf.at == "" {
		seq = size - 1
	}
	r, err := readEntry(ctx, l, seq)
	if err != nil {
		closeFn()
		return nil, at, nil, err
	}
	at = authority.At{Seq: seq, Time: r.Envelope.Time}
	h, err := foldAuthority(ctx, l, seq)
	if err != nil {
		closeFn()
		return nil, at, nil, err
	}
	return h, at, closeFn, nil
}

// foldAuthority applies the entries of authority.Kinds up to seq to a new
// history, reading only those entries (through the kind index).
func foldAuthority(ctx context.Context, l *ledger.Ledger, seq uint64) (*authority.History, error) {
	var seqs []uint64
	for _, k := range authority.Kinds {
		err := l.Lookup(ctx, ledger.ByKind, string(k), 0, seq+1, func(s uint64) bool {
			seqs = append(seqs, s)
			return true
		})
		if err != nil {
			return nil, failf("read the %s index: %v", k, err)
		}
	}
	slices.Sort(seqs)
	h := authority.New()
	for _, s := range seqs {
		r, err := l.Read(ctx, s)
		if err != nil {
			return nil, failf("read seq %d: %v", s, err)
		}
		if err := h.Apply(authority.Entry{Envelope: r.Envelope, Params: r.Params(), Result: r.Result()}); err != nil {
			return nil, failf("%v", err)
		}
	}
	return h, nil
}

// ---- who ----

const whoDoc = `
Who lists every grant live over PATH after the entry at --at (default: the
last entry): on the device at PATH, or on every device at or under the
place at PATH (by path segments). For each it names the holder, the device,
the interface, the methods and effective caveats, and the chain of grants
it derives from, back to the policy decision that made the root. A grant is
live when it was made, has not been revoked or released, and has not
expired at the logical time of that entry.

The answer comes from the ledger alone. What the ledger does not record is
not inferred: a kernel restart (which ends every grant of the earlier run)
and spent uses are not on it.`

func runCapsWho(ctx context.Context, e *env, args []string) error {
	var cf capsFlags
	fs := capsFlagSet(e, "caps who", "caps who --data DIR [--at SEQ] [--json] PATH", whoDoc, &cf)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want one device or place PATH, got %d arguments", len(pos))
	}
	path := strings.Trim(pos[0], "/")
	if path == "" {
		return usagef("PATH %q names no device or place", pos[0])
	}
	h, at, closeFn, err := loadAuthority(ctx, &cf)
	if err != nil {
		return err
	}
	defer closeFn()
	if !h.Touches(path, at) {
		return failf("no grant on the ledger up to seq %d targets %s or a device under it", at.Seq, path)
	}
	hs := h.Holders(path, at)
	if cf.json {
		out := whoJSON{Path: path, At: atJSON{Seq: at.Seq, Time: logicalTime(at.Time)}, Holders: []holdingJSON{}, Anomalies: h.Anomalies}
		for _, x := range hs {
			hj := holdingJSON{grantJSON: grantToJSON(x.Grant, at), Chain: []grantJSON{}}
			for _, c := range x.Chain {
				hj.Chain = append(hj.Chain, grantToJSON(c, at))
			}
			out.Holders = append(out.Holders, hj)
		}
		return writeJSON(e.stdout, out)
	}
	w := e.stdout
	fmt.Fprintf(w, "%s after seq %d (%s): %s\n", path, at.Seq, logicalTime(at.Time), plural(len(hs), "live grant"))
	if len(hs) > 0 {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "\nGRANT\tHOLDER\tDEVICE\tINTERFACE\tMETHODS\tCAVEATS\tFROM")
		for _, x := range hs {
			g := x.Grant
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", g.Name(), orUnknown(g.Holder), g.Target, ifaceName(g),
				dash(strings.Join(g.Methods, ",")), dash(g.Caveats), chainLine(x.Chain, g, at))
		}
		tw.Flush()
	}
	printAnomalies(w, h)
	return nil
}

// chainLine writes where a grant's power comes from: each ancestor with
// its holder, then the policies of the root; an ancestor that has ended
// is marked with its state.
func chainLine(chain []*authority.Grant, g *authority.Grant, at authority.At) string {
	var b strings.Builder
	root := g
	for _, c := range chain {
		fmt.Fprintf(&b, "%s (%s", c.Name(), orUnknown(c.Holder))
		if st := c.StateAt(at); st != authority.Live {
			fmt.Fprintf(&b, ", %s", st)
		}
		b.WriteString(") ← ")
		root = c
	}
	if root.Parent != 0 {
		fmt.Fprintf(&b, "%s (not on the ledger)", authority.Name(root.Parent))
		return b.String()
	}
	b.WriteString("policy")
	if len(root.Policies) > 0 {
		fmt.Fprintf(&b, " %s", strings.Join(root.Policies, ","))
	}
	return b.String()
}

// ---- why ----

const whyDoc = `
Why shows the chain of one GRANT (written g12 or 12), as of the entry at
--at (default: the last entry): the grant, its parent, and so on to the
root grant that the policy made. For each: holder, device, interface,
methods, effective caveats, the entry that made it (seq, logical time,
kind, who asked, and the decision's reason: the policies that permitted
it) and, if it has ended, the entry that ended it (revoke or release: who,
why, and the grant whose revocation cascaded to it).`

func runCapsWhy(ctx context.Context, e *env, args []string) error {
	var cf capsFlags
	fs := capsFlagSet(e, "caps why", "caps why --data DIR [--at SEQ] [--json] GRANT", whyDoc, &cf)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want one GRANT, got %d arguments", len(pos))
	}
	id, ok := authority.ParseName(pos[0])
	if !ok {
		return usagef("%q is not a grant id (g12 or 12)", pos[0])
	}
	h, at, closeFn, err := loadAuthority(ctx, &cf)
	if err != nil {
		return err
	}
	defer closeFn()
	chain, err := h.Chain(id)
	if errors.Is(err, authority.ErrNoGrant) {
		return failf("no grant %s on the ledger up to seq %d", authority.Name(id), at.Seq)
	}
	if err != nil {
		return failf("%v", err)
	}
	if cf.json {
		out := whyJSON{Grant: authority.Name(id), At: atJSON{Seq: at.Seq, Time: logicalTime(at.Time)}, Anomalies: h.Anomalies}
		for _, g := range chain {
			out.Chain = append(out.Chain, grantToJSON(g, at))
		}
		return writeJSON(e.stdout, out)
	}
	w := e.stdout
	fmt.Fprintf(w, "%s after seq %d (%s): %s, %s\n", authority.Name(id), at.Seq, logicalTime(at.Time),
		chain[0].StateAt(at), plural(len(chain), "grant")+" to the root")
	for _, g := range chain {
		printGrant(w, g, at)
	}
	if root := chain[len(chain)-1]; root.Parent != 0 {
		fmt.Fprintf(w, "\n%s, its parent, was made before this ledger's first entry\n", authority.Name(root.Parent))
	}
	printAnomalies(w, h)
	return nil
}

func printGrant(w io.Writer, g *authority.Grant, at authority.At) {
	fmt.Fprintf(w, "\n%s  %s\n", g.Name(), g.StateAt(at))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  holder\t%s\n", orUnknown(g.Holder))
	fmt.Fprintf(tw, "  grantor\t%s\n", orUnknown(g.Grantor))
	fmt.Fprintf(tw, "  device\t%s\n", g.Target)
	fmt.Fprintf(tw, "  interface\t%s (%#016x)\n", ifaceName(g), g.Interface)
	fmt.Fprintf(tw, "  methods\t%s\n", dash(strings.Join(g.Methods, ", ")))
	fmt.Fprintf(tw, "  caveats\t%s\n", dash(g.Caveats))
	if g.Expires != 0 {
		fmt.Fprintf(tw, "  expires\t%s\n", logicalTime(g.Expires))
	}
	m := g.Made
	fmt.Fprintf(tw, "  made\tseq %d, %s, %s by %s: %s\n", m.Seq, logicalTime(m.Time), m.Kind, m.Actor, dash(m.Reason))
	if g.Parent == 0 {
		fmt.Fprintf(tw, "  from\tthe policy: %s\n", dash(strings.Join(g.Policies, ", ")))
	} else {
		fmt.Fprintf(tw, "  from\t%s\n", authority.Name(g.Parent))
	}
	if x := g.Ended; x != nil && x.Seq <= at.Seq {
		how := ""
		if x.Root != 0 && x.Root != g.ID {
			how = fmt.Sprintf(" (with %s)", authority.Name(x.Root))
		}
		fmt.Fprintf(tw, "  ended\tseq %d, %s, %s by %s: %s%s\n", x.Seq, logicalTime(x.Time), x.Kind, x.Actor, dash(x.Reason), how)
	}
	tw.Flush()
}

func printAnomalies(w io.Writer, h *authority.History) {
	if len(h.Anomalies) == 0 {
		return
	}
	fmt.Fprintf(w, "\n%s:\n", plural(len(h.Anomalies), "anomaly"))
	for _, a := range h.Anomalies {
		fmt.Fprintf(w, "  %s\n", a)
	}
}

func ifaceName(g *authority.Grant) string {
	if g.InterfaceName != "" {
		return g.InterfaceName
	}
	if n := interfaceName(g.Interface); n != "" {
		return n
	}
	return fmt.Sprintf("%#016x", g.Interface)
}

func orUnknown(s string) string {
	if s == "" {
		return "?"
	}
	return s
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	if strings.HasSuffix(what, "y") {
		return fmt.Sprintf("%d %sies", n, strings.TrimSuffix(what, "y"))
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// ---- JSON ----

type atJSON struct {
	Seq  uint64 `json:"seq"`
	Time string `json:"time"`
}

type eventJSON struct {
	Seq      uint64   `json:"seq"`
	Time     string   `json:"time"`
	Kind     string   `json:"kind"`
	Actor    string   `json:"actor"`
	Reason   string   `json:"reason,omitempty"`
	Policies []string `json:"policies,omitempty"`
	Root     string   `json:"root,omitempty"` // for an end: the grant the entry was about
}

type grantJSON struct {
	ID          string     `json:"id"`
	State       string     `json:"state"`
	Holder      string     `json:"holder"`
	Grantor     string     `json:"grantor"`
	Parent      string     `json:"parent,omitempty"`
	Device      string     `json:"device"`
	Interface   string     `json:"interface"`
	InterfaceID string     `json:"interface_id"`
	Methods     []string   `json:"methods"`
	Caveats     string     `json:"caveats,omitempty"`
	Expires     string     `json:"expires,omitempty"`
	Made        eventJSON  `json:"made"`
	Ended       *eventJSON `json:"ended,omitempty"`
	NoBody      bool       `json:"no_body,omitempty"`
}

type holdingJSON struct {
	grantJSON
	Chain []grantJSON `json:"chain"`
}

type whoJSON struct {
	Path      string        `json:"path"`
	At        atJSON        `json:"at"`
	Holders   []holdingJSON `json:"holders"`
	Anomalies []string      `json:"anomalies,omitempty"`
}

type whyJSON struct {
	Grant     string      `json:"grant"`
	At        atJSON      `json:"at"`
	Chain     []grantJSON `json:"chain"`
	Anomalies []string    `json:"anomalies,omitempty"`
}

func grantToJSON(g *authority.Grant, at authority.At) grantJSON {
	j := grantJSON{
		ID: g.Name(), State: string(g.StateAt(at)), Holder: g.Holder, Grantor: g.Grantor,
		Device: g.Target, Interface: ifaceName(g), InterfaceID: fmt.Sprintf("%#016x", g.Interface),
		Methods: g.Methods, Caveats: g.Caveats, NoBody: g.NoBody,
		Made: eventJSON{Seq: g.Made.Seq, Time: logicalTime(g.Made.Time), Kind: string(g.Made.Kind), Actor: g.Made.Actor,
			Reason: g.Made.Reason, Policies: g.Policies},
	}
	if j.Methods == nil {
		j.Methods = []string{}
	}
	if g.Parent != 0 {
		j.Parent = authority.Name(g.Parent)
	}
	if g.Expires != 0 {
		j.Expires = logicalTime(g.Expires)
	}
	if x := g.Ended; x != nil && x.Seq <= at.Seq {
		j.Ended = &eventJSON{Seq: x.Seq, Time: logicalTime(x.Time), Kind: string(x.Kind), Actor: x.Actor, Reason: x.Reason}
		if x.Root != 0 {
			j.Ended.Root = authority.Name(x.Root)
		}
	}
	return j
}
