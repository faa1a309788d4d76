package caps

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseRoundTrip(t *testing.T) {
	for _, s := range []string{"level=0..60", "celsius=18..24.5", "level=..60", "x=-3..", "y=.."} {
		r, err := ParseRange(s)
		if err != nil {
			t.Fatalf("ParseRange(%q): %v", s, err)
		}
		if r.String() != s {
			t.Errorf("ParseRange(%q).String() = %q", s, r)
		}
	}
	for _, s := range []string{"level", "level=1", "level=60..0", "1x=0..1", "l=a..b", "l=NaN..1"} {
		if _, err := ParseRange(s); err == nil {
			t.Errorf("ParseRange(%q) succeeded", s)
		}
	}
	for _, s := range []string{"08:00-18:00", "22:00-06:00", "00:00-00:01"} {
		w, err := ParseWindow(s)
		if err != nil || w.String() != s {
			t.Errorf("ParseWindow(%q) = %v, %v", s, w, err)
		}
	}
	for _, s := range []string{"8-18", "08:00-08:00", "24:00-01:00", "08:00"} {
		if _, err := ParseWindow(s); err == nil {
			t.Errorf("ParseWindow(%q) succeeded", s)
		}
	}
	for _, s := range []string{"10/1m0s", "1/24h0m0s"} {
		r, err := ParseRate(s)
		if err != nil || r.String() != s {
			t.Errorf("ParseRate(%q) = %v, %v", s, r, err)
		}
	}
	for _, s := range []string{"0/1m", "10/0s", "ten/1m", "10"} {
		if _, err := ParseRate(s); err == nil {
			t.Errorf("ParseRate(%q) succeeded", s)
		}
	}
	for _, s := range []string{"device:a/b", "person:p-1", "app:rec", "operator:alice", "kernel"} {
		p, err := ParsePrincipal(s)
		if err != nil || p.String() != s {
			t.Errorf("ParsePrincipal(%q) = %v, %v", s, p, err)
		}
	}
	if _, err := ParsePrincipal("robot:x"); !errors.Is(err, ErrInvalid) {
		t.Errorf("ParsePrincipal(robot:x) = %v, want ErrInvalid", err)
	}
}

func TestWindowMeet(t *testing.T) {
	w := func(s string) Window { x, _ := ParseWindow(s); return x }
	for _, tc := range []struct{ a, b, want string }{
		{"08:00-18:00", "10:00-20:00", "10:00-18:00"},
		{"22:00-06:00", "05:00-23:00", ""}, // two pieces
		{"22:00-06:00", "00:00-12:00", "00:00-06:00"},
		{"22:00-06:00", "23:00-01:00", "23:00-01:00"},
		{"08:00-09:00", "10:00-11:00", ""},
	} {
		got, ok := windowMeet(w(tc.a), w(tc.b))
		if tc.want == "" {
			if ok {
				t.Errorf("meet(%s, %s) = %s, want none", tc.a, tc.b, got)
			}
			continue
		}
		if !ok || got != w(tc.want) {
			t.Errorf("meet(%s, %s) = %s, %v; want %s", tc.a, tc.b, got, ok, tc.want)
		}
	}
}

// randCaveats draws caveats over a small space so that overlaps happen.
func randCaveats(rng *rand.Rand) Caveats {
	var c Caveats
	base := time.Date(2025, 1, 6, 0, 0, 0, 0, time.UTC)
	if rng.IntN(2) == 0 {
		c.Expires = base.Add(time.Duration(rng.IntN(10)) * time.Hour)
	}
	if rng.IntN(2) == 0 {
		c.Window = Window{Start: rng.IntN(24) * 60, End: rng.IntN(24) * 60}
	}
	if rng.IntN(2) == 0 {
		c.Rate = Rate{N: 1 + rng.IntN(10), Per: time.Duration(1+rng.IntN(10)) * time.Second}
	}
	if rng.IntN(2) == 0 {
		c.Uses = 1 + rng.IntN(5)
	}
	for _, arg := range []string{"a", "b"} {
		if rng.IntN(2) == 0 {
			lo := float64(rng.IntN(10))
			c.Ranges = append(c.Ranges, Range{arg, lo, lo + float64(rng.IntN(10))})
		}
	}
	places := []string{"", "b", "b/f1", "b/f1/r1", "b/f2"}
	c.Place = places[rng.IntN(len(places))]
	c.NoReshare = rng.IntN(2) == 0
	if rng.IntN(2) == 0 {
		c.Presence = []Presence{{"p1", places[1+rng.IntN(len(places)-1)]}}
	}
	return c
}

// TestMeetWithinBoth checks the caveat algebra: meet(a, b) is within a and
// within b, and everything is within itself.
func TestMeetWithinBoth(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 0))
	scope := func(c Caveats) string {
		if c.Place == "" {
			return "b"
		}
		return c.Place
	}
	for i := range 20000 {
		a, b := randCaveats(rng), randCaveats(rng)
		if ok, why := within(a, scope(a), a, scope(a), a.Uses); !ok {
			t.Fatalf("%d: %v not within itself: %s", i, a, why)
		}
		m, err := meet(a, b)
		if err != nil {
			continue
		}
		for _, p := range []Caveats{a, b} {
			if ok, why := within(m, scope(m), p, scope(p), p.Uses); !ok {
				t.Fatalf("%d: meet(%v, %v) = %v is not within %v: %s", i, a, b, m, p, why)
			}
		}
	}
}

func TestPolicyErrors(t *testing.T) {
	tab, err := New(Config{Interfaces: testCatalog})
	if err != nil {
		t.Fatal(err)
	}
	_, err = tab.SetPolicy(
		PolicyFile{Name: "ok.cedar", Text: "permit (principal, action, resource);\n"},
		PolicyFile{Name: "bad.cedar", Text: "// header\n\npermit (principal, action == Action::\"Lamp.on\", resource);\n"},
	)
	var pe *PolicyError
	if !errors.As(err, &pe) {
		t.Fatalf("SetPolicy = %v, want a *PolicyError", err)
	}
	if pe.File != "bad.cedar" || pe.Line != 3 || !strings.Contains(pe.Reason, "Lamp.on") {
		t.Errorf("PolicyError = %+v", pe)
	}
	if tab.policy != nil {
		t.Errorf("a rejected policy was installed")
	}
	_, err = New(Config{Interfaces: testCatalog, Policy: []PolicyFile{{Name: "x.cedar", Text: "permit (principal, action, resource)"}}})
	if !errors.As(err, &pe) || pe.File != "x.cedar" || pe.Line == 0 {
		t.Errorf("New with a syntax error = %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	if _, err := New(Config{}); err != nil {
		t.Errorf("New(Config{}) = %v; the zero config should work", err)
	}
	for name, cfg := range map[string]Config{
		"dup interface": {Interfaces: []Interface{ifLight, ifLight}},
		"bad name":      {Interfaces: []Interface{{ID: 1, Name: "has space"}}},
		"dup method":    {Interfaces: []Interface{{ID: 1, Name: "X", Methods: []Method{{0, "a"}, {0, "b"}}}}},
		"big method":    {Interfaces: []Interface{{ID: 1, Name: "X", Methods: []Method{{300, "a"}}}}},
		"depth":         {MaxDepth: 1000},
		"topology":      {Topology: []Node{{Path: "a/b", Kind: "room"}}},
		"bad path":      {Topology: []Node{{Path: "a//b", Kind: "room"}}},
		"parent":        {Topology: []Node{{Path: "a", Kind: "building"}, {Path: "a/b", Parent: "x", Kind: "room"}}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
}

func TestDecisionErr(t *testing.T) {
	d := Decision{Op: OpCall, Grant: 7, Code: CodeRevoked, Reason: "g7 is revoked"}
	err := d.Err()
	if !errors.Is(err, ErrRevoked) || err.Error() != "call g7: g7 is revoked: revoked" {
		t.Errorf("Err() = %v", err)
	}
	if (Decision{Op: OpCall}).Err() != nil {
		t.Errorf("an OK decision has an error")
	}
	for c := OK + 1; c < numCodes; c++ {
		if c.Err() == nil || c.String() == "" {
			t.Errorf("code %d has no sentinel or name", c)
		}
	}
}

// TestAdmitNoAlloc keeps admission allocation-free.
func TestAdmitNoAlloc(t *testing.T) {
	tab := benchTable(t, 400)
	c := Call{Grant: 2, Method: 1, Args: []Arg{{"level", 20}}, Now: benchNow}
	if allocs := testing.AllocsPerRun(100, func() {
		c.Now = c.Now.Add(time.Millisecond)
		if d := tab.Admit(c); !d.OK() {
			t.Fatal(d.Err())
		}
	}); allocs != 0 {
		t.Errorf("Admit allocates %v times per call", allocs)
	}
}

func TestNaNArgumentDenied(t *testing.T) {
	tab := benchTable(t, 4)
	d := tab.Admit(Call{Grant: 1, Method: 1, Args: []Arg{{"level", math.NaN()}}, Now: benchNow})
	if !errors.Is(d.Err(), ErrOutOfRange) {
		t.Errorf("NaN level: %v", d.Err())
	}
}

// Example shows the kernel's side of one grant's life.
func Example() {
	tab, err := New(Config{
		Interfaces: []Interface{{ID: 0xb1a5, Name: "Light", Methods: []Method{{0, "get"}, {1, "set"}}}},
		Topology: []Node{
			{Path: "pem", Kind: "building"},
			{Path: "pem/r12", Kind: "room"},
			{Path: "pem/r12/light-3", Kind: KindDevice, Class: "light"},
		},
		Policy: []PolicyFile{{Name: "lights.cedar", Text: `
@presence @range("level=0..60")
permit (principal is Person, action in Action::"Light", resource is Device)
when { principal in resource.place };`}},
	})
	if err != nil {
		panic(err)
	}
	now := time.Date(2025, 1, 6, 9, 0, 0, 0, time.UTC)
	tab.Enter(Presence{Person: "p-7f3a", Place: "pem/r12"})
	d := tab.Open(Open{Holder: Principal{Person, "p-7f3a"}, Target: "pem/r12/light-3", Interface: 0xb1a5, Now: now})
	g, _ := tab.Grant(d.Grant)
	fmt.Println(d.Code, d.Grant, g.Caveats)
	fmt.Println(tab.Admit(Call{Grant: d.Grant, Method: 1, Args: []Arg{{"level", 40}}, Now: now}).Code)
	fmt.Println(tab.Admit(Call{Grant: d.Grant, Method: 1, Args: []Arg{{"level", 90}}, Now: now}).Err())
	d = tab.Leave(Presence{Person: "p-7f3a", Place: "pem/r12"})
	fmt.Println(d.Revoked)
	fmt.Println(errors.Is(tab.Admit(Call{Grant: 1, Method: 0, Now: now}).Err(), ErrRevoked))
	// Output:
	// ok g1 range:level=0..60 presence=p-7f3a@pem/r12
	// ok
	// call g1: level=90 is outside g1's range level=0..60: argument out of range
	// [{g1 g1 p-7f3a left pem/r12}]
	// true
}

// TestWindowWithin checks the interval arithmetic against minute-by-minute
// counting, over every pair of windows on an hourly grid.
func TestWindowWithin(t *testing.T) {
	naive := func(c, p Window) bool {
		if !p.Set() {
			return true
		}
		if !c.Set() {
			return false
		}
		for m := range minutesPerDay {
			if c.Contains(m) && !p.Contains(m) {
				return false
			}
		}
		return true
	}
	for cs := 0; cs < minutesPerDay; cs += 60 {
		for ce := 0; ce < minutesPerDay; ce += 60 {
			for ps := 0; ps < minutesPerDay; ps += 60 {
				for pe := 0; pe < minutesPerDay; pe += 60 {
					c, p := Window{cs, ce}, Window{ps, pe}
					if got, want := windowWithin(c, p), naive(c, p); got != want {
						t.Fatalf("windowWithin(%v, %v) = %v, want %v", c, p, got, want)
					}
				}
			}
		}
	}
}

// TestFirstGrant: a table that continues a ledger's numbering issues ids
// from FirstGrant and knows no grant below it.
func TestFirstGrant(t *testing.T) {
	tab, err := New(Config{
		Interfaces: []Interface{{ID: 0xb1a5, Name: "Light", Methods: []Method{{0, "get"}, {1, "set"}}}},
		Topology: []Node{
			{Path: "pem", Kind: "building"},
			{Path: "pem/light-3", Kind: KindDevice, Class: "light"},
		},
		Policy:     []PolicyFile{{Name: "p.cedar", Text: `permit (principal, action, resource);`}},
		FirstGrant: 1000,
	})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2025, 1, 6, 9, 0, 0, 0, time.UTC)
	root := tab.Open(Open{Holder: Principal{Device, "d1"}, Target: "pem/light-3", Interface: 0xb1a5, Now: now})
	child := tab.Delegate(Delegate{From: root.Grant, To: Principal{Device, "d2"}, Methods: []string{"get"}, Now: now})
	if root.Grant != 1000 || child.Grant != 1001 || !child.OK() {
		t.Fatalf("ids %v %v (%v), want g1000 g1001", root.Grant, child.Grant, child.Err())
	}
	if !tab.Admit(Call{Grant: 1001, Method: 0, Now: now}).OK() {
		t.Fatal("g1001 not admitted")
	}
	for _, id := range []GrantID{1, 999, 1002} {
		if d := tab.Admit(Call{Grant: id, Method: 0, Now: now}); !errors.Is(d.Err(), ErrNotFound) {
			t.Fatalf("admit %v: %v, want not found", id, d.Err())
		}
	}
	if d := tab.Revoke(Revoke{Grant: 1000}); !d.OK() || len(d.Revoked) != 2 {
		t.Fatalf("revoke g1000: %+v", d)
	}
	if d := tab.Admit(Call{Grant: 1001, Method: 0, Now: now}); !errors.Is(d.Err(), ErrRevoked) {
		t.Fatalf("g1001 after revoking its parent: %v", d.Err())
	}
	n := 0
	for range tab.Grants() {
		n++
	}
	if n != 2 {
		t.Fatalf("Grants() yields %d, want 2", n)
	}
}

// TestLive: a grant stands while its chain is unrevoked and unexpired,
// whatever its method set and rate.
func TestLive(t *testing.T) {
	tab, err := New(Config{
		Interfaces: []Interface{{ID: 0xb1a5, Name: "Light", Methods: []Method{{0, "get"}, {1, "set"}}}},
		Topology:   []Node{{Path: "pem", Kind: "building"}, {Path: "pem/light-3", Kind: KindDevice, Class: "light"}},
		Policy:     []PolicyFile{{Name: "p.cedar", Text: `permit (principal, action, resource);`}},
	})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2025, 1, 6, 9, 0, 0, 0, time.UTC)
	root := tab.Open(Open{Holder: Principal{Device, "d1"}, Target: "pem/light-3", Interface: 0xb1a5, Now: now})
	child := tab.Delegate(Delegate{From: root.Grant, To: Principal{Device, "d2"}, Methods: []string{"get"},
		Caveats: Caveats{Expires: now.Add(time.Hour), Uses: 1}, Now: now})
	if !child.OK() {
		t.Fatal(child.Err())
	}
	tab.Admit(Call{Grant: child.Grant, Method: 0, Now: now}) // its one use
	if d := tab.Live(child.Grant, now.Add(time.Minute)); !d.OK() {
		t.Fatalf("a used-up but unexpired grant is not live: %v", d.Err())
	}
	if d := tab.Live(child.Grant, now.Add(2*time.Hour)); !errors.Is(d.Err(), ErrExpired) {
		t.Fatalf("after its expiry: %v, want expired", d.Err())
	}
	tab.Revoke(Revoke{Grant: root.Grant})
	if d := tab.Live(child.Grant, now); !errors.Is(d.Err(), ErrRevoked) {
		t.Fatalf("after its parent's revocation: %v, want revoked", d.Err())
	}
	if d := tab.Live(99, now); !errors.Is(d.Err(), ErrNotFound) {
		t.Fatalf("an unknown grant: %v", d.Err())
	}
}

// TestHeldIndex checks Held and HeldBy against a scan of every grant while
// grants are revoked and released.
func TestHeldIndex(t *testing.T) {
	tab := benchTable(t, 2_000)
	check := func(stage string) {
		t.Helper()
		want := map[Principal][]GrantID{}
		first := map[[3]string]GrantID{}
		for g := range tab.Grants() {
			if g.Revoked || g.Released {
				continue
			}
			want[g.Holder] = append(want[g.Holder], g.ID)
			k := [3]string{g.Holder.String(), g.Target, fmt.Sprint(g.Interface)}
			if first[k] == 0 {
				first[k] = g.ID
			}
		}
		for h, ids := range want {
			if got := tab.HeldBy(h); !slices.Equal(got, ids) {
				t.Fatalf("%s: HeldBy(%s) = %v, want %v", stage, h, got, ids)
			}
		}
		for k, id := range first {
			g, _ := tab.Grant(id)
			if got := tab.Held(g.Holder, g.Target, g.Interface); got != id {
				t.Fatalf("%s: Held(%s) = %s, want %s", stage, k, got, id)
			}
		}
		if got := tab.HeldBy(Principal{Person, "nobody"}); got != nil {
			t.Fatalf("%s: HeldBy(nobody) = %v", stage, got)
		}
	}
	check("fresh")
	for id := GrantID(1); id <= 2_000; id += 7 {
		tab.Revoke(Revoke{Grant: id})
	}
	check("revoked")
	for id := GrantID(3); id <= 2_000; id += 5 {
		tab.Release(id)
	}
	check("released")
	if got := tab.Held(Principal{Person, "p0"}, "b/f/r0/l0", ifLight.ID); got != 0 {
		t.Fatalf("Held after its grant was revoked = %s", got)
	}
}
