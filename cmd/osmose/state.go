package main

// osmose state and osmose state diff: time travel on a ledger, by replay
// (internal/replay).

import (
	"context"
	"fmt"

	"github.com/osmose-os/osmose/internal/replay"
)

const stateDoc = `
State replays the ledger from genesis up to and including the entry at
--at SEQ (default: the last) and prints the kernel's state after it: the
grants live then (holder, target, methods, caveats, the chain of grants it
was delegated from, the entry that made it), who was where (people by
their ledger pseudonyms), the principals logged in, and each device's
state: what its replayed driver reports (with --drivers sim), the last
reading or button event it reported, and the last call admitted on it.
The replay checks every entry on the way, as osmose replay does, and
stops at the first divergence (exit 1).`

const stateDiffDoc = `
State diff replays the ledger up to seq A, then on to seq B (A <= B), and
prints what changed between the two states: grants made and ended (and
how: revoked, released, expired, kernel restarted), people entering and
leaving places, sessions opened and closed, device states, reports and
calls, and a policy change. Every entry on the way is checked, as osmose
replay does.`

func runState(ctx context.Context, e *env, args []string) error {
	var rf replayFlags
	fs := ledgerFlagSet(e, "state", "state --data DIR [--at SEQ] [--drivers sim|none] [--json]", stateDoc, &rf.ledgerFlags)
	at := fs.String("at", "", "the state after the entry at `SEQ` (default: the last)")
	rf.register(fs)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q (state diff takes two seqs: osmose state diff --data DIR A B)", pos[0])
	}
	o, err := rf.options(e)
	if err != nil {
		return err
	}
	rp, closeFn, err := openReplay(ctx, &rf, o)
	if err != nil {
		return err
	}
	defer closeFn()
	seq := rp.Size() - 1
	if *at != "" {
		if seq, err = parseSeq("--at", *at, rp.Size()); err != nil {
			return err
		}
	}
	st, err := stateAt(ctx, rp, seq)
	if err != nil {
		return err
	}
	if rf.json {
		return writeJSON(e.stdout, st)
	}
	fmt.Fprint(e.stdout, st.Text())
	return nil
}

// stateAt replays up to seq and returns the state there.
func stateAt(ctx context.Context, rp *replay.Replay, seq uint64) (*replay.State, error) {
	if err := rp.Advance(ctx, seq); err != nil {
		return nil, replayFailure(err)
	}
	st, err := rp.State(ctx)
	if err != nil {
		return nil, failf("state at seq %d: %v", seq, err)
	}
	return st, nil
}

func runStateDiff(ctx context.Context, e *env, args []string) error {
	var rf replayFlags
	fs := ledgerFlagSet(e, "state diff", "state diff --data DIR [--drivers sim|none] [--json] A B", stateDiffDoc, &rf.ledgerFlags)
	rf.register(fs)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usagef("want two seqs A and B, got %d arguments", len(pos))
	}
	o, err := rf.options(e)
	if err != nil {
		return err
	}
	rp, closeFn, err := openReplay(ctx, &rf, o)
	if err != nil {
		return err
	}
	defer closeFn()
	a, err := parseSeq("A", pos[0], rp.Size())
	if err != nil {
		return err
	}
	b, err := parseSeq("B", pos[1], rp.Size())
	if err != nil {
		return err
	}
	if a > b {
		return usagef("A (%d) is after B (%d)", a, b)
	}
	sa, err := stateAt(ctx, rp, a)
	if err != nil {
		return err
	}
	sb, err := stateAt(ctx, rp, b)
	if err != nil {
		return err
	}
	d := replay.Compare(sa, sb)
	if rf.json {
		return writeJSON(e.stdout, d)
	}
	fmt.Fprint(e.stdout, d.Text())
	return nil
}
