package ledger_test

import (
	"testing"

	"github.com/osmose-os/osmose/ledger"
	"github.com/osmose-os/osmose/ledger/ledgertest"
)

func TestBadgerStore(t *testing.T) {
	dirs := map[ledger.Store]string{}
	ledgertest.Run(t, ledgertest.Harness{
		New: func(t *testing.T) ledger.Store {
			dir := t.TempDir()
			s, err := ledger.OpenBadger(dir, ledger.BadgerOptions{})
			if err != nil {
				t.Fatal(err)
			}
			dirs[s] = dir
			return s
		},
		Reopen: func(t *testing.T, s ledger.Store) ledger.Store {
			dir := dirs[s]
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s2, err := ledger.OpenBadger(dir, ledger.BadgerOptions{})
			if err != nil {
				t.Fatal(err)
			}
			dirs[s2] = dir
			return s2
		},
	})
}

func TestMemStore(t *testing.T) {
	ledgertest.Run(t, ledgertest.Harness{
		New:    func(*testing.T) ledger.Store { return ledger.NewMemStore() },
		Reopen: func(_ *testing.T, s ledger.Store) ledger.Store { return s },
	})
}
