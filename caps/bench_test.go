package caps

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

const benchPolicy = `
@range("level=0..80") @expires("24h") @window("06:00-23:00") @rate("1000000/1s")
permit (principal is Person, action in Action::"Light", resource is Device)
when { resource.class == "light" };

@range("level=0..60")
permit (principal is App, action in Action::"Light", resource) when { context.op == "delegate" };
`

var benchNow = time.Date(2025, 1, 6, 12, 0, 0, 0, time.UTC)

// benchTable builds a table of n live grants: roots opened under the policy
// (each with range, expiry, window and rate caveats), each with three
// descendants: an app's delegation, its attenuation, and the person's own
// attenuation, so chains are up to three deep.
func benchTable(tb testing.TB, n int) *Table {
	tb.Helper()
	tab, err := New(Config{Interfaces: testCatalog, Topology: propTopology(100, 10),
		Policy: []PolicyFile{{Name: "bench.cedar", Text: benchPolicy}}})
	if err != nil {
		tb.Fatal(err)
	}
	for i := 0; len(tab.grants) < n; i++ {
		light := fmt.Sprintf("b/f/r%d/l%d", i%100, (i/100)%10)
		d := tab.Open(Open{Holder: Principal{Person, fmt.Sprintf("p%d", i)}, Target: light, Interface: ifLight.ID, Now: benchNow})
		if !d.OK() {
			tb.Fatal(d.Err())
		}
		root := d.Grant
		d = tab.Delegate(Delegate{From: root, To: Principal{App, "scenes"}, Caveats: Caveats{Ranges: []Range{{"level", 10, 50}}}, Now: benchNow})
		if !d.OK() {
			tb.Fatal(d.Err())
		}
		if d = tab.Delegate(Delegate{From: d.Grant, To: Principal{App, "scenes"}, Methods: []string{"set"}, Now: benchNow}); !d.OK() {
			tb.Fatal(d.Err())
		}
		if d = tab.Delegate(Delegate{From: root, To: Principal{Person, fmt.Sprintf("p%d", i)}, Methods: []string{"get"}, Now: benchNow}); !d.OK() {
			tb.Fatal(d.Err())
		}
	}
	return tab
}

var (
	benchClock    time.Duration
	bench100kOnce sync.Once
	bench100k     *Table
)

// BenchmarkAdmit admits calls, through grants picked at random, at 100,000
// live grants with range, expiry, window and rate caveats on every chain.
func BenchmarkAdmit(b *testing.B) {
	bench100kOnce.Do(func() { bench100k = benchTable(b, 100_000) })
	tab := bench100k
	rng := rand.New(rand.NewPCG(1, 2))
	calls := make([]Call, 1<<16)
	for i := range calls {
		id := GrantID(1 + rng.IntN(len(tab.grants)))
		g, _ := tab.Grant(id)
		calls[i] = Call{Grant: id, Method: g.Methods[len(g.Methods)-1].ID, Args: []Arg{{"level", 20}}}
	}
	b.ReportAllocs()
	b.ResetTimer()
	denied := 0
	var first error
	for i := 0; i < b.N; i++ {
		c := &calls[i&(len(calls)-1)]
		benchClock += time.Microsecond // never back in time, across runs too
		c.Now = benchNow.Add(benchClock)
		if d := tab.Admit(*c); !d.OK() {
			if denied == 0 {
				first = d.Err()
			}
			denied++
		}
	}
	if denied > 0 {
		b.Fatalf("%d calls denied; first: %v", denied, first)
	}
}

// BenchmarkRevokeSubtree10k revokes a grant with 9,999 descendants (fanout
// 10) in a table that also holds 100,000 other grants.
func BenchmarkRevokeSubtree10k(b *testing.B) {
	tab := benchTable(b, 100_000)
	d := tab.Open(Open{Holder: Principal{Person, "root"}, Target: "b/f/r0/l0", Interface: ifLight.ID, Now: benchNow})
	if !d.OK() {
		b.Fatal(d.Err())
	}
	root := d.Grant
	queue := []GrantID{root}
	count := 1
	for count < 10_000 {
		from := queue[0]
		queue = queue[1:]
		for k := 0; k < 10 && count < 10_000; k++ {
			d := tab.Delegate(Delegate{From: from, To: Principal{Person, "root"}, Now: benchNow})
			if !d.OK() {
				b.Fatal(d.Err())
			}
			queue = append(queue, d.Grant)
			count++
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d := tab.Revoke(Revoke{Grant: root})
		if len(d.Revoked) != 10_000 {
			b.Fatalf("revoked %d grants, want 10000", len(d.Revoked))
		}
		b.StopTimer()
		for _, r := range d.Revoked { // undo, to revoke again
			tab.grants[r.Grant-1].revoked = false
		}
		b.StartTimer()
	}
}

// BenchmarkOpen opens a grant: a Cedar evaluation per method, caveats from
// annotations.
func BenchmarkOpen(b *testing.B) {
	tab := benchTable(b, 4)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d := tab.Open(Open{Holder: Principal{Person, "p"}, Target: "b/f/r1/l1", Interface: ifLight.ID, Now: benchNow})
		if !d.OK() {
			b.Fatal(d.Err())
		}
	}
}

// BenchmarkDelegate delegates to another principal (policy-checked).
func BenchmarkDelegate(b *testing.B) {
	tab := benchTable(b, 4)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d := tab.Delegate(Delegate{From: 1, To: Principal{App, "x"}, Caveats: Caveats{Ranges: []Range{{"level", 0, 40}}}, Now: benchNow})
		if !d.OK() {
			b.Fatal(d.Err())
		}
	}
}

// BenchmarkSetPolicy100k reloads the policy at 100,000 grants, re-checking
// every one (nothing is revoked).
func BenchmarkSetPolicy100k(b *testing.B) {
	bench100kOnce.Do(func() { bench100k = benchTable(b, 100_000) })
	tab := bench100k
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d, err := tab.SetPolicy(PolicyFile{Name: "bench.cedar", Text: benchPolicy})
		if err != nil || len(d.Revoked) != 0 {
			b.Fatal(err, len(d.Revoked))
		}
	}
}
