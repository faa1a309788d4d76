package sim

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"

	"github.com/osmose-os/osmose/schema"
)

func TestParseFaults(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{"", "none", ""},
		{"none", "none", ""},
		{"crash", "crash=2", ""},
		{"crash=5, malicious", "crash=5,malicious=1", ""},
		{"all", "crash=2,drop=2,slow=2,stuck=2,skew=2,malicious=1", ""},
		{"all,drop=0", "crash=2,slow=2,stuck=2,skew=2,malicious=1", ""},
		{"meteor", "", `unknown fault "meteor"`},
		{"crash=-1", "", "count"},
		{"crash=x", "", "count"},
	} {
		f, err := ParseFaults(tc.in)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseFaults(%q): error %v, want %q", tc.in, err, tc.err)
			}
		case err != nil:
			t.Errorf("ParseFaults(%q): %v", tc.in, err)
		case f.String() != tc.want:
			t.Errorf("ParseFaults(%q) = %s, want %s", tc.in, f, tc.want)
		}
	}
}

// TestPlanFaults: the plan is a function of the seed, the devices and the
// steps; each device suffers one fault at most; a crash restarts later.
func TestPlanFaults(t *testing.T) {
	top, err := Generate(GenConfig{Floors: 2, Rooms: 4, DevicesPerRoom: 12, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	f, _ := ParseFaults("all")
	start := time.Date(2025, 3, 3, 7, 0, 0, 0, time.UTC)
	a := planFaults(f, 3, top.Devices, 720, time.Minute, start)
	b := planFaults(f, 3, top.Devices, 720, time.Minute, start)
	c := planFaults(f, 4, top.Devices, 720, time.Minute, start)
	if fmt.Sprint(a.actions) != fmt.Sprint(b.actions) || strings.Join(a.desc, "\n") != strings.Join(b.desc, "\n") {
		t.Fatal("two plans from one seed differ")
	}
	if fmt.Sprint(a.actions) == fmt.Sprint(c.actions) {
		t.Error("plans from seeds 3 and 4 are the same")
	}
	victim := map[string]string{}
	crashed := map[string]int{}
	for _, x := range a.actions {
		if x.Step < 1 || x.Step > 720 {
			t.Errorf("action %+v outside the run", x)
		}
		kind := map[faultKind]string{fCrash: "crash", fRestart: "crash", fDrop: "drop", fSlowOn: "slow", fSlowOff: "slow",
			fStick: "stuck", fUnstick: "stuck", fAttack: "malicious"}[x.Kind]
		if v, ok := victim[x.Device]; ok && v != kind {
			t.Errorf("%s suffers %s and %s", x.Device, v, kind)
		}
		victim[x.Device] = kind
		switch x.Kind {
		case fCrash:
			crashed[x.Device] = x.Step
		case fRestart:
			if s, ok := crashed[x.Device]; !ok || s >= x.Step {
				t.Errorf("%s restarts at step %d, crashed at %d", x.Device, x.Step, s)
			}
		}
	}
	for d := range a.skew {
		if _, ok := victim[d]; ok {
			t.Errorf("%s is skewed and suffers %s", d, victim[d])
		}
	}
	if len(a.skew) != 2 || len(a.malicious) != 1 || len(crashed) != 2 {
		t.Errorf("plan: %d skewed, %d malicious, %d crashed:\n%s", len(a.skew), len(a.malicious), len(crashed), strings.Join(a.desc, "\n"))
	}
	if got := len(a.at(a.actions[0].Step)); got == 0 {
		t.Error("at(step of the first action) is empty")
	}
}

// TestWorldBadges: the door badges report every move of every person,
// before the readings, and agree with the occupancy.
func TestWorldBadges(t *testing.T) {
	top, err := Generate(GenConfig{Floors: 1, Rooms: 3, DevicesPerRoom: 2, Seed: 8})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2025, 3, 3, 7, 0, 0, 0, time.UTC)
	w, err := NewWorld(WorldConfig{Topology: top, Seed: 8, People: 5, Start: start})
	if err != nil {
		t.Fatal(err)
	}
	in := map[string]string{} // person -> room, from the badges
	enters, leaves := 0, 0
	for i := 1; i <= 12*60; i++ {
		now := start.Add(time.Duration(i) * time.Minute)
		readings := false
		for _, e := range w.Advance(now) {
			if e.Person == "" {
				readings = true
				continue
			}
			if readings {
				t.Fatalf("%v: a badge event after a reading", e)
			}
			if e.Present {
				if in[e.Person] != "" {
					t.Fatalf("%v while in %s", e, in[e.Person])
				}
				in[e.Person] = e.Place
				enters++
			} else {
				if in[e.Person] != e.Place {
					t.Fatalf("%v while in %q", e, in[e.Person])
				}
				delete(in, e.Person)
				leaves++
			}
		}
		for _, p := range w.People() {
			if got, want := in[p.ID], p.At(now); got != want {
				t.Fatalf("%s at %s: badges say %q, schedule %q", p.ID, now.Format("15:04"), got, want)
			}
		}
	}
	if enters == 0 || enters != leaves {
		t.Errorf("%d entries, %d exits in a day", enters, leaves)
	}
	if id := w.People()[0].ID; id != PersonID(1) || id != "p-0001" {
		t.Errorf("first person %q, want p-0001", id)
	}
}

// TestHold: a held device answers one request per Next, and every
// request after Release.
func TestHold(t *testing.T) {
	top, err := Generate(GenConfig{Floors: 1, Rooms: 1, DevicesPerRoom: 5, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWorld(WorldConfig{Topology: top, Seed: 1, Start: time.Date(2025, 3, 3, 7, 0, 0, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	const path = "campus/hq/f1/r101/temperature"
	s := w.Hardware(path).(*Sensor)
	synctest.Test(t, func(t *testing.T) {
		h := w.Hold(path)
		var mu sync.Mutex
		answered := 0
		var wg sync.WaitGroup
		for range 3 {
			wg.Go(func() {
				s.Sample()
				mu.Lock()
				answered++
				mu.Unlock()
			})
		}
		got := func() int {
			synctest.Wait() // until every request is answered or held
			mu.Lock()
			defer mu.Unlock()
			return answered
		}
		if n := got(); n != 0 {
			t.Fatalf("%d requests answered while held", n)
		}
		h.Next()
		if n := got(); n != 1 {
			t.Fatalf("%d requests answered after one turn", n)
		}
		h.Release()
		wg.Wait()
		s.Sample() // not held any more
	})
}

// TestFreezeAndSlow: a stuck sensor reports its last value on its
// heartbeat until unstuck; a slow device's answers are counted late.
func TestFreezeAndSlow(t *testing.T) {
	top, err := Generate(GenConfig{Floors: 1, Rooms: 1, DevicesPerRoom: 12, Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2025, 3, 3, 8, 0, 0, 0, time.UTC)
	var slept []time.Duration
	w, err := NewWorld(WorldConfig{Topology: top, Seed: 2, People: 3, Start: start, Sleep: func(d time.Duration) { slept = append(slept, d) }})
	if err != nil {
		t.Fatal(err)
	}
	const co2 = "campus/hq/f1/r101/co2"
	w.Advance(start.Add(time.Minute))
	v, err := w.Freeze(co2)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for i := 2; i <= 4*60; i++ {
		for _, e := range w.Advance(start.Add(time.Duration(i) * time.Minute)) {
			if e.Device == co2 {
				n++
				if e.Reading != v {
					t.Fatalf("stuck sensor reported %v, stuck at %v", e.Reading, v)
				}
			}
		}
	}
	if n < 4*60/int(Heartbeat/time.Minute)-1 {
		t.Errorf("stuck sensor reported %d times in 4 h", n)
	}
	if err := w.Unstick(co2); err != nil {
		t.Fatal(err)
	}
	if w.Rooms()[0].CO2 == v {
		t.Errorf("CO2 did not move while the sensor was stuck")
	}
	const light = "campus/hq/f1/r101/light-1"
	w.Slow(light, 7*time.Millisecond)
	w.Hardware(light).(*Light).SetLight(true, 50)
	w.Slow(light, 0)
	w.Hardware(light).(*Light).SetLight(true, 60)
	if w.LateAnswers() != 1 || len(slept) != 1 || slept[0] != 7*time.Millisecond {
		t.Errorf("late answers %d, slept %v", w.LateAnswers(), slept)
	}
}

// TestHostileBytes: the four hostile byte streams are what they say.
func TestHostileBytes(t *testing.T) {
	a, b := hostileBytes(0, 1), hostileBytes(0, 1)
	if !bytes.Equal(a, b) || bytes.Equal(a, hostileBytes(0, 2)) {
		t.Error("garbage is not a function of its seed")
	}
	if !bytes.HasPrefix(a, []byte{0xff, 0xff, 0xff, 0xff}) {
		t.Errorf("garbage %x does not start with an impossible segment count", a[:4])
	}
	if o := hostileBytes(1, 1); len(o) != 8 || o[7] < 4 {
		t.Errorf("oversized frame %x", o)
	}
	msg, err := capnp.Unmarshal(hostileBytes(2, 1))
	if err != nil {
		t.Fatal(err)
	}
	m, err := rpccp.ReadRootMessage(msg)
	if err != nil || m.Which() != rpccp.Message_Which_call {
		t.Fatalf("forged call: %v, %v", m.Which(), err)
	}
	call, _ := m.Call()
	tgt, _ := call.Target()
	if id := tgt.ImportedCap(); id < 1000 || call.InterfaceId() != schema.Light_TypeID {
		t.Errorf("forged call on import %d, interface %#x", id, call.InterfaceId())
	}
	if n := hostileBytes(3, 1); !bytes.HasPrefix(n, []byte{0, 0, 0, 0, 2, 0, 0, 0}) || len(n) != 24 {
		t.Errorf("not-a-message frame %x", n)
	}
}
