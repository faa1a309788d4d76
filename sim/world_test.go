package sim

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/osmose-os/osmose/drivers"
	"github.com/osmose-os/osmose/drivers/driverstest"
	"github.com/osmose-os/osmose/internal/topology"
	"github.com/osmose-os/osmose/schema"
)

func TestGenerateRoundTrip(t *testing.T) {
	c := GenConfig{Floors: 2, Rooms: 3, DevicesPerRoom: 14, People: 12, Seed: 9}
	top, err := Generate(c)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(top.Devices), 2*3*14; got != want {
		t.Fatalf("%d devices, want %d", got, want)
	}
	b, err := WriteTopology(top, c)
	if err != nil {
		t.Fatal(err)
	}
	back, err := topology.Parse("gen.yaml", b)
	if err != nil {
		t.Fatalf("generated topology does not parse: %v", err)
	}
	for i, d := range back.Devices {
		if d.Path != top.Devices[i].Path || d.Class != top.Devices[i].Class || !bytes.Equal(d.Key, PublicKey(9, d.Path)) {
			t.Fatalf("device %d: %+v after the round trip", i, d)
		}
	}
	if _, ok := back.Device("campus/hq/f2/r203/light-3"); !ok {
		t.Errorf("no extra light-3 in a 14-device room")
	}
	// The people, by pseudonym, and the door-badge bridge, an operator.
	if got, want := len(back.Principals), 3+12; got != want {
		t.Fatalf("%d principals, want %d", got, want)
	}
	for _, id := range []string{"p-0001", "p-0012", BadgesID, OperatorID, AuditorID} {
		p, ok := back.Login(id)
		if !ok || !bytes.Equal(p.Key, PublicKey(9, id)) {
			t.Errorf("principal %s: %+v, %v", id, p, ok)
		}
	}
	if p, _ := back.Login("p-0007"); p.Kind != schema.PrincipalKind_person || p.Label != "" {
		t.Errorf("p-0007: %+v: want a person with no label", p)
	}
	if p, _ := back.Login(BadgesID); p.Kind != schema.PrincipalKind_operator {
		t.Errorf("badges: kind %v, want operator", p.Kind)
	}
	if !strings.Contains(string(b), "--people 12") {
		t.Errorf("header does not say how the file was made:\n%s", b[:300])
	}
	// A malformed file is rejected with file, line and reason.
	bad := strings.Replace(string(b), "class: thermostat", "class: thermostaat", 1)
	_, err = topology.Parse("bad.yaml", []byte(bad))
	if err == nil || !strings.Contains(err.Error(), "bad.yaml:") || !strings.Contains(err.Error(), `unknown class "thermostaat"`) {
		t.Errorf("malformed topology: error %v", err)
	}
}

func TestPeopleSchedules(t *testing.T) {
	rooms := []string{"a", "b", "c"}
	ps, again := newPeople(5, 10, rooms), newPeople(5, 10, rooms)
	day := time.Date(2025, 3, 3, 0, 0, 0, 0, time.UTC)
	for i, p := range ps {
		if s, s2 := strings.Join(p.Schedule(day), ","), strings.Join(again[i].Schedule(day), ","); s != s2 {
			t.Fatalf("%s: schedule differs between two draws with one seed:\n%s\n%s", p.ID, s, s2)
		}
		if at := p.At(day.Add(3 * time.Hour)); at != "" {
			t.Errorf("%s is in %q at 03:00", p.ID, at)
		}
		if at := p.At(day.Add(10*time.Hour + 15*time.Minute)); at == "" {
			t.Errorf("%s is out at 10:15 on a Monday: %v", p.ID, p.Schedule(day))
		}
		if at := p.At(day.Add(5*24*time.Hour + 10*time.Hour)); at != "" {
			t.Errorf("%s works on Saturday", p.ID)
		}
	}
}

// TestWorldDay runs a room through a day without a kernel: heating holds
// the setpoint, people raise CO2, and readings are reported.
func TestWorldDay(t *testing.T) {
	top, err := Generate(GenConfig{Floors: 1, Rooms: 1, DevicesPerRoom: 12, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2025, 3, 3, 6, 0, 0, 0, time.UTC)
	w, err := NewWorld(WorldConfig{Topology: top, Seed: 3, People: 4, Start: start})
	if err != nil {
		t.Fatal(err)
	}
	th := w.Hardware("campus/hq/f1/r101/thermostat").(*Thermostat)
	th.SetThermostat(21, schema.ThermostatMode_heat)
	events := 0
	maxCO2 := 0.0
	for i := 1; i <= 12*60; i++ {
		events += len(w.Advance(start.Add(time.Duration(i) * time.Minute)))
		if r := w.Rooms()[0]; r.CO2 > maxCO2 {
			maxCO2 = r.CO2
		}
		if i == 4*60 { // 10:00: heated for four hours
			if tc := w.Rooms()[0].Temperature; tc < 20 || tc > 22.5 {
				t.Errorf("at 10:00 the heated room is at %.1f °C, want about 21", tc)
			}
		}
	}
	if maxCO2 < 900 {
		t.Errorf("four people all day raised CO2 only to %.0f ppm", maxCO2)
	}
	if events < 12*60/int(Heartbeat/time.Minute) {
		t.Errorf("only %d events in 12 h", events)
	}
}

// backend is the sim world as a driverstest.Backend.
type backend struct {
	w   *World
	now func() time.Time
}

func (b backend) Hardware(d drivers.Device) any { return b.w.Hardware(d.Path) }
func (b backend) Now() time.Time                { return b.now() }
func (b backend) Light(path string) (bool, uint8) {
	return b.w.Hardware(path).(*Light).Output()
}
func (b backend) Thermostat(path string) (float64, schema.ThermostatMode) {
	return b.w.Hardware(path).(*Thermostat).Target()
}
func (b backend) Locked(path string) bool    { return b.w.Hardware(path).(*Lock).Locked() }
func (b backend) Display(path string) string { return b.w.Hardware(path).(*Display).Text() }
func (b backend) Measure(ctx context.Context, path string, v float64) error {
	if err := b.w.Stick(path, v); err != nil {
		return err
	}
	return b.w.Publish(ctx, path)
}
func (b backend) Button(ctx context.Context, path string, kind schema.SwitchEventKind, button uint8) error {
	return b.w.Button(ctx, path, kind, button)
}
func (b backend) Hear(ctx context.Context, path string, frame []byte) error {
	return b.w.Hear(ctx, path, frame)
}

// TestDriverConformance: the drivers over the simulated hardware pass the
// drivers' conformance suite.
func TestDriverConformance(t *testing.T) {
	driverstest.Run(t, func(t *testing.T) driverstest.Backend {
		top := &topology.Topology{Places: []topology.Place{
			{Path: "test", Kind: schema.PlaceKind_building},
			{Path: driverstest.Room, Kind: schema.PlaceKind_room},
		}}
		for _, d := range driverstest.Devices {
			top.Devices = append(top.Devices, topology.Device{Path: d.Path, Class: d.Class})
		}
		top.Index()
		start := time.Date(2025, 3, 3, 9, 0, 0, 0, time.UTC)
		w, err := NewWorld(WorldConfig{Topology: top, Seed: 1, Start: start})
		if err != nil {
			t.Fatal(err)
		}
		return backend{w: w, now: NewClock(start).Now}
	})
}
