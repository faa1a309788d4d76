package drivers

import (
	"context"

	"github.com/osmose-os/osmose/schema"
)

// A bridge to real devices knows the state each device last reported, and
// must not command a building because osmose started: its hardware
// implements the Reporter interface of the class, and the driver starts
// from the reported state and sends nothing (known false: the device has
// reported none yet; the driver keeps its defaults, still sending
// nothing). Hardware without one (the simulator's) is put in a known
// state when its driver is made.

// LightReporter is LightHardware that knows the light's present state.
type LightReporter interface {
	LightState() (on bool, level uint8, known bool)
}

// ThermostatReporter is ThermostatHardware that knows the setpoint and
// mode the thermostat has.
type ThermostatReporter interface {
	ThermostatState() (setpoint float64, mode schema.ThermostatMode, known bool)
}

// LockReporter is LockHardware that knows whether the lock is locked.
type LockReporter interface {
	LockState() (locked, known bool)
}

// SpeakerReporter is SpeakerHardware that knows the speaker's volume.
type SpeakerReporter interface {
	SpeakerVolume() (volume uint8, known bool)
}

// LightHardware is a luminaire's output stage.
type LightHardware interface {
	// SetLight drives the luminaire: off, or on at level percent (1..100).
	SetLight(on bool, level uint8) error
}

// ThermostatHardware is a room's heating/cooling controller. The hardware
// regulates; the driver only tells it the target.
type ThermostatHardware interface {
	// SetThermostat sets the target temperature and the mode.
	SetThermostat(setpoint float64, mode schema.ThermostatMode) error
	// Temperature is the temperature the thermostat measures now, in °C.
	Temperature() float64
}

// SensorHardware is a measuring element: occupancy, temperature, CO2 or
// illuminance, in the units of its ReadingKind.
type SensorHardware interface {
	// Sample returns the value the sensor measures now.
	Sample() float64
	// Watch gives the hardware the function to call with every new
	// reading. publish returns when every subscriber has been told (or
	// failed); the hardware calls it from one goroutine at a time.
	Watch(publish func(ctx context.Context, value float64) error)
}

// LockHardware is an electric door lock with an optional door-position
// contact.
type LockHardware interface {
	SetLocked(locked bool) error
	// DoorOpen reports whether the door stands open; false without a
	// contact.
	DoorOpen() bool
}

// DisplayHardware is a text panel.
type DisplayHardware interface {
	// Show replaces the panel's text; "" blanks it.
	Show(text string) error
}

// SpeakerHardware is a loudspeaker with built-in sounds and speech.
type SpeakerHardware interface {
	// Play plays a built-in sound; for a sound the device lacks, an error
	// of kind not-exist ("not-exist: play: no sound \"gong\"").
	Play(sound string) error
	Say(text string) error
	SetVolume(volume uint8) error
	Stop() error
	// Playing reports whether something is playing or being said now.
	Playing() bool
}

// SwitchHardware is a panel of push buttons.
type SwitchHardware interface {
	// Buttons is the number of buttons, at least 1.
	Buttons() int
	// Watch gives the hardware the function to call with every press,
	// release and long press; event returns when every listener has the
	// event.
	Watch(event func(ctx context.Context, kind schema.SwitchEventKind, button uint8) error)
}

// MicrophoneHardware is a microphone capsule and its encoder.
type MicrophoneHardware interface {
	// Format is the format of the frames it produces.
	Format() (encoding schema.AudioEncoding, sampleRate uint32, channels uint8)
	// Watch gives the hardware the function to call with every frame of
	// audio; frame returns when every recording has accepted it.
	Watch(frame func(ctx context.Context, data []byte) error)
}
