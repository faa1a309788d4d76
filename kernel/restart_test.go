package kernel_test

import (
	"context"
	"testing"

	"github.com/osmose-os/osmose/ledger"
	"github.com/osmose-os/osmose/schema"
)

// TestRestartContinuesGrantIDs: a kernel restarted on a ledger never
// reuses a grant id the ledger already holds.
func TestRestartContinuesGrantIDs(t *testing.T) {
	dir := t.TempDir()
	const prog, light = "cam/pem/f1/r1/switch", "cam/pem/f1/r1/light-1"
	h1 := newHarnessAt(t, dir, 1)
	d1 := h1.login(prog)
	c1, id1 := h1.open(d1, light)
	if err := setLevel(schema.Light(c1), 30); err != nil {
		t.Fatal(err)
	}
	c1.Release()
	d1.close()
	h1.stop()

	h2 := newHarnessAt(t, dir, 1)
	d2 := h2.login(prog)
	c2, id2 := h2.open(d2, light)
	if id1 == id2 {
		t.Fatalf("the restarted kernel granted %s again", id2)
	}
	if err := setLevel(schema.Light(c2), 40); err != nil {
		t.Fatal(err)
	}
	// Every grant entry names a grant no other grant entry names.
	seen := map[uint64]uint64{}
	err := h2.led.Lookup(context.Background(), ledger.ByKind, string(ledger.KindGrant), 0, 1<<62, func(seq uint64) bool {
		r, err := h2.led.Read(context.Background(), seq)
		if err != nil {
			t.Fatal(err)
		}
		if g := r.Envelope.Grant; g != 0 {
			if prev, ok := seen[g]; ok {
				t.Fatalf("grant %d made at seq %d and again at seq %d", g, prev, seq)
			}
			seen[g] = seq
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != 2 {
		t.Fatalf("%d grants on the ledger, want 2", len(seen))
	}
}
