package drivers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/osmose-os/osmose/internal/idleserver"
	"github.com/osmose-os/osmose/schema"
)

// hardwareError passes an error that already names its kind (see the
// schema's error section: "invalid: ...", "not-exist: ...") to the caller
// unchanged, and prefixes any other with the device class.
func hardwareError(class string, err error) error {
	msg := err.Error()
	for _, k := range []string{"permission: ", "not-exist: ", "revoked: ", "invalid: ", "overloaded: "} {
		if strings.HasPrefix(msg, k) {
			return err
		}
	}
	return fmt.Errorf("%s: %w", class, err)
}

// Light drives a luminaire: schema.Light.
type Light struct {
	hw  LightHardware
	now func() time.Time

	mu    sync.Mutex
	on    bool
	level uint8 // the level it has, or would have, when on
	time  int64
}

// NewLight returns the driver of a light: off at 100 %, or as its
// hardware reports it (LightReporter).
func NewLight(hw LightHardware, now func() time.Time) *Light {
	l := &Light{hw: hw, now: now, level: 100}
	if r, ok := hw.(LightReporter); ok {
		if on, level, known := r.LightState(); known {
			l.on = on
			if level > 0 {
				l.level = min(level, 100)
			}
		}
	}
	return l
}

// Client returns a new capability on the driver; the caller releases it.
func (l *Light) Client() capnp.Client {
	return idleserver.Of[schema.Light_Server](schema.Light_Methods, l)
}

func (l *Light) apply(on bool, level uint8) error {
	if err := l.hw.SetLight(on, level); err != nil {
		return fmt.Errorf("light: %w", err)
	}
	l.on, l.level, l.time = on, level, l.now().UnixNano()
	return nil
}

func (l *Light) Set(ctx context.Context, call schema.Light_set) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	level := l.level
	if level == 0 {
		level = 100
	}
	return l.apply(call.Args().On(), level)
}

func (l *Light) SetLevel(ctx context.Context, call schema.Light_setLevel) error {
	lv := call.Args().Level()
	if lv > 100 {
		return fmt.Errorf("invalid: setLevel: level %d above 100", lv)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if lv == 0 {
		return l.apply(false, l.level)
	}
	return l.apply(true, lv)
}

func (l *Light) State(ctx context.Context, call schema.Light_state) error {
	l.mu.Lock()
	on, level, t := l.on, l.level, l.time
	l.mu.Unlock()
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	st, err := res.NewState()
	if err != nil {
		return err
	}
	st.SetOn(on)
	st.SetLevel(level)
	st.SetTime(t)
	return nil
}

// Thermostat drives a room controller: schema.Thermostat.
type Thermostat struct {
	hw  ThermostatHardware
	now func() time.Time

	mu       sync.Mutex
	setpoint float64
	mode     schema.ThermostatMode
}

// Setpoint limits of a thermostat, °C.
const (
	MinSetpoint = 5
	MaxSetpoint = 35
)

// NewThermostat returns the driver of a thermostat: at 20 °C, mode off,
// which it tells the hardware, or, without a word to it, as its hardware
// reports it (ThermostatReporter).
func NewThermostat(hw ThermostatHardware, now func() time.Time) *Thermostat {
	t := &Thermostat{hw: hw, now: now, setpoint: 20, mode: schema.ThermostatMode_off}
	if r, ok := hw.(ThermostatReporter); ok {
		if sp, mode, known := r.ThermostatState(); known {
			t.setpoint, t.mode = sp, mode
		}
		return t
	}
	_ = hw.SetThermostat(t.setpoint, t.mode)
	return t
}

func (t *Thermostat) Client() capnp.Client {
	return idleserver.Of[schema.Thermostat_Server](schema.Thermostat_Methods, t)
}

func (t *Thermostat) SetSetpoint(ctx context.Context, call schema.Thermostat_setSetpoint) error {
	c := call.Args().Celsius()
	if !(c >= MinSetpoint && c <= MaxSetpoint) {
		return fmt.Errorf("invalid: setSetpoint: %.1f °C outside %d..%d", c, MinSetpoint, MaxSetpoint)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.hw.SetThermostat(c, t.mode); err != nil {
		return fmt.Errorf("thermostat: %w", err)
	}
	t.setpoint = c
	return nil
}

func (t *Thermostat) SetMode(ctx context.Context, call schema.Thermostat_setMode) error {
	m := call.Args().Mode()
	if m > schema.ThermostatMode_auto {
		return fmt.Errorf("invalid: setMode: unknown mode %d", m)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.hw.SetThermostat(t.setpoint, m); err != nil {
		return fmt.Errorf("thermostat: %w", err)
	}
	t.mode = m
	return nil
}

func (t *Thermostat) State(ctx context.Context, call schema.Thermostat_state) error {
	t.mu.Lock()
	sp, mode := t.setpoint, t.mode
	t.mu.Unlock()
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	st, err := res.NewState()
	if err != nil {
		return err
	}
	st.SetTemperature(t.hw.Temperature())
	st.SetSetpoint(sp)
	st.SetMode(mode)
	st.SetTime(t.now().UnixNano())
	return nil
}

// Sensor drives a measuring element: schema.Sensor.
type Sensor struct {
	path string
	kind schema.ReadingKind
	unit string
	hw   SensorHardware
	now  func() time.Time
	subs subscribers[schema.ReadingListener]
}

// ReadingKind returns the reading kind and unit of a sensor class, and
// false for a class that is not a sensor.
func ReadingKind(c schema.DeviceClass) (schema.ReadingKind, string, bool) {
	switch c {
	case schema.DeviceClass_occupancy:
		return schema.ReadingKind_occupancy, "people", true
	case schema.DeviceClass_temperature:
		return schema.ReadingKind_temperature, "°C", true
	case schema.DeviceClass_co2:
		return schema.ReadingKind_co2, "ppm", true
	case schema.DeviceClass_illuminance:
		return schema.ReadingKind_illuminance, "lx", true
	}
	return schema.ReadingKind_other, "", false
}

// NewSensor returns the driver of the sensor at path (the path goes into
// its readings) measuring kind in unit. It watches hw for new readings.
func NewSensor(path string, kind schema.ReadingKind, unit string, hw SensorHardware, now func() time.Time) *Sensor {
	s := &Sensor{path: path, kind: kind, unit: unit, hw: hw, now: now}
	hw.Watch(s.publish)
	return s
}

func (s *Sensor) Client() capnp.Client {
	return idleserver.Of[schema.Sensor_Server](schema.Sensor_Methods, s)
}

// Subscribers returns the number of live subscriptions.
func (s *Sensor) Subscribers() int { return s.subs.count() }

func (s *Sensor) fill(r schema.Reading, v float64) error {
	r.SetKind(s.kind)
	r.SetValue(v)
	r.SetTime(s.now().UnixNano())
	if err := r.SetUnit(s.unit); err != nil {
		return err
	}
	return r.SetDevice(s.path)
}

func (s *Sensor) Read(ctx context.Context, call schema.Sensor_read) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	r, err := res.NewReading()
	if err != nil {
		return err
	}
	return s.fill(r, s.hw.Sample())
}

func (s *Sensor) Subscribe(ctx context.Context, call schema.Sensor_subscribe) error {
	l := call.Args().Listener()
	if !l.IsValid() {
		return errors.New("invalid: subscribe: no listener")
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetSubscription(s.subs.add(l, release))
}

// publish delivers a reading to every subscriber in order, waiting for
// each, and returns the first error.
func (s *Sensor) publish(ctx context.Context, v float64) error {
	var first error
	for _, l := range s.subs.snapshot() {
		f, rel := l.Reading(ctx, func(p schema.ReadingListener_reading_Params) error {
			r, err := p.NewReading()
			if err != nil {
				return err
			}
			return s.fill(r, v)
		})
		if _, err := f.Struct(); err != nil && first == nil {
			first = err
		}
		rel()
		l.Release()
	}
	return first
}

// DoorLock drives an electric lock: schema.DoorLock.
type DoorLock struct {
	hw  LockHardware
	now func() time.Time

	mu       sync.Mutex
	locked   bool
	relockAt int64
	time     int64
}

// NewDoorLock returns the driver of a lock: locked, which it tells the
// hardware, or, without a word to it, as its hardware reports it
// (LockReporter; a lock that has reported nothing is taken as locked).
func NewDoorLock(hw LockHardware, now func() time.Time) *DoorLock {
	d := &DoorLock{hw: hw, now: now, locked: true}
	if r, ok := hw.(LockReporter); ok {
		if locked, known := r.LockState(); known {
			d.locked = locked
		}
		return d
	}
	_ = hw.SetLocked(true)
	return d
}

func (d *DoorLock) Client() capnp.Client {
	return idleserver.Of[schema.DoorLock_Server](schema.DoorLock_Methods, d)
}

// Poll locks the door again if a pending unlockFor has run out. The
// backend calls it as its time passes; state and every call poll too.
func (d *DoorLock) Poll() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.poll()
}

func (d *DoorLock) poll() error {
	if d.relockAt == 0 {
		return nil
	}
	now := d.now().UnixNano()
	if now < d.relockAt {
		return nil
	}
	if err := d.hw.SetLocked(true); err != nil {
		return fmt.Errorf("lock: %w", err)
	}
	d.locked, d.time, d.relockAt = true, d.relockAt, 0
	return nil
}

func (d *DoorLock) set(locked bool, relockAt int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.hw.SetLocked(locked); err != nil {
		return fmt.Errorf("lock: %w", err)
	}
	d.locked, d.relockAt, d.time = locked, relockAt, d.now().UnixNano()
	return nil
}

func (d *DoorLock) Lock(ctx context.Context, call schema.DoorLock_lock) error {
	return d.set(true, 0)
}

func (d *DoorLock) Unlock(ctx context.Context, call schema.DoorLock_unlock) error {
	return d.set(false, 0)
}

func (d *DoorLock) UnlockFor(ctx context.Context, call schema.DoorLock_unlockFor) error {
	s := call.Args().Seconds()
	if s == 0 || s > 3600 {
		return fmt.Errorf("invalid: unlockFor: %d s outside 1..3600", s)
	}
	return d.set(false, d.now().Add(time.Duration(s)*time.Second).UnixNano())
}

func (d *DoorLock) State(ctx context.Context, call schema.DoorLock_state) error {
	d.mu.Lock()
	err := d.poll()
	locked, relock, t := d.locked, d.relockAt, d.time
	d.mu.Unlock()
	if err != nil {
		return err
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	st, err := res.NewState()
	if err != nil {
		return err
	}
	st.SetLocked(locked)
	st.SetOpen(d.hw.DoorOpen())
	st.SetRelockAt(relock)
	st.SetTime(t)
	return nil
}

// Display drives a text panel: schema.Display.
type Display struct {
	hw DisplayHardware
	// MaxText is the number of bytes the panel holds; longer text is cut
	// (at a UTF-8 boundary).
	maxText int

	mu   sync.Mutex
	text string
}

// NewDisplay returns the driver of a panel holding maxText bytes (0: 1024).
func NewDisplay(hw DisplayHardware, maxText int) *Display {
	if maxText <= 0 {
		maxText = 1024
	}
	return &Display{hw: hw, maxText: maxText}
}

func (d *Display) Client() capnp.Client {
	return idleserver.Of[schema.Display_Server](schema.Display_Methods, d)
}

func (d *Display) show(t string) error {
	if len(t) > d.maxText {
		cut := d.maxText
		for cut > 0 && t[cut]&0xC0 == 0x80 { // inside a UTF-8 sequence
			cut--
		}
		t = t[:cut]
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.hw.Show(t); err != nil {
		return fmt.Errorf("display: %w", err)
	}
	d.text = t
	return nil
}

func (d *Display) Show(ctx context.Context, call schema.Display_show) error {
	t, err := call.Args().Text()
	if err != nil {
		return fmt.Errorf("invalid: show: %w", err)
	}
	return d.show(t)
}

func (d *Display) Clear(ctx context.Context, call schema.Display_clear) error { return d.show("") }

func (d *Display) Content(ctx context.Context, call schema.Display_content) error {
	d.mu.Lock()
	t := d.text
	d.mu.Unlock()
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetText(t)
}

// Speaker drives a loudspeaker: schema.Speaker.
type Speaker struct {
	hw SpeakerHardware

	mu     sync.Mutex
	volume uint8
}

// NewSpeaker returns the driver of a speaker: at 50 % volume, which it
// tells the hardware, or, without a word to it, as its hardware reports it
// (SpeakerReporter).
func NewSpeaker(hw SpeakerHardware) *Speaker {
	s := &Speaker{hw: hw, volume: 50}
	if r, ok := hw.(SpeakerReporter); ok {
		if v, known := r.SpeakerVolume(); known {
			s.volume = min(v, 100)
		}
		return s
	}
	_ = hw.SetVolume(50)
	return s
}

func (s *Speaker) Client() capnp.Client {
	return idleserver.Of[schema.Speaker_Server](schema.Speaker_Methods, s)
}

func (s *Speaker) Play(ctx context.Context, call schema.Speaker_play) error {
	name, err := call.Args().Sound()
	if err != nil {
		return fmt.Errorf("invalid: play: %w", err)
	}
	if err := s.hw.Play(name); err != nil {
		return hardwareError("speaker", err)
	}
	return nil
}

func (s *Speaker) Say(ctx context.Context, call schema.Speaker_say) error {
	t, err := call.Args().Text()
	if err != nil {
		return fmt.Errorf("invalid: say: %w", err)
	}
	if err := s.hw.Say(t); err != nil {
		return fmt.Errorf("speaker: %w", err)
	}
	return nil
}

func (s *Speaker) SetVolume(ctx context.Context, call schema.Speaker_setVolume) error {
	v := call.Args().Volume()
	if v > 100 {
		return fmt.Errorf("invalid: setVolume: volume %d above 100", v)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.hw.SetVolume(v); err != nil {
		return fmt.Errorf("speaker: %w", err)
	}
	s.volume = v
	return nil
}

func (s *Speaker) Stop(ctx context.Context, call schema.Speaker_stop) error {
	if err := s.hw.Stop(); err != nil {
		return fmt.Errorf("speaker: %w", err)
	}
	return nil
}

func (s *Speaker) State(ctx context.Context, call schema.Speaker_state) error {
	s.mu.Lock()
	v := s.volume
	s.mu.Unlock()
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	st, err := res.NewState()
	if err != nil {
		return err
	}
	st.SetVolume(v)
	st.SetPlaying(s.hw.Playing())
	return nil
}

// Switch drives a push-button panel: schema.Switch.
type Switch struct {
	path string
	hw   SwitchHardware
	now  func() time.Time
	subs subscribers[schema.SwitchListener]

	mu      sync.Mutex
	pressed []bool
}

// NewSwitch returns the driver of the switch at path (the path goes into
// its events). It watches hw for button events.
func NewSwitch(path string, hw SwitchHardware, now func() time.Time) *Switch {
	n := max(hw.Buttons(), 1)
	s := &Switch{path: path, hw: hw, now: now, pressed: make([]bool, n)}
	hw.Watch(s.event)
	return s
}

func (s *Switch) Client() capnp.Client {
	return idleserver.Of[schema.Switch_Server](schema.Switch_Methods, s)
}

func (s *Switch) Subscribe(ctx context.Context, call schema.Switch_subscribe) error {
	l := call.Args().Listener()
	if !l.IsValid() {
		return errors.New("invalid: subscribe: no listener")
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetSubscription(s.subs.add(l, release))
}

func (s *Switch) Pressed(ctx context.Context, call schema.Switch_pressed) error {
	s.mu.Lock()
	p := append([]bool(nil), s.pressed...)
	s.mu.Unlock()
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	l, err := res.NewButtons(int32(len(p)))
	if err != nil {
		return err
	}
	for i, b := range p {
		l.Set(i, b)
	}
	return nil
}

// event records a button event and delivers it to every listener in
// order, waiting for each; events are never coalesced.
func (s *Switch) event(ctx context.Context, kind schema.SwitchEventKind, button uint8) error {
	s.mu.Lock()
	if int(button) >= len(s.pressed) {
		s.mu.Unlock()
		return fmt.Errorf("invalid: switch event: button %d of %d", button, len(s.pressed))
	}
	switch kind {
	case schema.SwitchEventKind_press:
		s.pressed[button] = true
	case schema.SwitchEventKind_release:
		s.pressed[button] = false
	}
	s.mu.Unlock()
	t := s.now().UnixNano()
	var first error
	for _, l := range s.subs.snapshot() {
		f, rel := l.Event(ctx, func(p schema.SwitchListener_event_Params) error {
			e, err := p.NewEvent()
			if err != nil {
				return err
			}
			e.SetKind(kind)
			e.SetButton(button)
			e.SetTime(t)
			return e.SetDevice(s.path)
		})
		if _, err := f.Struct(); err != nil && first == nil {
			first = err
		}
		rel()
		l.Release()
	}
	return first
}

// Microphone drives a microphone: schema.Microphone.
type Microphone struct {
	hw    MicrophoneHardware
	sinks subscribers[schema.AudioSink]
}

// NewMicrophone returns the driver of a microphone. It watches hw for
// frames.
func NewMicrophone(hw MicrophoneHardware) *Microphone {
	m := &Microphone{hw: hw}
	hw.Watch(m.frame)
	return m
}

func (m *Microphone) Client() capnp.Client {
	return idleserver.Of[schema.Microphone_Server](schema.Microphone_Methods, m)
}

func (m *Microphone) fillFormat(f schema.AudioFormat) {
	enc, rate, ch := m.hw.Format()
	f.SetEncoding(enc)
	f.SetSampleRate(rate)
	f.SetChannels(ch)
}

func (m *Microphone) Format(ctx context.Context, call schema.Microphone_format) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	f, err := res.NewFormat()
	if err != nil {
		return err
	}
	m.fillFormat(f)
	return nil
}

func (m *Microphone) Record(ctx context.Context, call schema.Microphone_record) error {
	sink := call.Args().Sink()
	if !sink.IsValid() {
		return errors.New("invalid: record: no sink")
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	f, err := res.NewFormat()
	if err != nil {
		return err
	}
	m.fillFormat(f)
	// When the recording ends, sink.done is called once, off the caller's
	// goroutine (cancel may run inside a call on the sink's connection).
	return res.SetRecording(m.sinks.add(sink, func(s schema.AudioSink) {
		f, rel := s.Done(context.Background(), nil)
		go func() {
			<-f.Done()
			rel()
			s.Release()
		}()
	}))
}

// Recordings returns the number of recordings running.
func (m *Microphone) Recordings() int { return m.sinks.count() }

// frame sends one frame to every recording, in order, and waits until each
// stream has accepted it.
func (m *Microphone) frame(ctx context.Context, data []byte) error {
	var first error
	for _, s := range m.sinks.snapshot() {
		err := s.Write(ctx, func(p schema.AudioSink_write_Params) error { return p.SetFrame(data) })
		if err == nil {
			err = s.WaitStreaming()
		}
		if err != nil && first == nil {
			first = err
		}
		s.Release()
	}
	return first
}

var (
	_ client = (*Light)(nil)
	_ client = (*Microphone)(nil)
)
