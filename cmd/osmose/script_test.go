package main

// The binary end to end: testscript txtar files under testdata/script.
// TestMain makes this test binary the osmose command for the scripts, and
// the custom commands below build the fixtures the scripts need (ledger
// directories, tampered copies, a held lock) in Go.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"testing"

	ds "github.com/ipfs/go-datastore"
	carv2 "github.com/ipld/go-car/v2"
	"github.com/rogpeppe/go-internal/testscript"

	"github.com/osmose-os/osmose/ledger"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"osmose": func() {
			os.Exit(runMain(context.Background(), &env{stdout: os.Stdout, stderr: os.Stderr}, os.Args[1:]))
		},
	})
}

func TestScript(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"mkledger": cmdMkledger,
			"mkbadger": cmdMkbadger,
			"cpdir":    cmdCpdir,
			"tamper":   cmdTamper,
			"truncate": cmdTruncate,
			"dirsum":   cmdDirsum,
			"holdlock": cmdHoldlock,
			"unlock":   cmdUnlock,
			"carcheck": cmdCarcheck,
			"cidof":    cmdCidof,
			"mkcaps":   cmdMkcaps,
			"mkreplay": cmdMkreplay,
			"forge":    cmdForge,
		},
	})
}

// testLedgerKey is the signing key of the scripts' ledgers.
func testLedgerKey(seed byte) ed25519.PrivateKey {
	var s [32]byte
	s[0] = seed
	return ed25519.NewKeyFromSeed(s[:])
}

// makeTestLedger creates a ledger of n entries (the genesis included) in
// the data directory data (its store is data/ledger): grants, typical
// calls, calls carrying a data subject's bodies, and calls without
// bodies; each entry's reason is "note-" and its seq in four digits, so a
// script can find its bytes. It stores a checkpoint every 16 entries and
// closes the ledger, which stores a final one.
func makeTestLedger(data string, n int) (verifier string, err error) {
	ctx := context.Background()
	s, err := ledger.OpenBadger(filepath.Join(data, "ledger"), ledger.BadgerOptions{})
	if err != nil {
		return "", err
	}
	defer s.Close()
	l, err := ledger.Open(ctx, s, ledger.Options{
		Key: testLedgerKey(1), Origin: "osmose/test", CheckpointEvery: 16, GenesisTime: 1_700_000_000_000_000_000,
		Rand: rand.NewChaCha8([32]byte{1}), // the same pseudonyms, so the same CIDs, every run
	})
	if err != nil {
		return "", err
	}
	if err := appendTestEntries(ctx, l, 1, n); err != nil {
		l.Close()
		return "", err
	}
	return l.Meta().Verifier, l.Close()
}

// appendTestEntries commits the test entries of seqs from to n-1.
func appendTestEntries(ctx context.Context, l *ledger.Ledger, from, n int) error {
	subj, err := l.Pseudonym(ctx, "alice@example.org")
	if err != nil {
		return err
	}
	for i := from; i < n; i++ {
		e := benchEntry(i)
		e.Time = 1_700_000_000_000_000_000 + int64(i)*1_000_000
		switch i % 4 {
		case 1:
			e = ledger.Entry{Kind: ledger.KindGrant, Actor: "op:admin", Grant: uint64(1000 + i%512), Device: "cambridge/pembroke", Time: e.Time}
		case 2:
			e.Subject = subj
		case 3:
			e.Params, e.Result, e.Decision = nil, nil, ledger.DecisionDeny
		}
		e.Reason = fmt.Sprintf("note-%04d", i)
		seq, _, err := l.Commit(ctx, e)
		if err != nil {
			return err
		}
		if seq != uint64(i) {
			return fmt.Errorf("appended seq %d, want %d", seq, i)
		}
	}
	return nil
}

// mkledger DIR N: a data directory DIR holding a ledger of N entries;
// sets $VKEY to its verifier key and $OTHERKEY to another key's.
func cmdMkledger(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: mkledger DIR N")
	}
	n, err := strconv.Atoi(args[1])
	ts.Check(err)
	vk, err := makeTestLedger(ts.MkAbs(args[0]), n)
	ts.Check(err)
	other, err := ledger.VerifierKey("osmose/test", testLedgerKey(2).Public().(ed25519.PublicKey))
	ts.Check(err)
	ts.Setenv("VKEY", vk)
	ts.Setenv("OTHERKEY", other)
}

// mkbadger DIR: a valid Badger database in DIR/ledger that is not a
// ledger.
func cmdMkbadger(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: mkbadger DIR")
	}
	s, err := ledger.OpenBadger(filepath.Join(ts.MkAbs(args[0]), "ledger"), ledger.BadgerOptions{})
	ts.Check(err)
	ts.Check(s.Put(context.Background(), ds.NewKey("/something/else"), []byte("not a ledger")))
	ts.Check(s.Close())
}

// cpdir SRC DST copies a directory tree.
func cmdCpdir(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: cpdir SRC DST")
	}
	src, dst := ts.MkAbs(args[0]), ts.MkAbs(args[1])
	ts.Check(filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, 0o644)
	}))
}

// tamper DIR STRING flips the lowest bit of the last byte of the first
// occurrence of STRING in the files under DIR.
func cmdTamper(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: tamper DIR STRING")
	}
	found := false
	ts.Check(filepath.WalkDir(ts.MkAbs(args[0]), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || found {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if i := bytes.Index(b, []byte(args[1])); i >= 0 {
			b[i+len(args[1])-1] ^= 1
			found = true
			ts.Logf("tampered %s at byte %d", p, i+len(args[1])-1)
			return os.WriteFile(p, b, 0o644)
		}
		return nil
	}))
	if !found {
		ts.Fatalf("%q is in no file under %s", args[1], args[0])
	}
}

// truncate FILE N cuts FILE to N bytes.
func cmdTruncate(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: truncate FILE N")
	}
	n, err := strconv.ParseInt(args[1], 10, 64)
	ts.Check(err)
	ts.Check(os.Truncate(ts.MkAbs(args[0]), n))
}

// dirsum DIR prints a digest of every file and directory under DIR: names,
// modes, sizes, modification times and contents. Two equal digests mean
// nothing was written.
func cmdDirsum(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: dirsum DIR")
	}
	root := ts.MkAbs(args[0])
	h := sha256.New()
	var lines []string
	ts.Check(filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		line := fmt.Sprintf("%s %v %d %d", rel, fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		if !d.IsDir() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			line += fmt.Sprintf(" %x", sha256.Sum256(b))
		}
		lines = append(lines, line)
		return nil
	}))
	sort.Strings(lines)
	for _, l := range lines {
		io.WriteString(h, l+"\n")
	}
	fmt.Fprintf(ts.Stdout(), "%x\n", h.Sum(nil))
}

// held are the stores holdlock opened, by directory.
var held sync.Map

// holdlock DIR opens DIR's ledger store read-write, taking Badger's lock
// as a running kernel does, until unlock DIR.
func cmdHoldlock(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: holdlock DIR")
	}
	dir := filepath.Join(ts.MkAbs(args[0]), "ledger")
	s, err := ledger.OpenBadger(dir, ledger.BadgerOptions{})
	ts.Check(err)
	held.Store(dir, s)
	ts.Defer(func() {
		if v, ok := held.LoadAndDelete(dir); ok {
			v.(*ledger.BadgerStore).Close()
		}
	})
}

func cmdUnlock(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: unlock DIR")
	}
	v, ok := held.LoadAndDelete(filepath.Join(ts.MkAbs(args[0]), "ledger"))
	if !ok {
		ts.Fatalf("%s is not held", args[0])
	}
	ts.Check(v.(*ledger.BadgerStore).Close())
}

// carcheck FILE reads a CAR with go-car/v2, checking every block's hash,
// and prints its version, roots and block count.
func cmdCarcheck(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: carcheck FILE")
	}
	r, err := carv2.OpenReader(ts.MkAbs(args[0]))
	ts.Check(err)
	defer r.Close()
	roots, err := r.Roots()
	ts.Check(err)
	st, err := r.Inspect(true)
	ts.Check(err)
	fmt.Fprintf(ts.Stdout(), "version %d\nroots %d\nblocks %d\n", r.Version, len(roots), st.BlockCount)
}

// cidof DIR SEQ sets $CID to the envelope CID of the entry at SEQ of the
// ledger in the data directory DIR.
func cmdCidof(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: cidof DIR SEQ")
	}
	seq, err := strconv.ParseUint(args[1], 10, 64)
	ts.Check(err)
	ctx := context.Background()
	s, err := ledger.OpenBadger(filepath.Join(ts.MkAbs(args[0]), "ledger"), ledger.BadgerOptions{ReadOnly: true})
	ts.Check(err)
	defer s.Close()
	l, err := ledger.Open(ctx, s, ledger.Options{})
	ts.Check(err)
	r, err := l.Read(ctx, seq)
	ts.Check(err)
	ts.Setenv("CID", r.CID.String())
}
