package kerneltest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/osmose-os/osmose/internal/idleserver"
	"github.com/osmose-os/osmose/schema"
)

// Clock is a deterministic clock: each Now is one microsecond after the
// previous one. Safe for concurrent use.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock starting at start.
func NewClock(start time.Time) *Clock { return &Clock{t: start} }

// Now returns the next instant.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Microsecond)
	return c.t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// Light is an in-memory dimmable light.
type Light struct {
	Path string
	now  func() time.Time

	mu    sync.Mutex
	on    bool
	level uint8
	time  int64
	calls int
}

// NewLight returns a light, off at 100 %.
func NewLight(path string, now func() time.Time) *Light {
	return &Light{Path: path, now: now, level: 100}
}

// State returns what the light is doing and how many calls it served.
func (l *Light) State() (on bool, level uint8, calls int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.on, l.level, l.calls
}

func (l *Light) Set(ctx context.Context, call schema.Light_set) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls++
	l.on = call.Args().On()
	if l.on && l.level == 0 {
		l.level = 100
	}
	l.time = l.now().UnixNano()
	return nil
}

func (l *Light) SetLevel(ctx context.Context, call schema.Light_setLevel) error {
	lv := call.Args().Level()
	if lv > 100 {
		return fmt.Errorf("invalid: setLevel: level %d above 100", lv)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls++
	if lv == 0 {
		l.on = false
	} else {
		l.on, l.level = true, lv
	}
	l.time = l.now().UnixNano()
	return nil
}

// lightServer adapts Light to schema.Light_Server (State is taken by the
// test accessor).
type lightServer struct{ *Light }

func (s lightServer) State(ctx context.Context, call schema.Light_state) error {
	s.mu.Lock()
	on, level, t := s.on, s.level, s.time
	s.calls++
	s.mu.Unlock()
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

// Client returns a new capability on the light; the caller releases it.
func (l *Light) Client() capnp.Client {
	return idleserver.Of[schema.Light_Server](schema.Light_Methods, lightServer{l})
}

// Thermostat is an in-memory thermostat in a room at a fixed temperature.
type Thermostat struct {
	now func() time.Time

	mu       sync.Mutex
	temp     float64
	setpoint float64
	mode     schema.ThermostatMode
}

func NewThermostat(now func() time.Time) *Thermostat {
	return &Thermostat{now: now, temp: 20, setpoint: 20}
}

func (t *Thermostat) Client() capnp.Client {
	return idleserver.Of[schema.Thermostat_Server](schema.Thermostat_Methods, t)
}

func (t *Thermostat) SetSetpoint(ctx context.Context, call schema.Thermostat_setSetpoint) error {
	c := call.Args().Celsius()
	if c < 5 || c > 35 {
		return fmt.Errorf("invalid: setSetpoint: %.1f °C outside 5..35", c)
	}
	t.mu.Lock()
	t.setpoint = c
	t.mu.Unlock()
	return nil
}

func (t *Thermostat) SetMode(ctx context.Context, call schema.Thermostat_setMode) error {
	t.mu.Lock()
	t.mode = call.Args().Mode()
	t.mu.Unlock()
	return nil
}

func (t *Thermostat) State(ctx context.Context, call schema.Thermostat_state) error {
	t.mu.Lock()
	temp, sp, mode := t.temp, t.setpoint, t.mode
	t.mu.Unlock()
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	st, err := res.NewState()
	if err != nil {
		return err
	}
	st.SetTemperature(temp)
	st.SetSetpoint(sp)
	st.SetMode(mode)
	st.SetTime(t.now().UnixNano())
	return nil
}

// Sensor is an in-memory sensor whose readings the test publishes.
type Sensor struct {
	Path string
	Kind schema.ReadingKind
	Unit string
	now  func() time.Time

	mu    sync.Mutex
	value float64
	subs  map[*subscription]schema.ReadingListener
}

func NewSensor(path string, kind schema.ReadingKind, unit string, now func() time.Time) *Sensor {
	return &Sensor{Path: path, Kind: kind, Unit: unit, now: now, subs: map[*subscription]schema.ReadingListener{}}
}

func (s *Sensor) Client() capnp.Client {
	return idleserver.Of[schema.Sensor_Server](schema.Sensor_Methods, s)
}

func (s *Sensor) fill(r schema.Reading, v float64) {
	r.SetKind(s.Kind)
	r.SetValue(v)
	r.SetUnit(s.Unit)
	r.SetTime(s.now().UnixNano())
	r.SetDevice(s.Path)
}

func (s *Sensor) Read(ctx context.Context, call schema.Sensor_read) error {
	s.mu.Lock()
	v := s.value
	s.mu.Unlock()
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	r, err := res.NewReading()
	if err != nil {
		return err
	}
	s.fill(r, v)
	return nil
}

func (s *Sensor) Subscribe(ctx context.Context, call schema.Sensor_subscribe) error {
	l := call.Args().Listener()
	if !l.IsValid() {
		return errors.New("invalid: subscribe: no listener")
	}
	sub := &subscription{}
	s.mu.Lock()
	s.subs[sub] = l.AddRef()
	s.mu.Unlock()
	sub.cancel = func() {
		s.mu.Lock()
		l, ok := s.subs[sub]
		delete(s.subs, sub)
		s.mu.Unlock()
		if ok {
			l.Release()
		}
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetSubscription(schema.Subscription(idleserver.Of[schema.Subscription_Server](schema.Subscription_Methods, sub)))
}

// Subscribers returns the number of live subscriptions.
func (s *Sensor) Subscribers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.subs)
}

// Publish records a new reading and delivers it to every subscriber,
// waiting for each listener to return. It returns the first delivery
// error.
func (s *Sensor) Publish(ctx context.Context, v float64) error {
	s.mu.Lock()
	s.value = v
	ls := make([]schema.ReadingListener, 0, len(s.subs))
	for _, l := range s.subs {
		ls = append(ls, l.AddRef())
	}
	s.mu.Unlock()
	var first error
	for _, l := range ls {
		f, rel := l.Reading(ctx, func(p schema.ReadingListener_reading_Params) error {
			r, err := p.NewReading()
			if err != nil {
				return err
			}
			s.fill(r, v)
			return nil
		})
		if _, err := f.Struct(); err != nil && first == nil {
			first = err
		}
		rel()
		l.Release()
	}
	return first
}

// subscription is a running subscription of a fake; releasing or
// cancelling it stops deliveries.
type subscription struct {
	once   sync.Once
	cancel func()
}

func (s *subscription) Cancel(ctx context.Context, call schema.Subscription_cancel) error {
	s.once.Do(s.cancel)
	return nil
}

func (s *subscription) Shutdown() { s.once.Do(s.cancel) }

// DoorLock is an in-memory door lock.
type DoorLock struct {
	now func() time.Time

	mu       sync.Mutex
	locked   bool
	relockAt int64
	time     int64
}

func NewDoorLock(now func() time.Time) *DoorLock { return &DoorLock{now: now, locked: true} }

func (d *DoorLock) Client() capnp.Client {
	return idleserver.Of[schema.DoorLock_Server](schema.DoorLock_Methods, d)
}

func (d *DoorLock) set(locked bool, relock int64) {
	d.mu.Lock()
	d.locked, d.relockAt, d.time = locked, relock, d.now().UnixNano()
	d.mu.Unlock()
}

func (d *DoorLock) Lock(ctx context.Context, call schema.DoorLock_lock) error {
	d.set(true, 0)
	return nil
}

func (d *DoorLock) Unlock(ctx context.Context, call schema.DoorLock_unlock) error {
	d.set(false, 0)
	return nil
}

func (d *DoorLock) UnlockFor(ctx context.Context, call schema.DoorLock_unlockFor) error {
	s := call.Args().Seconds()
	if s == 0 || s > 3600 {
		return fmt.Errorf("invalid: unlockFor: %d s outside 1..3600", s)
	}
	d.set(false, d.now().Add(time.Duration(s)*time.Second).UnixNano())
	return nil
}

func (d *DoorLock) State(ctx context.Context, call schema.DoorLock_state) error {
	d.mu.Lock()
	locked, relock, t := d.locked, d.relockAt, d.time
	d.mu.Unlock()
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	st, err := res.NewState()
	if err != nil {
		return err
	}
	st.SetLocked(locked)
	st.SetRelockAt(relock)
	st.SetTime(t)
	return nil
}

// Display is an in-memory text display.
type Display struct {
	mu   sync.Mutex
	text string
}

func NewDisplay() *Display { return &Display{} }

func (d *Display) Client() capnp.Client {
	return idleserver.Of[schema.Display_Server](schema.Display_Methods, d)
}

func (d *Display) Show(ctx context.Context, call schema.Display_show) error {
	t, err := call.Args().Text()
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.text = t
	d.mu.Unlock()
	return nil
}

func (d *Display) Clear(ctx context.Context, call schema.Display_clear) error {
	d.mu.Lock()
	d.text = ""
	d.mu.Unlock()
	return nil
}

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

// Speaker is an in-memory speaker with the sounds "chime" and "alarm".
type Speaker struct {
	mu      sync.Mutex
	volume  uint8
	playing bool
}

func NewSpeaker() *Speaker { return &Speaker{volume: 50} }

func (s *Speaker) Client() capnp.Client {
	return idleserver.Of[schema.Speaker_Server](schema.Speaker_Methods, s)
}

func (s *Speaker) Play(ctx context.Context, call schema.Speaker_play) error {
	name, err := call.Args().Sound()
	if err != nil {
		return err
	}
	if name != "chime" && name != "alarm" {
		return fmt.Errorf("not-exist: play: no sound %q", name)
	}
	s.mu.Lock()
	s.playing = true
	s.mu.Unlock()
	return nil
}

func (s *Speaker) Say(ctx context.Context, call schema.Speaker_say) error {
	s.mu.Lock()
	s.playing = true
	s.mu.Unlock()
	return nil
}

func (s *Speaker) SetVolume(ctx context.Context, call schema.Speaker_setVolume) error {
	v := call.Args().Volume()
	if v > 100 {
		return fmt.Errorf("invalid: setVolume: %d above 100", v)
	}
	s.mu.Lock()
	s.volume = v
	s.mu.Unlock()
	return nil
}

func (s *Speaker) Stop(ctx context.Context, call schema.Speaker_stop) error {
	s.mu.Lock()
	s.playing = false
	s.mu.Unlock()
	return nil
}

func (s *Speaker) State(ctx context.Context, call schema.Speaker_state) error {
	s.mu.Lock()
	v, p := s.volume, s.playing
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
	st.SetPlaying(p)
	return nil
}

// Microphone is an in-memory microphone; the test feeds it frames.
type Microphone struct {
	mu    sync.Mutex
	sinks map[*subscription]schema.AudioSink
}

func NewMicrophone() *Microphone { return &Microphone{sinks: map[*subscription]schema.AudioSink{}} }

func (m *Microphone) Client() capnp.Client {
	return idleserver.Of[schema.Microphone_Server](schema.Microphone_Methods, m)
}

func fillFormat(f schema.AudioFormat) {
	f.SetEncoding(schema.AudioEncoding_pcmS16le)
	f.SetSampleRate(16000)
	f.SetChannels(1)
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
	fillFormat(f)
	return nil
}

func (m *Microphone) Record(ctx context.Context, call schema.Microphone_record) error {
	sink := call.Args().Sink()
	if !sink.IsValid() {
		return errors.New("invalid: record: no sink")
	}
	sub := &subscription{}
	m.mu.Lock()
	m.sinks[sub] = sink.AddRef()
	m.mu.Unlock()
	sub.cancel = func() {
		m.mu.Lock()
		s, ok := m.sinks[sub]
		delete(m.sinks, sub)
		m.mu.Unlock()
		if ok {
			f, rel := s.Done(context.Background(), nil)
			go func() {
				<-f.Done()
				rel()
				s.Release()
			}()
		}
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	f, err := res.NewFormat()
	if err != nil {
		return err
	}
	fillFormat(f)
	return res.SetRecording(schema.Subscription(idleserver.Of[schema.Subscription_Server](schema.Subscription_Methods, sub)))
}

// Frame sends one frame to every recording and waits for the stream to
// accept it.
func (m *Microphone) Frame(ctx context.Context, frame []byte) error {
	m.mu.Lock()
	ss := make([]schema.AudioSink, 0, len(m.sinks))
	for _, s := range m.sinks {
		ss = append(ss, s.AddRef())
	}
	m.mu.Unlock()
	var first error
	for _, s := range ss {
		err := s.Write(ctx, func(p schema.AudioSink_write_Params) error { return p.SetFrame(frame) })
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

// Switch is an in-memory wall switch with four buttons.
type Switch struct {
	Path string
	now  func() time.Time

	mu      sync.Mutex
	pressed [4]bool
	subs    map[*subscription]schema.SwitchListener
}

func NewSwitch(path string, now func() time.Time) *Switch {
	return &Switch{Path: path, now: now, subs: map[*subscription]schema.SwitchListener{}}
}

func (s *Switch) Client() capnp.Client {
	return idleserver.Of[schema.Switch_Server](schema.Switch_Methods, s)
}

func (s *Switch) Subscribe(ctx context.Context, call schema.Switch_subscribe) error {
	l := call.Args().Listener()
	if !l.IsValid() {
		return errors.New("invalid: subscribe: no listener")
	}
	sub := &subscription{}
	s.mu.Lock()
	s.subs[sub] = l.AddRef()
	s.mu.Unlock()
	sub.cancel = func() {
		s.mu.Lock()
		l, ok := s.subs[sub]
		delete(s.subs, sub)
		s.mu.Unlock()
		if ok {
			l.Release()
		}
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetSubscription(schema.Subscription(idleserver.Of[schema.Subscription_Server](schema.Subscription_Methods, sub)))
}

func (s *Switch) Pressed(ctx context.Context, call schema.Switch_pressed) error {
	s.mu.Lock()
	p := s.pressed
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

// Press sends a press and a release of button to every listener, waiting
// for each.
func (s *Switch) Press(ctx context.Context, button uint8) error {
	s.mu.Lock()
	ls := make([]schema.SwitchListener, 0, len(s.subs))
	for _, l := range s.subs {
		ls = append(ls, l.AddRef())
	}
	s.mu.Unlock()
	var first error
	for _, kind := range []schema.SwitchEventKind{schema.SwitchEventKind_press, schema.SwitchEventKind_release} {
		for _, l := range ls {
			f, rel := l.Event(ctx, func(p schema.SwitchListener_event_Params) error {
				e, err := p.NewEvent()
				if err != nil {
					return err
				}
				e.SetKind(kind)
				e.SetButton(button)
				e.SetTime(s.now().UnixNano())
				return e.SetDevice(s.Path)
			})
			if _, err := f.Struct(); err != nil && first == nil {
				first = err
			}
			rel()
		}
	}
	for _, l := range ls {
		l.Release()
	}
	return first
}
