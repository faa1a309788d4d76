package driverstest

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/osmose-os/osmose/drivers"
	"github.com/osmose-os/osmose/schema"
)

// Room is the place of every device of Devices.
const Room = "test/room"

// Devices are the devices a backend provides hardware for: one of every
// class.
var Devices = []drivers.Device{
	{Path: Room + "/light", Class: schema.DeviceClass_light},
	{Path: Room + "/thermostat", Class: schema.DeviceClass_thermostat},
	{Path: Room + "/occupancy", Class: schema.DeviceClass_occupancy},
	{Path: Room + "/temperature", Class: schema.DeviceClass_temperature},
	{Path: Room + "/co2", Class: schema.DeviceClass_co2},
	{Path: Room + "/illuminance", Class: schema.DeviceClass_illuminance},
	{Path: Room + "/lock", Class: schema.DeviceClass_doorLock},
	{Path: Room + "/display", Class: schema.DeviceClass_display},
	{Path: Room + "/speaker", Class: schema.DeviceClass_speaker},
	{Path: Room + "/switch", Class: schema.DeviceClass_switch},
	{Path: Room + "/mic", Class: schema.DeviceClass_microphone},
}

// Backend is a driver backend under test.
type Backend interface {
	// Hardware returns the hardware of a device of Devices (see
	// drivers.NewSet).
	Hardware(d drivers.Device) any
	// Now is the backend's clock.
	Now() time.Time
	// Light reports what the light's hardware was last told.
	Light(path string) (on bool, level uint8)
	// Thermostat reports the thermostat hardware's target and mode.
	Thermostat(path string) (setpoint float64, mode schema.ThermostatMode)
	// Locked reports whether the lock's bolt is thrown.
	Locked(path string) bool
	// Display reports the panel's text.
	Display(path string) string
	// Measure makes the sensor measure v from now on and publish it, and
	// returns once the sensor's driver has delivered the reading.
	Measure(ctx context.Context, path string, v float64) error
	// Button makes the switch's button do kind (press, release, long
	// press), and returns once the switch's driver has delivered the event.
	Button(ctx context.Context, path string, kind schema.SwitchEventKind, button uint8) error
	// Hear makes the microphone produce one frame of audio, and returns
	// once the microphone's driver has delivered it.
	Hear(ctx context.Context, path string, frame []byte) error
}

// Run runs the suite against fresh backends from newBackend.
func Run(t *testing.T, newBackend func(t *testing.T) Backend) {
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, r *rig)
	}{
		{"Light", testLight},
		{"Thermostat", testThermostat},
		{"SensorRead", testSensorRead},
		{"SensorSubscribe", testSensorSubscribe},
		{"DoorLock", testDoorLock},
		{"Display", testDisplay},
		{"Speaker", testSpeaker},
		{"Switch", testSwitch},
		{"Microphone", testMicrophone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBackend(t)
			set, err := drivers.NewSet(Devices, b.Hardware, b.Now)
			if err != nil {
				t.Fatal(err)
			}
			if set.Len() != len(Devices) {
				t.Fatalf("NewSet built %d drivers, want %d", set.Len(), len(Devices))
			}
			clients := set.Clients()
			t.Cleanup(func() {
				for _, c := range clients {
					c.Release()
				}
			})
			tc.fn(t, &rig{b: b, clients: clients, ctx: context.Background()})
		})
	}
}

type rig struct {
	b       Backend
	clients map[string]capnp.Client
	ctx     context.Context
}

func (r *rig) client(name string) capnp.Client { return r.clients[Room+"/"+name] }

// do waits for a call's answer and releases it.
func do(f interface{ Ptr() (capnp.Ptr, error) }, rel capnp.ReleaseFunc) error {
	defer rel()
	_, err := f.Ptr()
	return err
}

func wantErr(t *testing.T, err error, prefix string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), prefix) {
		t.Errorf("error %v, want one containing %q", err, prefix)
	}
}

func testLight(t *testing.T, r *rig) {
	l := schema.Light(r.client("light"))
	path := Room + "/light"
	// state copies the answer out before releasing it.
	type lightState struct {
		on    bool
		level uint8
	}
	state := func() lightState {
		f, rel := l.State(r.ctx, nil)
		defer rel()
		res, err := f.Struct()
		if err != nil {
			t.Fatal(err)
		}
		st, _ := res.State()
		return lightState{st.On(), st.Level()}
	}
	if st := state(); st.on {
		t.Errorf("new light is on")
	}
	if err := do(l.SetLevel(r.ctx, func(p schema.Light_setLevel_Params) error { p.SetLevel(40); return nil })); err != nil {
		t.Fatal(err)
	}
	if on, lv := r.b.Light(path); !on || lv != 40 {
		t.Errorf("hardware after setLevel(40): on=%v level=%d", on, lv)
	}
	if st := state(); !st.on || st.level != 40 {
		t.Errorf("state after setLevel(40): on=%v level=%d", st.on, st.level)
	}
	if err := do(l.Set(r.ctx, func(p schema.Light_set_Params) error { p.SetOn(false); return nil })); err != nil {
		t.Fatal(err)
	}
	if on, _ := r.b.Light(path); on {
		t.Errorf("hardware on after set(false)")
	}
	if err := do(l.Set(r.ctx, func(p schema.Light_set_Params) error { p.SetOn(true); return nil })); err != nil {
		t.Fatal(err)
	}
	if on, lv := r.b.Light(path); !on || lv != 40 {
		t.Errorf("set(true) did not restore level 40: on=%v level=%d", on, lv)
	}
	err := do(l.SetLevel(r.ctx, func(p schema.Light_setLevel_Params) error { p.SetLevel(101); return nil }))
	wantErr(t, err, "invalid: setLevel")
	if err := do(l.SetLevel(r.ctx, func(p schema.Light_setLevel_Params) error { p.SetLevel(0); return nil })); err != nil {
		t.Fatal(err)
	}
	if st := state(); st.on || st.level != 40 {
		t.Errorf("after setLevel(0): on=%v level=%d, want off at 40", st.on, st.level)
	}
}

func testThermostat(t *testing.T, r *rig) {
	th := schema.Thermostat(r.client("thermostat"))
	path := Room + "/thermostat"
	// A new driver agrees with its thermostat: it set it, or started from
	// what the thermostat reported.
	{
		f, rel := th.State(r.ctx, nil)
		res, err := f.Struct()
		if err != nil {
			t.Fatal(err)
		}
		st, _ := res.State()
		if sp, m := r.b.Thermostat(path); st.Setpoint() != sp || st.Mode() != m {
			t.Errorf("new driver says %v °C %v, the thermostat has %v °C %v", st.Setpoint(), st.Mode(), sp, m)
		}
		rel()
	}
	if err := do(th.SetSetpoint(r.ctx, func(p schema.Thermostat_setSetpoint_Params) error { p.SetCelsius(22.5); return nil })); err != nil {
		t.Fatal(err)
	}
	if err := do(th.SetMode(r.ctx, func(p schema.Thermostat_setMode_Params) error { p.SetMode(schema.ThermostatMode_heat); return nil })); err != nil {
		t.Fatal(err)
	}
	if sp, m := r.b.Thermostat(path); sp != 22.5 || m != schema.ThermostatMode_heat {
		t.Errorf("hardware: setpoint %v mode %v, want 22.5 heat", sp, m)
	}
	err := do(th.SetSetpoint(r.ctx, func(p schema.Thermostat_setSetpoint_Params) error { p.SetCelsius(40); return nil }))
	wantErr(t, err, "invalid: setSetpoint")
	f, rel := th.State(r.ctx, nil)
	defer rel()
	res, err := f.Struct()
	if err != nil {
		t.Fatal(err)
	}
	st, _ := res.State()
	if st.Setpoint() != 22.5 || st.Mode() != schema.ThermostatMode_heat {
		t.Errorf("state: setpoint %v mode %v", st.Setpoint(), st.Mode())
	}
	if tc := st.Temperature(); tc < -40 || tc > 60 {
		t.Errorf("state: implausible temperature %v", tc)
	}
	if st.Time() == 0 {
		t.Errorf("state: no time")
	}
}

func testSensorRead(t *testing.T, r *rig) {
	for _, c := range []struct {
		name string
		kind schema.ReadingKind
		unit string
		v    float64
	}{
		{"occupancy", schema.ReadingKind_occupancy, "people", 3},
		{"temperature", schema.ReadingKind_temperature, "°C", 21.5},
		{"co2", schema.ReadingKind_co2, "ppm", 800},
		{"illuminance", schema.ReadingKind_illuminance, "lx", 350},
	} {
		path := Room + "/" + c.name
		if err := r.b.Measure(r.ctx, path, c.v); err != nil {
			t.Fatal(err)
		}
		f, rel := schema.Sensor(r.client(c.name)).Read(r.ctx, nil)
		res, err := f.Struct()
		if err != nil {
			t.Fatal(err)
		}
		rd, _ := res.Reading()
		unit, _ := rd.Unit()
		dev, _ := rd.Device()
		if rd.Kind() != c.kind || unit != c.unit || rd.Value() != c.v || dev != path || rd.Time() == 0 {
			t.Errorf("%s: read kind %v unit %q value %v device %q time %d; want %v %q %v %q", c.name, rd.Kind(), unit, rd.Value(), dev, rd.Time(), c.kind, c.unit, c.v, path)
		}
		rel()
	}
}

// readings is a ReadingListener that collects what it hears.
type readings struct {
	mu sync.Mutex
	vs []float64
}

func (l *readings) Reading(ctx context.Context, call schema.ReadingListener_reading) error {
	rd, err := call.Args().Reading()
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.vs = append(l.vs, rd.Value())
	l.mu.Unlock()
	return nil
}

func (l *readings) got() []float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]float64(nil), l.vs...)
}

func testSensorSubscribe(t *testing.T, r *rig) {
	s := schema.Sensor(r.client("co2"))
	path := Room + "/co2"
	a, b := &readings{}, &readings{}
	la, lb := schema.ReadingListener_ServerToClient(a), schema.ReadingListener_ServerToClient(b)
	defer la.Release()
	defer lb.Release()
	subscribe := func(l schema.ReadingListener) schema.Subscription {
		f, rel := s.Subscribe(r.ctx, func(p schema.Sensor_subscribe_Params) error { return p.SetListener(l.AddRef()) })
		defer rel()
		res, err := f.Struct()
		if err != nil {
			t.Fatal(err)
		}
		return res.Subscription().AddRef()
	}
	subA, subB := subscribe(la), subscribe(lb)
	defer subB.Release()
	// Delivery is synchronous: when Measure returns, both listeners have it.
	for _, v := range []float64{500, 650} {
		if err := r.b.Measure(r.ctx, path, v); err != nil {
			t.Fatal(err)
		}
	}
	if g := a.got(); len(g) != 2 || g[0] != 500 || g[1] != 650 {
		t.Errorf("listener a got %v, want [500 650]", g)
	}
	if g := b.got(); len(g) != 2 {
		t.Errorf("listener b got %v, want two readings", g)
	}
	if err := do(subA.Cancel(r.ctx, nil)); err != nil {
		t.Fatal(err)
	}
	subA.Release()
	if err := r.b.Measure(r.ctx, path, 900); err != nil {
		t.Fatal(err)
	}
	if g := a.got(); len(g) != 2 {
		t.Errorf("cancelled listener a got %v", g)
	}
	if g := b.got(); len(g) != 3 || g[2] != 900 {
		t.Errorf("listener b got %v, want a third reading 900", g)
	}
	err := do(s.Subscribe(r.ctx, nil))
	wantErr(t, err, "invalid: subscribe")
}

func testDoorLock(t *testing.T, r *rig) {
	l := schema.DoorLock(r.client("lock"))
	path := Room + "/lock"
	{
		// A new driver agrees with its lock: it either locked it or
		// started from the state the lock reported.
		f, rel := l.State(r.ctx, nil)
		res, err := f.Struct()
		if err != nil {
			t.Fatal(err)
		}
		st, _ := res.State()
		if st.Locked() != r.b.Locked(path) {
			t.Errorf("new driver says locked=%v, the lock is locked=%v", st.Locked(), r.b.Locked(path))
		}
		rel()
	}
	if err := do(l.Unlock(r.ctx, nil)); err != nil {
		t.Fatal(err)
	}
	if r.b.Locked(path) {
		t.Errorf("locked after unlock")
	}
	if err := do(l.Lock(r.ctx, nil)); err != nil {
		t.Fatal(err)
	}
	if !r.b.Locked(path) {
		t.Errorf("unlocked after lock")
	}
	err := do(l.UnlockFor(r.ctx, func(p schema.DoorLock_unlockFor_Params) error { p.SetSeconds(0); return nil }))
	wantErr(t, err, "invalid: unlockFor")
	if err := do(l.UnlockFor(r.ctx, func(p schema.DoorLock_unlockFor_Params) error { p.SetSeconds(5); return nil })); err != nil {
		t.Fatal(err)
	}
	f, rel := l.State(r.ctx, nil)
	defer rel()
	res, err := f.Struct()
	if err != nil {
		t.Fatal(err)
	}
	st, _ := res.State()
	if st.Locked() || st.RelockAt() == 0 || r.b.Locked(path) {
		t.Errorf("after unlockFor(5): locked=%v relockAt=%d hardware locked=%v", st.Locked(), st.RelockAt(), r.b.Locked(path))
	}
}

func testDisplay(t *testing.T, r *rig) {
	d := schema.Display(r.client("display"))
	path := Room + "/display"
	if err := do(d.Show(r.ctx, func(p schema.Display_show_Params) error { return p.SetText("Room free\n21 °C") })); err != nil {
		t.Fatal(err)
	}
	if got := r.b.Display(path); got != "Room free\n21 °C" {
		t.Errorf("panel shows %q", got)
	}
	f, rel := d.Content(r.ctx, nil)
	res, err := f.Struct()
	if err != nil {
		t.Fatal(err)
	}
	if txt, _ := res.Text(); txt != "Room free\n21 °C" {
		t.Errorf("content %q", txt)
	}
	rel()
	if err := do(d.Clear(r.ctx, nil)); err != nil {
		t.Fatal(err)
	}
	if got := r.b.Display(path); got != "" {
		t.Errorf("panel after clear shows %q", got)
	}
}

func testSpeaker(t *testing.T, r *rig) {
	s := schema.Speaker(r.client("speaker"))
	if err := do(s.Play(r.ctx, func(p schema.Speaker_play_Params) error { return p.SetSound("chime") })); err != nil {
		t.Fatal(err)
	}
	err := do(s.Play(r.ctx, func(p schema.Speaker_play_Params) error { return p.SetSound("no-such-sound") }))
	wantErr(t, err, "not-exist: play")
	if err := do(s.SetVolume(r.ctx, func(p schema.Speaker_setVolume_Params) error { p.SetVolume(70); return nil })); err != nil {
		t.Fatal(err)
	}
	err = do(s.SetVolume(r.ctx, func(p schema.Speaker_setVolume_Params) error { p.SetVolume(101); return nil }))
	wantErr(t, err, "invalid: setVolume")
	if err := do(s.Say(r.ctx, func(p schema.Speaker_say_Params) error { return p.SetText("hello") })); err != nil {
		t.Fatal(err)
	}
	if err := do(s.Stop(r.ctx, nil)); err != nil {
		t.Fatal(err)
	}
	f, rel := s.State(r.ctx, nil)
	defer rel()
	res, err := f.Struct()
	if err != nil {
		t.Fatal(err)
	}
	st, _ := res.State()
	if st.Volume() != 70 || st.Playing() {
		t.Errorf("state: volume %d playing %v, want 70 false", st.Volume(), st.Playing())
	}
}

// events is a SwitchListener that collects what it hears.
type events struct {
	mu sync.Mutex
	es []string
}

func (l *events) Event(ctx context.Context, call schema.SwitchListener_event) error {
	e, err := call.Args().Event()
	if err != nil {
		return err
	}
	dev, _ := e.Device()
	l.mu.Lock()
	l.es = append(l.es, e.Kind().String()+"@"+dev)
	l.mu.Unlock()
	return nil
}

func testSwitch(t *testing.T, r *rig) {
	s := schema.Switch(r.client("switch"))
	path := Room + "/switch"
	ev := &events{}
	l := schema.SwitchListener_ServerToClient(ev)
	defer l.Release()
	f, rel := s.Subscribe(r.ctx, func(p schema.Switch_subscribe_Params) error { return p.SetListener(l.AddRef()) })
	defer rel()
	if _, err := f.Struct(); err != nil {
		t.Fatal(err)
	}
	if err := r.b.Button(r.ctx, path, schema.SwitchEventKind_press, 0); err != nil {
		t.Fatal(err)
	}
	pf, prel := s.Pressed(r.ctx, nil)
	pres, err := pf.Struct()
	if err != nil {
		t.Fatal(err)
	}
	if bs, _ := pres.Buttons(); bs.Len() == 0 || !bs.At(0) {
		t.Errorf("button 0 not reported held down after a press")
	}
	prel()
	for _, k := range []schema.SwitchEventKind{schema.SwitchEventKind_longPress, schema.SwitchEventKind_release} {
		if err := r.b.Button(r.ctx, path, k, 0); err != nil {
			t.Fatal(err)
		}
	}
	want := "press@" + path + " longPress@" + path + " release@" + path
	ev.mu.Lock()
	got := strings.Join(ev.es, " ")
	ev.mu.Unlock()
	if got != want {
		t.Errorf("events %q, want %q", got, want)
	}
}

// audio is an AudioSink that counts frames and the end of the stream.
type audio struct {
	mu     sync.Mutex
	frames int
	done   chan struct{}
}

func (a *audio) Write(ctx context.Context, call schema.AudioSink_write) error {
	a.mu.Lock()
	a.frames++
	a.mu.Unlock()
	return nil
}

func (a *audio) Done(ctx context.Context, call schema.AudioSink_done) error {
	close(a.done)
	return nil
}

func testMicrophone(t *testing.T, r *rig) {
	m := schema.Microphone(r.client("mic"))
	path := Room + "/mic"
	a := &audio{done: make(chan struct{})}
	sink := schema.AudioSink_ServerToClient(a)
	defer sink.Release()
	f, rel := m.Record(r.ctx, func(p schema.Microphone_record_Params) error { return p.SetSink(sink.AddRef()) })
	defer rel()
	res, err := f.Struct()
	if err != nil {
		t.Fatal(err)
	}
	fm, _ := res.Format()
	if fm.SampleRate() == 0 || fm.Channels() == 0 {
		t.Errorf("format: rate %d channels %d", fm.SampleRate(), fm.Channels())
	}
	for range 3 {
		if err := r.b.Hear(r.ctx, path, make([]byte, 640)); err != nil {
			t.Fatal(err)
		}
	}
	a.mu.Lock()
	n := a.frames
	a.mu.Unlock()
	if n != 3 {
		t.Errorf("sink got %d frames, want 3", n)
	}
	if err := do(res.Recording().Cancel(r.ctx, nil)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.done:
	case <-time.After(10 * time.Second):
		t.Fatal("sink.done not called within 10 s of cancel")
	}
}
