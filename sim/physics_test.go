package sim

import (
	"math"
	"testing"
	"time"
)

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

func TestFirstOrder(t *testing.T) {
	tau := time.Hour
	for _, c := range []struct {
		name      string
		x, target float64
		dt        time.Duration
		want      float64
	}{
		{"no time passes", 15, 25, 0, 15},
		{"one time constant closes 63.2 %", 15, 25, time.Hour, 25 - 10*math.Exp(-1)},
		{"three time constants close 95 %", 15, 25, 3 * time.Hour, 25 - 10*math.Exp(-3)},
		{"cooling toward the outside", 21, 5, 30 * time.Minute, 5 + 16*math.Exp(-0.5)},
		{"at equilibrium it stays", 20, 20, 5 * time.Hour, 20},
		{"a long time reaches the target", 0, 10, 100 * time.Hour, 10},
	} {
		if got := FirstOrder(c.x, c.target, c.dt, tau); !near(got, c.want, 1e-9) {
			t.Errorf("%s: FirstOrder(%v, %v, %v) = %v, want %v", c.name, c.x, c.target, c.dt, got, c.want)
		}
	}
	// Many small steps equal one big one: the discretisation is exact.
	x := 15.0
	for range 60 {
		x = FirstOrder(x, 25, time.Minute, tau)
	}
	if want := FirstOrder(15, 25, time.Hour, tau); !near(x, want, 1e-9) {
		t.Errorf("60 one-minute steps give %v, one hour %v", x, want)
	}
}

func at(h, m int) time.Time { return time.Date(2025, 3, 3, h, m, 0, 0, time.UTC) }

func TestDaylight(t *testing.T) {
	p := DefaultPhysics
	for _, c := range []struct {
		t    time.Time
		want float64
	}{
		{at(3, 0), 0},
		{at(7, 0), 0},
		{at(13, 0), p.DaylightPeak},
		{at(10, 0), p.DaylightPeak * math.Sin(math.Pi*3/12)},
		{at(19, 0), 0},
		{at(23, 30), 0},
	} {
		if got := p.Daylight(c.t); !near(got, c.want, 1e-9) {
			t.Errorf("Daylight(%s) = %v, want %v", c.t.Format("15:04"), got, c.want)
		}
	}
	// Lights add to daylight: two lights at 80 % at night.
	if got, want := p.Illuminance(at(22, 0), 80, 80), 2*0.8*p.LightLux; !near(got, want, 1e-9) {
		t.Errorf("Illuminance at night with two lights at 80 %% = %v, want %v", got, want)
	}
	if p.Outside(at(5, 0)) >= p.Outside(at(17, 0)) {
		t.Errorf("outside at 05:00 (%v) not colder than at 17:00 (%v)", p.Outside(at(5, 0)), p.Outside(at(17, 0)))
	}
}

func TestCO2(t *testing.T) {
	p := DefaultPhysics
	perPerson := p.CO2PerPerson * 1e6 / (p.RoomVolume * p.AirChanges)
	for _, c := range []struct {
		people int
		want   float64
	}{
		{0, p.CO2Outside},
		{1, p.CO2Outside + perPerson},
		{4, p.CO2Outside + 4*perPerson},
	} {
		if got := p.CO2Target(c.people); !near(got, c.want, 1e-9) {
			t.Errorf("CO2Target(%d) = %v, want %v", c.people, got, c.want)
		}
	}
	// Four people for one air change: 63 % of the way from 420 ppm.
	got := FirstOrder(p.CO2Outside, p.CO2Target(4), p.CO2Tau(), p.CO2Tau())
	if want := p.CO2Outside + 4*perPerson*(1-math.Exp(-1)); !near(got, want, 1e-6) {
		t.Errorf("CO2 after one air change with 4 people = %v, want %v", got, want)
	}
	if p.CO2Target(4) < co2Alarm {
		t.Errorf("a 4-person meeting never reaches the %d ppm alarm (equilibrium %v)", co2Alarm, p.CO2Target(4))
	}
}
