package mqtt

import (
	"context"
	"fmt"
	"math"
	"strings"

	"github.com/osmose-os/osmose/drivers"
	"github.com/osmose-os/osmose/schema"
)

// Brightness returns the Zigbee2MQTT brightness (1..254) of a light level
// in percent (1..100).
func Brightness(level uint8) int { return int(math.Round(float64(level) * 254 / 100)) }

// Level returns the level in percent of a Zigbee2MQTT brightness; Level
// undoes Brightness for every level of 1..100.
func Level(brightness int) uint8 {
	return uint8(max(0, min(100, math.Round(float64(brightness)*100/254))))
}

// isState reports whether the state field v is s, in any case.
func isState(v any, s string) bool {
	str, ok := v.(string)
	return ok && strings.EqualFold(str, s)
}

// light is a Zigbee2MQTT light: drivers.LightHardware.
type light struct{ *device }

// SetLight sends state (and brightness) and waits for the state to show it.
func (l *light) SetLight(on bool, level uint8) error {
	if !on {
		return l.command("set off", map[string]any{"state": "OFF"}, func(_, st map[string]any) (bool, string) {
			return isState(st["state"], "OFF"), ""
		})
	}
	br := Brightness(level)
	return l.command(fmt.Sprintf("set on at %d %%", level), map[string]any{"state": "ON", "brightness": br}, func(_, st map[string]any) (bool, string) {
		if !isState(st["state"], "ON") {
			return false, ""
		}
		got, ok := st["brightness"].(float64)
		return !ok || math.Abs(got-float64(br)) <= 1, ""
	})
}

// LightState is the state the light last reported: drivers.LightReporter.
func (l *light) LightState() (on bool, level uint8, known bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st, ok := l.state["state"].(string)
	if !ok {
		return false, 0, false
	}
	level = 100
	if br, ok := l.state["brightness"].(float64); ok {
		level = max(1, Level(int(br)))
	}
	return strings.EqualFold(st, "ON"), level, true
}

// thermostat is a Zigbee2MQTT climate device: drivers.ThermostatHardware.
type thermostat struct{ *device }

// modes are Zigbee2MQTT's system_mode values by schema mode.
var modes = map[schema.ThermostatMode]string{
	schema.ThermostatMode_off:  "off",
	schema.ThermostatMode_heat: "heat",
	schema.ThermostatMode_cool: "cool",
	schema.ThermostatMode_auto: "auto",
}

// SetThermostat sends setpoint and mode together and waits for the state to
// show both.
func (t *thermostat) SetThermostat(setpoint float64, mode schema.ThermostatMode) error {
	m, ok := modes[mode]
	if !ok {
		return fmt.Errorf("invalid: set thermostat: mode %d has no Zigbee2MQTT system_mode", mode)
	}
	cmd := map[string]any{"occupied_heating_setpoint": setpoint, "system_mode": m}
	return t.command(fmt.Sprintf("set %.1f °C %s", setpoint, m), cmd, func(_, st map[string]any) (bool, string) {
		sp, ok := st["occupied_heating_setpoint"].(float64)
		return ok && math.Abs(sp-setpoint) <= 0.25 && isState(st["system_mode"], m), ""
	})
}

// ThermostatState is the setpoint and mode the thermostat last reported:
// drivers.ThermostatReporter.
func (t *thermostat) ThermostatState() (setpoint float64, mode schema.ThermostatMode, known bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	sp, ok := t.state["occupied_heating_setpoint"].(float64)
	if !ok {
		return 0, 0, false
	}
	for m, name := range modes {
		if isState(t.state["system_mode"], name) {
			return sp, m, true
		}
	}
	return 0, 0, false
}

// Temperature is the device's local_temperature; NaN before it reported
// one.
func (t *thermostat) Temperature() float64 {
	if v, ok := t.field("local_temperature").(float64); ok {
		return v
	}
	return math.NaN()
}

// sensor is an occupancy, temperature, CO2 or illuminance sensor:
// drivers.SensorHardware.
type sensor struct {
	*device
	read func(msg map[string]any) (float64, bool)

	// guarded by device.mu
	value   float64
	publish func(ctx context.Context, v float64) error
}

// newSensor returns the hardware of a sensor device, reading the field of
// its class.
func newSensor(d *device) *sensor {
	s := &sensor{device: d, value: math.NaN()}
	field := map[schema.DeviceClass]string{
		schema.DeviceClass_temperature: "temperature",
		schema.DeviceClass_co2:         "co2",
	}[d.class]
	switch d.class {
	case schema.DeviceClass_occupancy:
		s.read = s.occupancy
	case schema.DeviceClass_illuminance:
		s.read = func(msg map[string]any) (float64, bool) {
			if _, ok := msg["illuminance_lux"]; ok {
				return d.number(msg, "illuminance_lux")
			}
			return d.number(msg, "illuminance")
		}
	default:
		s.read = func(msg map[string]any) (float64, bool) { return d.number(msg, field) }
	}
	return s
}

// occupancy reads Zigbee2MQTT's boolean occupancy as 0 or 1 people, and a
// number as that many.
func (s *sensor) occupancy(msg map[string]any) (float64, bool) {
	switch v := msg["occupancy"].(type) {
	case nil:
		return 0, false
	case bool:
		if v {
			return 1, true
		}
		return 0, true
	case float64:
		if v >= 0 {
			return v, true
		}
	}
	s.wrongType("occupancy", msg["occupancy"], "true, false or a count of people")
	return 0, false
}

// Sample is the last reading; NaN before the first.
func (s *sensor) Sample() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.value
}

// Watch sets the function live readings go to.
func (s *sensor) Watch(publish func(ctx context.Context, value float64) error) {
	s.mu.Lock()
	s.publish = publish
	s.mu.Unlock()
}

func (s *sensor) onState(msg map[string]any, retained bool) {
	v, ok := s.read(msg)
	if !ok {
		return
	}
	s.mu.Lock()
	s.value = v
	publish := s.publish
	s.mu.Unlock()
	if retained || publish == nil {
		return
	}
	s.enqueue(fmt.Sprintf("reading %v", v), func(ctx context.Context) error { return publish(ctx, v) })
}

// lock is a Zigbee2MQTT lock: drivers.LockHardware.
type lock struct{ *device }

// SetLocked sends LOCK or UNLOCK and waits for the state to show it.
func (l *lock) SetLocked(locked bool) error {
	want := "UNLOCK"
	if locked {
		want = "LOCK"
	}
	return l.command(strings.ToLower(want), map[string]any{"state": want}, func(_, st map[string]any) (bool, string) {
		return isState(st["state"], want), ""
	})
}

// LockState is whether the lock last reported itself locked:
// drivers.LockReporter.
func (l *lock) LockState() (locked, known bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch st := l.state["state"]; {
	case isState(st, "LOCK"):
		return true, true
	case isState(st, "UNLOCK"):
		return false, true
	}
	return false, false
}

// DoorOpen: Zigbee2MQTT's contact is true while the door is closed.
func (l *lock) DoorOpen() bool { return l.field("contact") == false }

// display is a text panel on the transaction convention:
// drivers.DisplayHardware.
type display struct{ *device }

// Show sends the text and waits for the answer to its transaction.
func (d *display) Show(text string) error {
	return d.txCommand("show", map[string]any{"text": text})
}

// speaker is a loudspeaker on the transaction convention:
// drivers.SpeakerHardware.
type speaker struct{ *device }

// Play, Say, SetVolume and Stop send one transaction each and wait for its
// answer; Playing is the state's playing.
func (s *speaker) Play(sound string) error { return s.txCommand("play", map[string]any{"play": sound}) }
func (s *speaker) Say(text string) error   { return s.txCommand("say", map[string]any{"say": text}) }
func (s *speaker) SetVolume(v uint8) error {
	return s.txCommand("set volume", map[string]any{"volume": v})
}
func (s *speaker) Stop() error { return s.txCommand("stop", map[string]any{"stop": true}) }

// SpeakerVolume is the volume the speaker last reported:
// drivers.SpeakerReporter.
func (s *speaker) SpeakerVolume() (volume uint8, known bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.state["volume"].(float64)
	if !ok || v < 0 {
		return 0, false
	}
	return uint8(min(v, 100)), true
}
func (s *speaker) Playing() bool { return s.field("playing") == true }

// button is a Zigbee2MQTT remote or switch: drivers.SwitchHardware.
type button struct {
	*device
	names []string

	event func(ctx context.Context, kind schema.SwitchEventKind, button uint8) error // guarded by device.mu
}

// Buttons is the number of named buttons, or 1.
func (s *button) Buttons() int { return max(1, len(s.names)) }

// Watch sets the function button events go to.
func (s *button) Watch(event func(ctx context.Context, kind schema.SwitchEventKind, button uint8) error) {
	s.mu.Lock()
	s.event = event
	s.mu.Unlock()
}

func (s *button) onState(msg map[string]any, retained bool) {
	v, present := msg["action"]
	if !present {
		return
	}
	action, ok := v.(string)
	if !ok {
		s.wrongType("action", v, "a string")
		return
	}
	if action == "" || retained {
		return
	}
	evs, err := ParseAction(action, s.names)
	if err != nil {
		s.b.log.Warn("mqtt: switch action ignored", "device", s.id(), "topic", s.stateTopic, "err", err)
		return
	}
	s.mu.Lock()
	event := s.event
	s.mu.Unlock()
	if event == nil {
		return
	}
	s.enqueue("action "+action, func(ctx context.Context) error {
		var first error
		for _, e := range evs {
			if err := event(ctx, e.Kind, e.Button); err != nil && first == nil {
				first = err
			}
		}
		return first
	})
}

// microphone streams binary frames on its audio topic:
// drivers.MicrophoneHardware.
type microphone struct {
	*device

	frame func(ctx context.Context, data []byte) error // guarded by device.mu
}

// Format is the format the state's "audio" object announces, by default
// pcm_s16le, 16 kHz, mono.
func (m *microphone) Format() (schema.AudioEncoding, uint32, uint8) {
	enc, rate, ch := schema.AudioEncoding_pcmS16le, uint32(16000), uint8(1)
	a, _ := m.field("audio").(map[string]any)
	if a == nil {
		return enc, rate, ch
	}
	if e, _ := a["encoding"].(string); e == "opus" {
		enc = schema.AudioEncoding_opus
	}
	if r, ok := a["sample_rate"].(float64); ok && r >= 1 && r <= math.MaxUint32 {
		rate = uint32(r)
	}
	if c, ok := a["channels"].(float64); ok && c >= 1 && c <= math.MaxUint8 {
		ch = uint8(c)
	}
	return enc, rate, ch
}

// Watch sets the function frames go to.
func (m *microphone) Watch(frame func(ctx context.Context, data []byte) error) {
	m.mu.Lock()
	m.frame = frame
	m.mu.Unlock()
}

func (m *microphone) onAudio(data []byte) {
	m.mu.Lock()
	frame := m.frame
	m.mu.Unlock()
	if frame == nil {
		return
	}
	m.enqueue(fmt.Sprintf("audio frame of %d bytes", len(data)), func(ctx context.Context) error { return frame(ctx, data) })
}

var (
	_ drivers.LightHardware      = (*light)(nil)
	_ drivers.ThermostatHardware = (*thermostat)(nil)
	_ drivers.SensorHardware     = (*sensor)(nil)
	_ drivers.LockHardware       = (*lock)(nil)
	_ drivers.DisplayHardware    = (*display)(nil)
	_ drivers.SpeakerHardware    = (*speaker)(nil)
	_ drivers.SwitchHardware     = (*button)(nil)
	_ drivers.MicrophoneHardware = (*microphone)(nil)
)
