package kernel_test

import (
	"context"
	"crypto/sha256"
	"testing"

	"github.com/osmose-os/osmose/caps"
	"github.com/osmose-os/osmose/internal/topology"
	"github.com/osmose-os/osmose/kernel"
	"github.com/osmose-os/osmose/kernel/kerneltest"
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

// TestStartRecordsBuilding: a kernel's first entries after "start" hold
// its topology (which parses back to the same building) and its policy.
func TestStartRecordsBuilding(t *testing.T) {
	h := newHarness(t, 2)
	var yaml []byte
	var sum [32]byte
	var policy []caps.PolicyFile
	for seq := uint64(0); seq < uint64(h.led.Size()); seq++ {
		r, err := h.led.Read(context.Background(), seq)
		if err != nil {
			t.Fatal(err)
		}
		switch r.Envelope.Kind {
		case kernel.KindTopology:
			_, _, s, err := kernel.ParseTopologyPart(r.Envelope.Reason)
			if err != nil {
				t.Fatal(err)
			}
			sum = s
			yaml = append(yaml, r.Result()...)
		case ledger.KindPolicy:
			if policy, err = kernel.DecodePolicy(r.Result()); err != nil {
				t.Fatal(err)
			}
		}
	}
	if sha256.Sum256(yaml) != sum {
		t.Fatalf("topology parts do not hash to %x", sum)
	}
	top, err := topology.Parse("ledger", yaml)
	if err != nil {
		t.Fatal(err)
	}
	if len(top.Devices) != len(h.top.Devices) || len(top.Principals) != len(h.top.Principals) {
		t.Errorf("topology from the ledger: %d devices, %d principals; want %d, %d", len(top.Devices), len(top.Principals), len(h.top.Devices), len(h.top.Principals))
	}
	if len(policy) != 1 || policy[0].Text != kerneltest.Policy {
		t.Errorf("policy from the ledger: %+v", policy)
	}
	if _, _, _, err := kernel.ParseTopologyPart("topology part 3/2, sha256 00"); err == nil {
		t.Error("a malformed part reason parsed")
	}
}
