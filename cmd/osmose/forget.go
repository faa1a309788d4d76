package main

// The data-protection officer's tools: osmose forget and osmose people.

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/osmose-os/osmose/ledger"
)

const forgetDoc = `
Forget erases one data subject from the ledger in DIR/ledger: every body
that carries the subject's data is removed from the store and its bytes
are overwritten on disk, the subject's salt secret and the mapping from
its id to its pseudonym are destroyed, and a redaction entry, signed with
the kernel's key, lists the removed bodies by seq and CID without naming
the subject. The envelopes, the Merkle tree and every checkpoint stay
byte-identical: osmose ledger verify passes before and after.

--subject is the pseudonym osmose people lists, or the subject's own id.

It first verifies the whole ledger read-only: a ledger that does not
verify is reported and not changed. Then it opens the ledger with the
kernel's signing key (DIR/kernel.key, or --key-file), which a running
kernel holds: stop the kernel first. An erasure interrupted by a crash is
completed by the next forget. It prints what was removed, the redaction
entry's seq and the time each step took.`

// forgetTimings are the durations of a forget's steps.
type forgetTimings struct {
	Verify, Open, Erasure time.Duration
	Steps                 []stepTiming // the erasure's, in order
}

type stepTiming struct {
	step ledger.ForgetStep
	d    time.Duration
}

func runForget(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "forget", "forget --data DIR --subject ID [--json]")
	data := fs.String("data", "", "the kernel's data `DIR` (the ledger is DIR/ledger, the signing key DIR/kernel.key)")
	subject := fs.String("subject", "", "the data subject: a pseudonym (see osmose people) or the subject's own `ID`")
	keyFile := fs.String("key-file", "", "the kernel's signing key `FILE` (a 32-byte ed25519 seed; default DIR/kernel.key)")
	actor := fs.String("actor", "operator", "the principal recorded as asking for the erasure")
	asJSON := fs.Bool("json", false, "machine-readable output (JSON)")
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "usage: osmose forget --data DIR --subject ID [--json]\n\n%s\n\nFlags:\n", strings.TrimSpace(forgetDoc))
		fs.PrintDefaults()
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	if *subject == "" {
		return usagef("--subject ID is required")
	}
	dir, err := ledgerStoreDir(*data)
	if err != nil {
		return err
	}
	if *keyFile == "" {
		*keyFile = filepath.Join(filepath.Dir(dir), "kernel.key")
	}
	key, err := readSigningKey(*keyFile)
	if err != nil {
		return err
	}

	// 1. Verify, read-only: a ledger that does not verify is not touched.
	var tm forgetTimings
	t0 := time.Now()
	vrep, origin, err := verifyBeforeForget(ctx, e, dir, key)
	if err != nil {
		return err
	}
	tm.Verify = time.Since(t0)

	// 2. Open with the key and erase.
	t0 = time.Now()
	store, err := ledger.OpenBadger(dir, ledger.BadgerOptions{})
	switch {
	case errors.Is(err, ledger.ErrStoreLocked):
		return failf("%s is in use by another process (a running kernel holds the ledger; stop it first)", dir)
	case err != nil:
		return failf("%v", err)
	}
	l, err := ledger.Open(ctx, store, ledger.Options{Key: key, Origin: origin})
	if err != nil {
		store.Close()
		return failf("%s: %v", dir, strings.TrimPrefix(err.Error(), "open ledger: "))
	}
	tm.Open = time.Since(t0)
	t0 = time.Now()
	last := t0
	rep, ferr := l.Forget(ctx, *subject, ledger.ForgetOptions{
		Time:  time.Now().UnixNano(),
		Actor: *actor,
		Progress: func(step ledger.ForgetStep, done, total int) {
			if done == total {
				now := time.Now()
				tm.Steps = append(tm.Steps, stepTiming{step, now.Sub(last)})
				last = now
			}
		},
	})
	tm.Erasure = time.Since(t0)
	size := l.Size()
	cerr := l.Close()
	if err := store.Close(); cerr == nil {
		cerr = err
	}
	switch {
	case ferr != nil:
		msg := strings.TrimPrefix(ferr.Error(), "forget: ")
		if errors.Is(ferr, ledger.ErrUnknownSubject) || errors.Is(ferr, ledger.ErrForgotten) {
			return failf("%s; nothing was changed", msg)
		}
		return failf("%s", msg)
	case cerr != nil:
		return failf("close the ledger after the erasure: %v", cerr)
	}
	if *asJSON {
		steps := map[string]float64{"verify": ms(tm.Verify), "open": ms(tm.Open), "erasure": ms(tm.Erasure)}
		for _, s := range tm.Steps {
			steps[string(s.step)] = ms(s.d)
		}
		return writeJSON(e.stdout, map[string]any{
			"erasure": rep, "size": size, "verified_entries": vrep.Size, "timings_ms": steps,
		})
	}
	w := e.stdout
	if rep.Resumed {
		fmt.Fprintf(w, "completed the interrupted erasure of %s\n", rep.Pseudonym)
	}
	fmt.Fprintf(w, "forgot %s: the bodies of %d entries removed (%d body blocks); its secret and mapping destroyed\n", rep.Pseudonym, rep.Entries, len(rep.Removed))
	switch len(rep.Redactions) {
	case 0:
		fmt.Fprintln(w, "redaction    none (the subject had no bodies)")
	case 1:
		fmt.Fprintf(w, "redaction    entry at seq %d lists them\n", rep.Redactions[0])
	default:
		fmt.Fprintf(w, "redaction    entries at seqs %s list them\n", joinSeqs(rep.Redactions))
	}
	if rep.ValueLog {
		fmt.Fprintf(w, "store        %d keys deleted; %d value-log records (%d bytes) overwritten\n", rep.Keys, rep.Scrubbed, rep.ScrubbedBytes)
	} else {
		fmt.Fprintf(w, "store        %d keys deleted\n", rep.Keys)
	}
	if rep.Unlocated > 0 {
		fmt.Fprintf(w, "warning      %d values were stored inline by an older format: their keys are deleted, but a copy may remain in the value log\n", rep.Unlocated)
	}
	fmt.Fprintf(w, "ledger       %d entries; %d verified before the erasure\n", size, vrep.Size)
	var b strings.Builder
	for _, s := range tm.Steps {
		fmt.Fprintf(&b, ", %s %s", s.step, round(s.d))
	}
	fmt.Fprintf(w, "timings      verify %s, open %s; erasure %s (%s)\n", round(tm.Verify), round(tm.Open), round(tm.Erasure), strings.TrimPrefix(b.String(), ", "))
	return nil
}

// verifyBeforeForget verifies the ledger read-only and checks that key is
// the one its checkpoints are signed with; it returns the report and the
// ledger's origin.
func verifyBeforeForget(ctx context.Context, e *env, dir string, key ed25519.PrivateKey) (*ledger.VerifyReport, string, error) {
	store, err := openBadgerReadOnly(dir)
	if err != nil {
		return nil, "", err
	}
	defer store.Close()
	l, err := ledger.Open(ctx, store, ledger.Options{})
	if err != nil {
		return nil, "", failf("%s: %v", dir, strings.TrimPrefix(err.Error(), "open ledger: "))
	}
	defer l.Close()
	m := l.Meta()
	if vk, err := ledger.VerifierKey(m.Origin, key.Public().(ed25519.PublicKey)); err != nil || vk != m.Verifier {
		return nil, "", failf("the signing key is not the one this ledger's checkpoints are signed with (%s); nothing was changed", m.Verifier)
	}
	var pf func(done, total int64)
	if isTerminal(e.stderr) {
		pf = func(done, total int64) {
			fmt.Fprintf(e.stderr, "\rverifying before the erasure: %d of %d entries (%d%%)", done, total, 100*done/max(total, 1))
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
		return nil, "", failf("the ledger does not verify (%v); forget changes nothing on a ledger that does not verify (see osmose ledger verify)", ve)
	}
	if err != nil {
		return nil, "", failf("verify: %v", err)
	}
	return rep, m.Origin, nil
}

// readSigningKey reads the kernel's ed25519 seed; unlike serve, it never
// creates one.
func readSigningKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, failf("no signing key at %s: forget appends a redaction entry signed with the kernel's key (give it with --key-file)", path)
	case err != nil:
		return nil, failf("read the signing key: %v", err)
	case len(b) != ed25519.SeedSize:
		return nil, failf("%s: %d bytes, want a %d-byte ed25519 seed", path, len(b), ed25519.SeedSize)
	}
	return ed25519.NewKeyFromSeed(b), nil
}

func joinSeqs(seqs []uint64) string {
	s := make([]string, len(seqs))
	for i, q := range seqs {
		s[i] = fmt.Sprint(q)
	}
	return strings.Join(s, ", ")
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func round(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

// ---- people ----

const peopleDoc = `
People lists the ledger's data subjects by pseudonym, with the number of
entries that name each and its state: live, forgotten (its bodies removed,
its secret and mapping destroyed; its envelopes stay), or erasing (an
erasure was interrupted: re-run osmose forget to complete it). The ledger
holds no subject's id, only pseudonyms. It opens the ledger read-only.`

func runPeople(ctx context.Context, e *env, args []string) error {
	var lf ledgerFlags
	fs := ledgerFlagSet(e, "people", "people --data DIR [--json]", peopleDoc, &lf)
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
	subs, err := l.Subjects(ctx)
	if err != nil {
		return failf("%v", err)
	}
	if lf.json {
		return writeJSON(e.stdout, map[string]any{"size": l.Size(), "subjects": subs})
	}
	counts := map[string]int{}
	for _, s := range subs {
		counts[s.State]++
	}
	fmt.Fprintf(e.stdout, "%d data subjects on a ledger of %d entries: %d live, %d forgotten\n", len(subs), l.Size(), counts[ledger.SubjectLive], counts[ledger.SubjectForgotten])
	if len(subs) == 0 {
		return nil
	}
	fmt.Fprintf(e.stdout, "%-20s %8s  %s\n", "PSEUDONYM", "ENTRIES", "STATE")
	for _, s := range subs {
		fmt.Fprintf(e.stdout, "%-20s %8d  %s\n", s.Pseudonym, s.Entries, s.State)
		if s.State == ledger.SubjectErasing {
			defer fmt.Fprintf(e.stderr, "osmose people: the erasure of %s was interrupted; complete it with osmose forget --data %s --subject %s\n", s.Pseudonym, lf.data, s.Pseudonym)
		}
	}
	return nil
}
