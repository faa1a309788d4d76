package main

// The auditor's ledger tools: osmose ledger verify, show, tail, proof,
// checkpoint and export.
//
// Data directory. Every command takes --data DIR, the kernel's data
// directory; the ledger's Badger store is DIR/ledger. DIR may also name the
// Badger directory itself (one holding a MANIFEST), so that a copied
// ledger directory can be checked as it is.
//
// Read-only, always. Each command opens the store read-only (Badger's
// read-only mode: no recovery truncation, no compaction, a shared lock),
// so a damaged or foreign directory is reported and never changed. The
// checkpoint verifier key comes from the ledger's own metadata; --key VKEY
// names a key the auditor trusts instead, and the command fails when the
// ledger's key is another.
//
// A running kernel holds Badger's exclusive directory lock, so these
// commands report "in use by another process" for a live ledger. tail -f
// does not bypass the lock: with Badger v1.6 a read-only opener that
// ignores the lock (BypassLockGuard) races the writer's value-log appends
// (a half-written tail reads as a log needing truncation), its manifest
// rewrites and its compactions (tables listed in the manifest vanish before
// they are opened), so it would fail or see a torn state at random. tail -f
// follows a ledger that no process holds, by reopening it read-only every
// --interval; a live kernel's ledger will be followed through the kernel's
// watch over Cap'n Proto.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/bits"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ipfs/go-cid"
	golog "github.com/ipfs/go-log/v2"
	"github.com/ipld/go-ipld-prime/codec/dagcbor"
	"github.com/ipld/go-ipld-prime/codec/dagjson"
	"github.com/ipld/go-ipld-prime/node/basicnode"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/osmose-os/osmose/ledger"
)

// ledgerFlags are the flags every ledger command shares.
type ledgerFlags struct {
	data string
	key  string
	json bool
}

// ledgerFlagSet returns the flag set of a ledger command with the shared
// flags registered and doc printed in its help.
func ledgerFlagSet(e *env, name, synopsis, doc string, lf *ledgerFlags) *flag.FlagSet {
	fs := newFlags(e, name, synopsis)
	fs.StringVar(&lf.data, "data", "", "the kernel's data `DIR` (the ledger is DIR/ledger; a Badger ledger directory itself is accepted too)")
	fs.StringVar(&lf.key, "key", "", "note verifier `VKEY` to trust for checkpoints instead of the ledger's own metadata; fail if the ledger's key differs")
	fs.BoolVar(&lf.json, "json", false, "machine-readable output (JSON)")
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "usage: osmose %s\n\n%s\n\nFlags:\n", synopsis, strings.TrimSpace(doc))
		fs.PrintDefaults()
	}
	return fs
}

// parseInterleaved parses flags that may come before, between or after
// the positional arguments, and returns the positional ones.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parseFlags(fs, args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// failf is a one-line failure with exit status 1.
func failf(format string, a ...any) error {
	return &exitError{code: 1, err: fmt.Errorf(format, a...)}
}

// usagef is a one-line usage error with exit status 2.
func usagef(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, a...))
}

// ledgerStoreDir finds the Badger directory of a data directory, checking
// (without writing) that it exists and looks like a ledger.
func ledgerStoreDir(data string) (string, error) {
	if data == "" {
		return "", usagef("--data DIR is required")
	}
	fi, err := os.Stat(data)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "", failf("data directory %s does not exist", data)
	case err != nil:
		return "", failf("data directory: %v", err)
	case !fi.IsDir():
		return "", failf("data directory %s is not a directory", data)
	}
	dir := data
	if _, err := os.Stat(filepath.Join(data, "MANIFEST")); err != nil {
		dir = filepath.Join(data, "ledger")
		fi, err := os.Stat(dir)
		if err != nil || !fi.IsDir() {
			ents, _ := os.ReadDir(data)
			if len(ents) == 0 {
				return "", failf("%s is empty: not an osmose data directory", data)
			}
			return "", failf("%s is not an osmose data directory (no ledger/ in it)", data)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "MANIFEST")); err != nil {
		return "", failf("%s is not an osmose ledger directory (no Badger MANIFEST)", dir)
	}
	return dir, nil
}

// openLedger opens the ledger of a data directory read-only. The returned
// close function closes the ledger and its store.
func openLedger(ctx context.Context, lf *ledgerFlags) (l *ledger.Ledger, closeFn func(), err error) {
	dir, err := ledgerStoreDir(lf.data)
	if err != nil {
		return nil, nil, err
	}
	if lf.key != "" {
		if _, err := note.NewVerifier(lf.key); err != nil {
			return nil, nil, usagef("--key: not a note verifier key: %v", err)
		}
	}
	store, err := openBadgerReadOnly(dir)
	if err != nil {
		return nil, nil, err
	}
	l, err = ledger.Open(ctx, store, ledger.Options{})
	if err != nil {
		store.Close()
		return nil, nil, failf("%s: %v", dir, strings.TrimPrefix(err.Error(), "open ledger: "))
	}
	closeFn = func() {
		l.Close()
		store.Close()
	}
	if lf.key != "" && lf.key != l.Meta().Verifier {
		closeFn()
		return nil, nil, failf("the ledger's checkpoints are signed by %s, not by the trusted key %s", l.Meta().Verifier, lf.key)
	}
	return l, closeFn, nil
}

// openBadgerReadOnly opens a Badger directory read-only, turning Badger's
// errors (and any panic on a damaged file) into one line.
func openBadgerReadOnly(dir string) (s *ledger.BadgerStore, err error) {
	defer func() {
		if r := recover(); r != nil {
			s, err = nil, failf("%s: unreadable Badger store: %v", dir, firstLine(fmt.Sprint(r)))
		}
	}()
	// Badger reports what it skips (a table failing its checksum) on the
	// log, in several lines; the ledger's own checks report what is
	// missing, in one.
	golog.SetLogLevel("badger", "fatal")
	s, err = ledger.OpenBadger(dir, ledger.BadgerOptions{ReadOnly: true})
	switch {
	case err == nil:
		return s, nil
	case errors.Is(err, ledger.ErrStoreLocked):
		return nil, failf("%s is in use by another process (a running kernel holds the ledger; stop it, or ask the kernel)", dir)
	case errors.Is(err, ledger.ErrNeedsRecovery):
		return nil, failf("%s needs recovery, which read-only commands never do: it was not closed cleanly (let the kernel reopen it) or a file is damaged", dir)
	default:
		msg := strings.TrimPrefix(firstLine(err.Error()), "open ledger store")
		return nil, failf("%s", strings.TrimLeft(msg, ": "))
	}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// writeJSON prints v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func b64(h tlog.Hash) string { return base64.StdEncoding.EncodeToString(h[:]) }

// ---- verify ----

const verifyDoc = `
Verify recomputes every envelope CID, the prev chain, every body's CID
(a missing body must be on a redaction list), the Merkle tree against the
stored tiles and head, and every stored checkpoint's signature and root,
and checks that the genesis entry's metadata is the stored metadata. It
exits 0 when the ledger is sound and 1 with "ledger unsound at seq N:
reason" at the first bad entry. Progress goes to stderr when it is a
terminal, or with --progress.`

func runLedgerVerify(ctx context.Context, e *env, args []string) error {
	var lf ledgerFlags
	fs := ledgerFlagSet(e, "ledger verify", "ledger verify --data DIR [--key VKEY] [--json] [--progress]", verifyDoc, &lf)
	progress := fs.Bool("progress", false, "report progress on stderr even when it is not a terminal")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	l, closeFn, err := openLedger(ctx, &lf)
	if err != nil {
		return err
	}
	defer closeFn()
	var pf func(done, total int64)
	if *progress || isTerminal(e.stderr) {
		pf = func(done, total int64) {
			fmt.Fprintf(e.stderr, "\rverified %d of %d entries (%d%%)", done, total, 100*done/max(total, 1))
			if done == total {
				fmt.Fprintln(e.stderr)
			}
		}
	}
	rep, err := l.Verify(ctx, pf)
	if err == nil {
		err = checkGenesisMeta(ctx, l)
	}
	var ve *ledger.VerifyError
	if errors.As(err, &ve) {
		if lf.json {
			writeJSON(e.stdout, map[string]any{"sound": false, "seq": ve.Seq, "reason": ve.Reason})
		}
		return &exitError{code: 1, err: ve}
	}
	if err != nil {
		return failf("verify: %v", err)
	}
	m := l.Meta()
	if lf.json {
		return writeJSON(e.stdout, map[string]any{
			"sound": true, "size": rep.Size, "root": b64(rep.Root), "bodies": rep.Bodies,
			"redacted": rep.Redacted, "checkpoints": rep.Checkpoints, "origin": m.Origin, "verifier": m.Verifier,
		})
	}
	fmt.Fprintf(e.stdout, "ledger sound: %d entries\n", rep.Size)
	fmt.Fprintf(e.stdout, "root         %s\n", b64(rep.Root))
	fmt.Fprintf(e.stdout, "bodies       %d re-hashed to their CIDs\n", rep.Bodies)
	fmt.Fprintf(e.stdout, "redacted     %d (missing and on a redaction list)\n", rep.Redacted)
	fmt.Fprintf(e.stdout, "checkpoints  %d verified\n", rep.Checkpoints)
	fmt.Fprintf(e.stdout, "origin       %s\n", m.Origin)
	fmt.Fprintf(e.stdout, "verifier     %s\n", m.Verifier)
	return nil
}

// checkGenesisMeta checks that the genesis entry's params body, which the
// tree covers, is the metadata the checkpoint key was taken from.
func checkGenesisMeta(ctx context.Context, l *ledger.Ledger) error {
	r, err := l.Read(ctx, 0)
	if err != nil {
		return &ledger.VerifyError{Seq: 0, Reason: err.Error()}
	}
	var g ledger.Meta
	if err := json.Unmarshal(r.Params(), &g); err != nil {
		return &ledger.VerifyError{Seq: 0, Reason: "genesis metadata unreadable: " + err.Error()}
	}
	if g != l.Meta() {
		return &ledger.VerifyError{Seq: 0, Reason: fmt.Sprintf("the genesis entry names verifier %s, the stored metadata %s", g.Verifier, l.Meta().Verifier)}
	}
	return nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// ---- show ----

const showDoc = `
Show prints one entry, by seq or by envelope CID: its envelope fields and,
for each body, its CID, size and whether it is present, redacted (erased
and on a redaction list) or missing. --json prints the envelope as
standard dag-json, with the bodies alongside; --bodies adds each present
body's data in hex.`

func runLedgerShow(ctx context.Context, e *env, args []string) error {
	var lf ledgerFlags
	fs := ledgerFlagSet(e, "ledger show", "ledger show --data DIR [--json] [--bodies] SEQ|CID", showDoc, &lf)
	withBodies := fs.Bool("bodies", false, "print the data of each present body in hex")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want one SEQ or CID, got %d arguments", len(pos))
	}
	seq, c, err := parseSeqOrCID(pos[0])
	if err != nil {
		return err
	}
	l, closeFn, err := openLedger(ctx, &lf)
	if err != nil {
		return err
	}
	defer closeFn()
	if seq, err = seqOf(ctx, l, seq, c); err != nil {
		return err
	}
	r, err := readEntry(ctx, l, seq)
	if err != nil {
		return err
	}
	bodies, err := bodyStates(ctx, l, r, *withBodies)
	if err != nil {
		return err
	}
	if lf.json {
		envJSON, err := envelopeDAGJSON(r.Block)
		if err != nil {
			return failf("seq %d: envelope: %v", seq, err)
		}
		return writeJSON(e.stdout, map[string]any{
			"seq": seq, "cid": r.CID.String(), "envelope": json.RawMessage(envJSON), "bodies": bodies,
		})
	}
	env := r.Envelope
	w := e.stdout
	fmt.Fprintf(w, "seq       %d\n", env.Seq)
	fmt.Fprintf(w, "cid       %s\n", r.CID)
	fmt.Fprintf(w, "prev      %s\n", cidOrNone(env.Prev))
	fmt.Fprintf(w, "kind      %s\n", env.Kind)
	fmt.Fprintf(w, "time      %s (%d)\n", logicalTime(env.Time), env.Time)
	for _, f := range []struct{ name, v string }{
		{"actor", env.Actor}, {"device", env.Device}, {"subject", env.Subject},
		{"decision", string(env.Decision)}, {"reason", env.Reason},
	} {
		if f.v != "" {
			fmt.Fprintf(w, "%-9s %s\n", f.name, f.v)
		}
	}
	if env.Grant != 0 {
		fmt.Fprintf(w, "grant     %d\n", env.Grant)
	}
	if env.Interface != 0 {
		fmt.Fprintf(w, "iface     %#016x\n", env.Interface)
		fmt.Fprintf(w, "method    %d\n", env.Method)
	}
	if env.Ref != 0 {
		fmt.Fprintf(w, "ref       %d\n", env.Ref)
	}
	for _, b := range bodies {
		switch b.State {
		case "present":
			fmt.Fprintf(w, "%-9s %s  %d bytes (%d of data)  present\n", b.Role, b.CID, b.Size, b.DataSize)
			if *withBodies {
				for _, line := range strings.Split(strings.TrimRight(hex.Dump(b.data), "\n"), "\n") {
					fmt.Fprintf(w, "          %s\n", line)
				}
			}
		default:
			fmt.Fprintf(w, "%-9s %s  %s\n", b.Role, b.CID, b.State)
		}
	}
	return nil
}

// parseSeqOrCID reads a SEQ (a decimal number) or an envelope CID.
func parseSeqOrCID(s string) (uint64, cid.Cid, error) {
	if s != "" && strings.Trim(s, "0123456789") == "" {
		seq, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, cid.Undef, usagef("seq %s is out of range", s)
		}
		return seq, cid.Undef, nil
	}
	c, err := cid.Decode(s)
	if err != nil {
		return 0, cid.Undef, usagef("%q is neither a seq nor a CID", s)
	}
	return 0, c, nil
}

// seqOf returns the seq an argument named: seq itself, or the seq of the
// envelope with CID c when c is defined.
func seqOf(ctx context.Context, l *ledger.Ledger, seq uint64, c cid.Cid) (uint64, error) {
	if !c.Defined() {
		return seq, nil
	}
	seq, err := l.SeqOf(ctx, c)
	if errors.Is(err, ledger.ErrNotFound) {
		return 0, failf("no envelope with CID %s on this ledger", c)
	}
	if err != nil {
		return 0, failf("%v", err)
	}
	return seq, nil
}

// envelopeDAGJSON returns an envelope block in the standard dag-json form,
// as go-ipld-prime's codec writes it (keys sorted, links as {"/": cid}).
func envelopeDAGJSON(block []byte) ([]byte, error) {
	nb := basicnode.Prototype.Any.NewBuilder()
	if err := dagcbor.Decode(nb, bytes.NewReader(block)); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := dagjson.Encode(nb.Build(), &buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// readEntry reads the entry at seq, turning a seq beyond the end into a
// one-line failure.
func readEntry(ctx context.Context, l *ledger.Ledger, seq uint64) (*ledger.Record, error) {
	if size := l.Size(); int64(seq) >= size || int64(seq) < 0 {
		return nil, failf("no entry at seq %d: the ledger holds seqs 0 to %d", seq, size-1)
	}
	r, err := l.Read(ctx, seq)
	if err != nil {
		return nil, failf("read seq %d: %v", seq, err)
	}
	return r, nil
}

// bodyState describes one body an envelope links.
type bodyState struct {
	Role     string `json:"role"`
	CID      string `json:"cid"`
	State    string `json:"state"` // present, redacted or missing
	Size     int    `json:"size,omitempty"`
	DataSize int    `json:"data_size,omitempty"`
	Data     string `json:"data,omitempty"` // hex, with --bodies
	data     []byte
}

func bodyStates(ctx context.Context, l *ledger.Ledger, r *ledger.Record, withData bool) ([]bodyState, error) {
	var out []bodyState
	var redacted map[string]bool
	for _, b := range []struct {
		role  string
		link  cid.Cid
		block []byte
	}{{"params", r.Envelope.Params, r.ParamsBlock}, {"result", r.Envelope.Result, r.ResultBlock}} {
		if !b.link.Defined() {
			continue
		}
		st := bodyState{Role: b.role, CID: b.link.String()}
		if b.block != nil {
			st.State, st.Size = "present", len(b.block)
			data, err := ledger.DecodeBody(b.block)
			if err != nil {
				return nil, failf("seq %d: %s body: %v", r.Envelope.Seq, b.role, err)
			}
			st.DataSize, st.data = len(data), data
			if withData {
				st.Data = hex.EncodeToString(data)
			}
		} else {
			if redacted == nil {
				var err error
				if redacted, err = redactedBodies(ctx, l); err != nil {
					return nil, err
				}
			}
			st.State = "missing"
			if redacted[fmt.Sprintf("%d %s", r.Envelope.Seq, b.link)] {
				st.State = "redacted"
			}
		}
		out = append(out, st)
	}
	return out, nil
}

// redactedBodies lists the bodies every redaction entry names, as "seq cid".
func redactedBodies(ctx context.Context, l *ledger.Ledger) (map[string]bool, error) {
	var seqs []uint64
	if err := l.Lookup(ctx, ledger.ByKind, string(ledger.KindRedaction), 0, uint64(l.Size()), func(s uint64) bool {
		seqs = append(seqs, s)
		return true
	}); err != nil {
		return nil, failf("read redactions: %v", err)
	}
	out := map[string]bool{}
	for _, s := range seqs {
		r, err := l.Read(ctx, s)
		if err != nil {
			return nil, failf("read redaction at seq %d: %v", s, err)
		}
		var red ledger.Redaction
		if err := json.Unmarshal(r.Params(), &red); err != nil {
			return nil, failf("redaction at seq %d: %v", s, err)
		}
		for _, b := range red.Removed {
			if c, err := cid.Decode(b.CID); err == nil {
				out[fmt.Sprintf("%d %s", b.Seq, c)] = true
			}
		}
	}
	return out, nil
}

func cidOrNone(c cid.Cid) string {
	if !c.Defined() {
		return "none"
	}
	return c.String()
}

// logicalTime formats an entry's logical time (ns since the Unix epoch).
func logicalTime(t int64) string {
	return time.Unix(0, t).UTC().Format(time.RFC3339Nano)
}

// ---- tail ----

const tailDoc = `
Tail prints the last N entries, one line each: seq, kind, actor, device,
decision and logical time ("-" for an empty field); --json prints one JSON
object per line. -f follows the ledger: it reopens it read-only every
--interval and prints the entries added since. A running kernel holds the
ledger's lock, and -f does not bypass it (Badger v1.6 cannot be read safely
under a live writer): tail -f follows a ledger no process holds, and stops
with a one-line error when a kernel takes it. Following a live kernel will
go through the kernel's watch over Cap'n Proto.`

func runLedgerTail(ctx context.Context, e *env, args []string) error {
	var lf ledgerFlags
	fs := ledgerFlagSet(e, "ledger tail", "ledger tail --data DIR [-n N] [-f [--interval D]] [--json]", tailDoc, &lf)
	n := fs.Int("n", 10, "print the last `N` entries")
	follow := fs.Bool("f", false, "follow: keep printing entries as they are added")
	interval := fs.Duration("interval", time.Second, "how often -f reopens the ledger")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	if *n < 0 {
		return usagef("-n %d: want 0 or more", *n)
	}
	if *interval <= 0 {
		return usagef("--interval %v: want a positive duration", *interval)
	}
	t := &tailer{e: e, lf: &lf}
	size, err := t.print(ctx, -int64(*n))
	if err != nil || !*follow {
		return err
	}
	tick := time.NewTicker(*interval)
	defer tick.Stop()
	return t.follow(ctx, size, tick.C)
}

// tailer prints entries of a ledger it reopens each time.
type tailer struct {
	e  *env
	lf *ledgerFlags
	// handled, if set, is called after each tick is handled (for tests).
	handled func()
}

// print opens the ledger, prints the entries from seq from (or the last
// -from entries when from is negative) to the end, closes it and returns
// its size.
func (t *tailer) print(ctx context.Context, from int64) (int64, error) {
	l, closeFn, err := openLedger(ctx, t.lf)
	if err != nil {
		return 0, err
	}
	defer closeFn()
	size := l.Size()
	if from < 0 {
		from = max(size+from, 0)
	}
	for seq := from; seq < size; seq++ {
		r, err := l.Read(ctx, uint64(seq))
		if err != nil {
			return 0, failf("read seq %d: %v", seq, err)
		}
		if err := t.line(r.Envelope); err != nil {
			return 0, err
		}
	}
	return max(size, from), nil
}

func (t *tailer) line(env *ledger.Envelope) error {
	if t.lf.json {
		b, err := json.Marshal(map[string]any{
			"seq": env.Seq, "kind": env.Kind, "actor": env.Actor, "device": env.Device,
			"decision": env.Decision, "time": logicalTime(env.Time),
		})
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(t.e.stdout, "%s\n", b)
		return err
	}
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	_, err := fmt.Fprintf(t.e.stdout, "%d %s %s %s %s %s\n", env.Seq, env.Kind, dash(env.Actor), dash(env.Device), dash(string(env.Decision)), logicalTime(env.Time))
	return err
}

// follow prints new entries from size on, reopening the ledger at each
// tick, until ctx ends (a clean exit) or the ledger cannot be opened.
func (t *tailer) follow(ctx context.Context, size int64, tick <-chan time.Time) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-tick:
			if !ok {
				return nil
			}
		}
		next, err := t.print(ctx, size)
		if t.handled != nil {
			t.handled()
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		size = next
	}
}

// ---- proof ----

const proofDoc = `
Proof prints the inclusion proof of the entry at SEQ in the tree of a
stored signed checkpoint (the newest one, or the one of --size N): the
entry's envelope CID and leaf hash, the proof's hashes (base64, one per
line) and the checkpoint note. It checks the proof with tlog.CheckRecord
against the checkpoint's root before printing it.`

func runLedgerProof(ctx context.Context, e *env, args []string) error {
	var lf ledgerFlags
	fs := ledgerFlagSet(e, "ledger proof", "ledger proof --data DIR [--size N] [--json] SEQ", proofDoc, &lf)
	size := fs.Int64("size", 0, "prove against the stored checkpoint of tree size `N` (default: the newest)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want one SEQ, got %d arguments", len(pos))
	}
	seq, c, err := parseSeqOrCID(pos[0])
	if err != nil {
		return err
	}
	l, closeFn, err := openLedger(ctx, &lf)
	if err != nil {
		return err
	}
	defer closeFn()
	if seq, err = seqOf(ctx, l, seq, c); err != nil {
		return err
	}
	r, err := readEntry(ctx, l, seq)
	if err != nil {
		return err
	}
	cp, err := pickCheckpoint(ctx, l, *size)
	if err != nil {
		return err
	}
	if int64(seq) >= cp.Size {
		return failf("seq %d is not in the checkpoint of size %d (sign a newer one, or wait for it)", seq, cp.Size)
	}
	proof, err := l.ProveInclusion(seq, cp.Size)
	if err != nil {
		return failf("prove seq %d: %v", seq, err)
	}
	leaf := ledger.LeafHash(r.CID)
	if err := tlog.CheckRecord(proof, cp.Size, cp.Root, int64(seq), leaf); err != nil {
		return failf("the proof of seq %d does not verify against the checkpoint of size %d: %v", seq, cp.Size, err)
	}
	hashes := make([]string, len(proof))
	for i, h := range proof {
		hashes[i] = b64(h)
	}
	if lf.json {
		return writeJSON(e.stdout, map[string]any{
			"seq": seq, "cid": r.CID.String(), "leaf": b64(leaf), "size": cp.Size, "root": b64(cp.Root),
			"hashes": hashes, "bytes": len(proof) * tlog.HashSize, "checkpoint": string(cp.Note), "verified": true,
		})
	}
	w := e.stdout
	fmt.Fprintf(w, "seq         %d\n", seq)
	fmt.Fprintf(w, "cid         %s\n", r.CID)
	fmt.Fprintf(w, "leaf        %s\n", b64(leaf))
	fmt.Fprintf(w, "tree size   %d\n", cp.Size)
	fmt.Fprintf(w, "root        %s\n", b64(cp.Root))
	fmt.Fprintf(w, "proof       %d hashes, %d bytes (bound 32·⌈log2 %d⌉ = %d)\n", len(proof), len(proof)*tlog.HashSize, cp.Size, 32*ceilLog2(cp.Size))
	for _, h := range hashes {
		fmt.Fprintf(w, "  %s\n", h)
	}
	fmt.Fprintf(w, "verified    tlog.CheckRecord against the checkpoint\n\n%s", cp.Note)
	return nil
}

func ceilLog2(n int64) int {
	if n <= 1 {
		return 0
	}
	return bits.Len64(uint64(n - 1))
}

// pickCheckpoint returns the stored checkpoint of the given size, or the
// newest one for size 0.
func pickCheckpoint(ctx context.Context, l *ledger.Ledger, size int64) (*ledger.Checkpoint, error) {
	cps, err := l.Checkpoints(ctx)
	if err != nil {
		return nil, failf("checkpoints: %v", err)
	}
	if len(cps) == 0 {
		return nil, failf("no signed checkpoint is stored yet (the kernel stores one every 65536 entries and when it closes the ledger)")
	}
	if size == 0 {
		return cps[len(cps)-1], nil
	}
	for _, cp := range cps {
		if cp.Size == size {
			return cp, nil
		}
	}
	return nil, failf("no stored checkpoint of size %d (there are %d, the newest of size %d; see osmose ledger checkpoint --all)", size, len(cps), cps[len(cps)-1].Size)
}

// ---- checkpoint ----

const checkpointDoc = `
Checkpoint prints the newest stored signed checkpoint, a C2SP
tlog-checkpoint note, exactly as stored (--all: every stored one, oldest
first, separated by blank lines). Each is verified against the ledger's key
(or --key) first.`

func runLedgerCheckpoint(ctx context.Context, e *env, args []string) error {
	var lf ledgerFlags
	fs := ledgerFlagSet(e, "ledger checkpoint", "ledger checkpoint --data DIR [--all] [--json]", checkpointDoc, &lf)
	all := fs.Bool("all", false, "print every stored checkpoint")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	l, closeFn, err := openLedger(ctx, &lf)
	if err != nil {
		return err
	}
	defer closeFn()
	cps, err := l.Checkpoints(ctx)
	if err != nil {
		return failf("checkpoints: %v", err)
	}
	if len(cps) == 0 {
		return failf("no signed checkpoint is stored yet")
	}
	if !*all {
		cps = cps[len(cps)-1:]
	}
	type cpJSON struct {
		Origin string `json:"origin"`
		Size   int64  `json:"size"`
		Root   string `json:"root"`
		Note   string `json:"note"`
	}
	var js []cpJSON
	for i, cp := range cps {
		if lf.json {
			js = append(js, cpJSON{cp.Origin, cp.Size, b64(cp.Root), string(cp.Note)})
			continue
		}
		if i > 0 {
			fmt.Fprintln(e.stdout)
		}
		e.stdout.Write(cp.Note)
	}
	switch {
	case !lf.json:
		return nil
	case *all:
		return writeJSON(e.stdout, js)
	default:
		return writeJSON(e.stdout, js[0])
	}
}

// ---- export ----

const exportDoc = `
Export writes the ledger to FILE as a CARv1 that standard IPLD tools read
(go-car, js @ipld/car, ipfs dag import): every envelope and every present
body block under its CID, each stored checkpoint note as a raw block, and,
as the CAR's one root, an index block (dag-cbor: v, head, root, size,
origin, verifier, checkpoints) whose head link chains back to genesis
through the envelopes' prev links. The file is written beside FILE under a
temporary name and renamed into place only when complete; an existing FILE
is replaced.`

func runLedgerExport(ctx context.Context, e *env, args []string) error {
	var lf ledgerFlags
	fs := ledgerFlagSet(e, "ledger export", "ledger export --data DIR --car FILE [--json]", exportDoc, &lf)
	carPath := fs.String("car", "", "write the CAR to `FILE`")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	if *carPath == "" {
		return usagef("--car FILE is required")
	}
	if fi, err := os.Stat(*carPath); err == nil && fi.IsDir() {
		return failf("%s is a directory", *carPath)
	}
	l, closeFn, err := openLedger(ctx, &lf)
	if err != nil {
		return err
	}
	defer closeFn()
	f, err := os.CreateTemp(filepath.Dir(*carPath), "."+filepath.Base(*carPath)+".*.tmp")
	if err != nil {
		return failf("export: %v", err)
	}
	tmp := f.Name()
	x, err := l.ExportCAR(ctx, f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, *carPath)
	}
	if err != nil {
		os.Remove(tmp)
		var ve *ledger.VerifyError
		if errors.As(err, &ve) {
			return &exitError{code: 1, err: fmt.Errorf("export stopped: %w", ve)}
		}
		return failf("export: %v", err)
	}
	if lf.json {
		return writeJSON(e.stdout, map[string]any{
			"car": *carPath, "root": x.Root.String(), "head": x.Head.String(), "size": x.Size,
			"tree_root": b64(x.TreeRoot), "bodies": x.Bodies, "absent": x.Absent,
			"checkpoints": x.Checkpoints, "blocks": x.Blocks, "bytes": x.Bytes,
		})
	}
	fmt.Fprintf(e.stdout, "wrote %s: %d entries, %d bodies (%d erased), %d checkpoints; %d blocks, %d bytes\nroot %s (index), head %s\n",
		*carPath, x.Size, x.Bodies, x.Absent, x.Checkpoints, x.Blocks, x.Bytes, x.Root, x.Head)
	return nil
}
