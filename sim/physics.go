package sim

import (
	"math"
	"time"
)

// Physics are the constants of the world model. Zero fields take the
// defaults of DefaultPhysics.
type Physics struct {
	// Tau is a room's thermal time constant: with the heating off, a room's
	// temperature closes 63 % of its gap to the equilibrium in Tau.
	Tau time.Duration
	// HeatGain and CoolGain are how far a running heater or cooler moves
	// the equilibrium temperature, in K.
	HeatGain, CoolGain float64
	// PersonHeat is how far each person in the room moves it, in K.
	PersonHeat float64
	// Hysteresis is the thermostat's dead band around its setpoint, in K.
	Hysteresis float64
	// OutsideMean and OutsideSwing give the outside temperature, a daily
	// sine coldest at 05:00 and warmest at 17:00, in °C.
	OutsideMean, OutsideSwing float64
	// Sunrise and Sunset bound daylight, in hours of building time.
	Sunrise, Sunset float64
	// DaylightPeak is the daylight inside a room at solar noon, in lux.
	DaylightPeak float64
	// LightLux is what one light at 100 % adds, in lux.
	LightLux float64
	// RoomVolume is a room's air volume in m³; AirChanges its ventilation
	// in air changes per hour.
	RoomVolume, AirChanges float64
	// CO2Outside is the outdoor CO2 concentration in ppm; CO2PerPerson
	// what one person breathes out, in m³ of CO2 per hour.
	CO2Outside, CO2PerPerson float64
}

// DefaultPhysics is an office in early spring.
var DefaultPhysics = Physics{
	Tau:          90 * time.Minute,
	HeatGain:     20,
	CoolGain:     10,
	PersonHeat:   0.4,
	Hysteresis:   0.3,
	OutsideMean:  8,
	OutsideSwing: 4,
	Sunrise:      7,
	Sunset:       19,
	DaylightPeak: 250,
	LightLux:     300,
	RoomVolume:   60,
	AirChanges:   1,
	CO2Outside:   420,
	CO2PerPerson: 0.018,
}

func (p Physics) withDefaults() Physics {
	d := DefaultPhysics
	set := func(v *float64, def float64) {
		if *v == 0 {
			*v = def
		}
	}
	if p.Tau == 0 {
		p.Tau = d.Tau
	}
	set(&p.HeatGain, d.HeatGain)
	set(&p.CoolGain, d.CoolGain)
	set(&p.PersonHeat, d.PersonHeat)
	set(&p.Hysteresis, d.Hysteresis)
	set(&p.OutsideMean, d.OutsideMean)
	set(&p.OutsideSwing, d.OutsideSwing)
	set(&p.Sunrise, d.Sunrise)
	set(&p.Sunset, d.Sunset)
	set(&p.DaylightPeak, d.DaylightPeak)
	set(&p.LightLux, d.LightLux)
	set(&p.RoomVolume, d.RoomVolume)
	set(&p.AirChanges, d.AirChanges)
	set(&p.CO2Outside, d.CO2Outside)
	set(&p.CO2PerPerson, d.CO2PerPerson)
	return p
}

// FirstOrder advances a first-order system: x moves toward target with
// time constant tau, exactly over a step of dt (x is held constant input
// over the step): target + (x - target)·e^(-dt/tau).
func FirstOrder(x, target float64, dt, tau time.Duration) float64 {
	if tau <= 0 {
		return target
	}
	return target + (x-target)*math.Exp(-float64(dt)/float64(tau))
}

// hours returns the time of day of t in hours (building time is UTC).
func hours(t time.Time) float64 {
	t = t.UTC()
	return float64(t.Hour()) + float64(t.Minute())/60 + float64(t.Second())/3600
}

// Outside returns the outside temperature at t, °C.
func (p Physics) Outside(t time.Time) float64 {
	return p.OutsideMean - p.OutsideSwing*math.Cos(2*math.Pi*(hours(t)-5)/24)
}

// Daylight returns the daylight inside a room at t, lux: a half sine from
// sunrise to sunset, zero at night.
func (p Physics) Daylight(t time.Time) float64 {
	h := hours(t)
	if h <= p.Sunrise || h >= p.Sunset {
		return 0
	}
	return p.DaylightPeak * math.Sin(math.Pi*(h-p.Sunrise)/(p.Sunset-p.Sunrise))
}

// Illuminance returns a room's illuminance at t with the given light
// levels (percent, 0 for a light that is off), lux.
func (p Physics) Illuminance(t time.Time, levels ...uint8) float64 {
	lx := p.Daylight(t)
	for _, l := range levels {
		lx += p.LightLux * float64(l) / 100
	}
	return lx
}

// CO2Target returns the equilibrium CO2 concentration of a room with n
// people, ppm: outdoor air plus what n people breathe out, diluted by the
// ventilation.
func (p Physics) CO2Target(n int) float64 {
	return p.CO2Outside + float64(n)*p.CO2PerPerson*1e6/(p.RoomVolume*p.AirChanges)
}

// CO2Tau is the time constant of a room's CO2: one air change.
func (p Physics) CO2Tau() time.Duration {
	return time.Duration(float64(time.Hour) / p.AirChanges)
}

// TempTarget returns the equilibrium temperature of a room at t with n
// people and the heater or cooler running or not, °C.
func (p Physics) TempTarget(t time.Time, n int, heating, cooling bool) float64 {
	x := p.Outside(t) + float64(n)*p.PersonHeat
	if heating {
		x += p.HeatGain
	}
	if cooling {
		x -= p.CoolGain
	}
	return x
}
