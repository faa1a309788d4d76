package main

// The fixtures of the replay and state scripts (testdata/script/replay.txtar).

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/osmose-os/osmose/internal/replay/replaytest"
	"github.com/osmose-os/osmose/ledger"
)

// mkreplay DIR: a data directory DIR whose ledger a real kernel wrote in
// two runs (replaytest.Story: delegations, refusals, a cascading
// revocation, a release, presence, a policy change, a restart); sets
// $DENIED, $REVOKE, $RELEASE, $LEAVE, $FORGET, $POLICY, $RESTART and
// $END to the seqs of its marks, $BEFORE_REVOKE to the seq before the
// revocation and $BEFORE_FORGET to the seq before the forgotten person's
// logout.
func cmdMkreplay(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: mkreplay DIR")
	}
	marks, err := replaytest.Story(context.Background(), ts.MkAbs(args[0]))
	ts.Check(err)
	for k, v := range marks {
		ts.Setenv(strings.ToUpper(k), fmt.Sprint(v))
	}
	ts.Setenv("BEFORE_REVOKE", fmt.Sprint(marks["revoke"]-1))
	ts.Setenv("BEFORE_FORGET", fmt.Sprint(marks["forget"]-2))
}

// forge SRC DST SEQ FIELD=VALUE...: DST is a copy of the ledger of SRC,
// re-signed with its kernel key, whose entry SEQ has the fields given
// changed (decision=admit|deny, reason=TEXT, grant=N).
func cmdForge(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 4 {
		ts.Fatalf("usage: forge SRC DST SEQ FIELD=VALUE...")
	}
	seq, err := strconv.ParseUint(args[2], 10, 64)
	ts.Check(err)
	ts.Check(replaytest.Forge(context.Background(), ts.MkAbs(args[0]), ts.MkAbs(args[1]), seq, func(e *ledger.Entry) error {
		for _, a := range args[3:] {
			k, v, _ := strings.Cut(a, "=")
			switch k {
			case "decision":
				e.Decision = ledger.Decision(v)
				if v == "admit" {
					e.Reason = ""
				}
			case "reason":
				e.Reason = v
			case "grant":
				n, err := strconv.ParseUint(v, 10, 64)
				if err != nil {
					return err
				}
				e.Grant = n
			default:
				return fmt.Errorf("forge: unknown field %q", k)
			}
		}
		return nil
	}))
}
