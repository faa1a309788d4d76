package drivers

import (
	"fmt"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/osmose-os/osmose/schema"
)

// Device names one device to drive: its path and class.
type Device struct {
	Path  string
	Class schema.DeviceClass
}

// Set is the drivers of a building's devices.
type Set struct {
	order   []string
	drivers map[string]client
}

// NewSet builds a driver for every device whose class has an interface.
// hardware returns the device's hardware: a value implementing the class's
// hardware interface (LightHardware for a light, SensorHardware for the
// four sensor classes, ...), or nil for a device the backend does not
// drive, which is skipped. A value of the wrong type is an error. now
// stamps readings and states.
func NewSet(devices []Device, hardware func(Device) any, now func() time.Time) (*Set, error) {
	s := &Set{drivers: map[string]client{}}
	for _, d := range devices {
		hw := hardware(d)
		if hw == nil {
			continue
		}
		var drv client
		var ok bool
		switch d.Class {
		case schema.DeviceClass_light:
			var h LightHardware
			if h, ok = hw.(LightHardware); ok {
				drv = NewLight(h, now)
			}
		case schema.DeviceClass_thermostat:
			var h ThermostatHardware
			if h, ok = hw.(ThermostatHardware); ok {
				drv = NewThermostat(h, now)
			}
		case schema.DeviceClass_occupancy, schema.DeviceClass_temperature, schema.DeviceClass_co2, schema.DeviceClass_illuminance:
			kind, unit, _ := ReadingKind(d.Class)
			var h SensorHardware
			if h, ok = hw.(SensorHardware); ok {
				drv = NewSensor(d.Path, kind, unit, h, now)
			}
		case schema.DeviceClass_doorLock:
			var h LockHardware
			if h, ok = hw.(LockHardware); ok {
				drv = NewDoorLock(h, now)
			}
		case schema.DeviceClass_display:
			var h DisplayHardware
			if h, ok = hw.(DisplayHardware); ok {
				drv = NewDisplay(h, 0)
			}
		case schema.DeviceClass_speaker:
			var h SpeakerHardware
			if h, ok = hw.(SpeakerHardware); ok {
				drv = NewSpeaker(h)
			}
		case schema.DeviceClass_microphone:
			var h MicrophoneHardware
			if h, ok = hw.(MicrophoneHardware); ok {
				drv = NewMicrophone(h)
			}
		case schema.DeviceClass_switch:
			var h SwitchHardware
			if h, ok = hw.(SwitchHardware); ok {
				drv = NewSwitch(d.Path, h, now)
			}
		default:
			continue
		}
		if !ok {
			return nil, fmt.Errorf("drivers: %s: hardware %T does not fit class %s", d.Path, hw, d.Class)
		}
		if _, dup := s.drivers[d.Path]; dup {
			return nil, fmt.Errorf("drivers: %s: device listed twice", d.Path)
		}
		s.order = append(s.order, d.Path)
		s.drivers[d.Path] = drv
	}
	return s, nil
}

// Clients returns a new client of every driver, by device path, for
// kernel.Config.Drivers (which takes ownership of them).
func (s *Set) Clients() map[string]capnp.Client {
	out := make(map[string]capnp.Client, len(s.drivers))
	for p, d := range s.drivers {
		out[p] = d.Client()
	}
	return out
}

// Len returns the number of drivers.
func (s *Set) Len() int { return len(s.order) }

// Paths returns the driven device paths in the order given to NewSet.
func (s *Set) Paths() []string { return append([]string(nil), s.order...) }

// Driver returns the driver of a device (*Light, *Sensor, ...), for a
// backend's or test's direct use.
func (s *Set) Driver(path string) (any, bool) {
	d, ok := s.drivers[path]
	return d, ok
}
