package main

// osmose forget and osmose people end to end: testscript files under
// testdata/forget, with the fixtures they need.

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/osmose-os/osmose/ledger"
)

func TestForgetScript(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/forget",
		RequireExplicitExec: true,
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"mkpeople": cmdMkpeople,
			"ondisk":   cmdOndisk,
			"cpdir":    cmdCpdir,
			"tamper":   cmdTamper,
			"dirsum":   cmdDirsum,
			"holdlock": cmdHoldlock,
			"unlock":   cmdUnlock,
		},
	})
}

// mkpeople DIR: a data directory DIR with a kernel key (DIR/kernel.key)
// and a ledger of 101 entries: 30 naming alice@example.org (15 with
// bodies, 25 body blocks), 20 naming bob@example.org (10 with bodies),
// 10 naming carol@example.org (all with bodies), whose every body carries
// the marker MARKER-<name>-7f3a, and 40 without a subject; an entry
// without bodies has the reason note-<seq in four digits>. Sets $ALICE,
// $BOB and $CAROL to the pseudonyms.
func cmdMkpeople(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: mkpeople DIR")
	}
	ctx := context.Background()
	data := ts.MkAbs(args[0])
	key := testLedgerKey(1)
	ts.Check(os.MkdirAll(data, 0o755))
	ts.Check(os.WriteFile(filepath.Join(data, "kernel.key"), key.Seed(), 0o600))
	s, err := ledger.OpenBadger(filepath.Join(data, "ledger"), ledger.BadgerOptions{})
	ts.Check(err)
	defer s.Close()
	l, err := ledger.Open(ctx, s, ledger.Options{
		Key: key, Origin: "osmose/test", CheckpointEvery: 16, GenesisTime: 1_700_000_000_000_000_000,
		Rand: rand.NewChaCha8([32]byte{6}),
	})
	ts.Check(err)
	people := []struct{ name, env string }{{"alice", "ALICE"}, {"bob", "BOB"}, {"carol", "CAROL"}}
	pseudonyms := make([]string, len(people))
	for i, p := range people {
		pseudonyms[i], err = l.Pseudonym(ctx, p.name+"@example.org")
		ts.Check(err)
		ts.Setenv(p.env, pseudonyms[i])
	}
	for i := 1; i <= 100; i++ {
		e := ledger.Entry{Kind: ledger.KindCall, Actor: "dev:door", Device: "b/f1/door", Decision: ledger.DecisionAdmit,
			Time: 1_700_000_000_000_000_000 + int64(i)*1_000_000}
		who := -1
		switch {
		case i <= 30:
			who = 0
		case i <= 50:
			who = 1
		case i <= 60:
			who = 2
		}
		if who >= 0 && i%2 == 0 || who >= 0 && i > 50 {
			marker := fmt.Sprintf("MARKER-%s-7f3a", people[who].name)
			e.Subject = pseudonyms[who]
			e.Params = []byte(marker + " badge in")
			if i%3 != 0 {
				e.Result = []byte(marker + " welcome " + strings.Repeat("*", i))
			}
		} else if who >= 0 {
			e.Subject = pseudonyms[who] // an entry naming the subject, without bodies
			e.Decision, e.Reason = ledger.DecisionDeny, fmt.Sprintf("note-%04d", i)
		} else {
			e.Reason, e.Params = fmt.Sprintf("note-%04d", i), []byte("light on")
		}
		_, _, err := l.Commit(ctx, e)
		ts.Check(err)
	}
	ts.Check(l.Close())
}

// ondisk DIR STRING succeeds when STRING is in some file under DIR;
// ! ondisk succeeds when it is in none.
func cmdOndisk(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: ondisk DIR STRING")
	}
	var where []string
	ts.Check(filepath.WalkDir(ts.MkAbs(args[0]), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if n := bytes.Count(b, []byte(args[1])); n > 0 {
			where = append(where, fmt.Sprintf("%s (%d)", filepath.Base(p), n))
		}
		return nil
	}))
	switch {
	case neg && len(where) > 0:
		ts.Fatalf("%q is on disk: %s", args[1], strings.Join(where, ", "))
	case !neg && len(where) == 0:
		ts.Fatalf("%q is in no file under %s", args[1], args[0])
	}
	if len(where) > 0 {
		ts.Logf("%q in %s", args[1], strings.Join(where, ", "))
	}
}
