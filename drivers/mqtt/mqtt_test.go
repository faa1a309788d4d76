package mqtt_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/osmose-os/osmose/drivers"
	"github.com/osmose-os/osmose/drivers/driverstest"
	"github.com/osmose-os/osmose/drivers/mqtt"
	"github.com/osmose-os/osmose/schema"
)

// brokerTests run against each real broker.
var brokerTests = []struct {
	name string
	fn   func(t *testing.T, br testBroker)
}{
	{"Conformance", testConformance},
	{"Unconfirmed", testUnconfirmed},
	{"Offline", testOffline},
	{"Malformed", testMalformed},
	{"Conventions", testConventions},
	{"FriendlyNameOverride", testFriendlyNameOverride},
	{"RetainedActionNotReplayed", testRetainedAction},
	{"BrokerLost", testBrokerLost},
	{"StartFromReportedState", testStartFromReportedState},
}

// TestEmbeddedBroker runs the bridge against mochi-mqtt in process, so the
// tests need nothing installed.
func TestEmbeddedBroker(t *testing.T) {
	br := startEmbedded(t)
	for _, tc := range brokerTests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, br) })
	}
}

// TestMosquitto runs the same tests against Debian's mosquitto on
// loopback; skipped when it is not installed unless
// OSMOSE_REQUIRE_MOSQUITTO=1.
func TestMosquitto(t *testing.T) {
	br := startMosquitto(t)
	for _, tc := range brokerTests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, br) })
	}
}

// bases gives every bridge its own base topic, so that retained messages
// of one test never reach another.
var bases atomic.Int64

func newBase() string { return fmt.Sprintf("z2m-test-%d", bases.Add(1)) }

// logRecorder is a slog.Handler that keeps the records and lets a test
// wait for one.
type logRecorder struct {
	mu      sync.Mutex
	lines   []string
	changed chan struct{}
}

func newLogRecorder() *logRecorder { return &logRecorder{changed: make(chan struct{})} }

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", r.Level, r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	l.mu.Lock()
	l.lines = append(l.lines, b.String())
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
	return nil
}

// count returns the number of records containing every one of parts.
func (l *logRecorder) count(parts ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
next:
	for _, line := range l.lines {
		for _, p := range parts {
			if !strings.Contains(line, p) {
				continue next
			}
		}
		n++
	}
	return n
}

// wait waits until n records contain every one of parts.
func (l *logRecorder) wait(t *testing.T, n int, parts ...string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		l.mu.Lock()
		ch := l.changed
		l.mu.Unlock()
		if l.count(parts...) >= n {
			return
		}
		select {
		case <-ch:
		case <-timeout:
			t.Fatalf("no %d log records with %q within 10 s; log:\n%s", n, parts, l.String())
		}
	}
}

func (l *logRecorder) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// dial connects a bridge for devices under base and closes it when the
// test ends.
func dial(t *testing.T, cfg mqtt.Config) *mqtt.Bridge {
	t.Helper()
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 5 * time.Second
	}
	if cfg.CommandTimeout == 0 {
		cfg.CommandTimeout = 2 * time.Second
	}
	if cfg.ClientID == "" {
		cfg.ClientID = "bridge-" + cfg.BaseTopic
	}
	b, err := mqtt.Dial(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Error(err)
		}
	})
	return b
}

// delivery is one event the bridge handed to a driver.
type delivery struct {
	value  float64
	kind   schema.SwitchEventKind
	button uint8
	frame  []byte
	err    error
}

// tap observes the events a device's hardware hands its driver: the
// bridge delivers them on its own goroutines, and the suite's Measure,
// Button and Hear must return only once the driver has them (as they do
// over the simulator). A tap changes nothing of what is delivered.
type tap chan delivery

// put records a delivery; a full tap (a test that never waits) drops it
// rather than holding up the bridge.
func (c tap) put(d delivery) {
	select {
	case c <- d:
	default:
	}
}

func (c tap) wait(ctx context.Context, what string, ok func(delivery) bool) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for {
		select {
		case d := <-c:
			if ok(d) {
				return d.err
			}
		case <-ctx.Done():
			return fmt.Errorf("%s: not delivered to the driver: %w", what, ctx.Err())
		}
	}
}

type tappedSensor struct {
	drivers.SensorHardware
	tap tap
}

func (s tappedSensor) Watch(publish func(ctx context.Context, v float64) error) {
	s.SensorHardware.Watch(func(ctx context.Context, v float64) error {
		err := publish(ctx, v)
		s.tap.put(delivery{value: v, err: err})
		return err
	})
}

type tappedSwitch struct {
	drivers.SwitchHardware
	tap tap
}

func (s tappedSwitch) Watch(event func(ctx context.Context, kind schema.SwitchEventKind, button uint8) error) {
	s.SwitchHardware.Watch(func(ctx context.Context, kind schema.SwitchEventKind, button uint8) error {
		err := event(ctx, kind, button)
		s.tap.put(delivery{kind: kind, button: button, err: err})
		return err
	})
}

type tappedMic struct {
	drivers.MicrophoneHardware
	tap tap
}

func (m tappedMic) Watch(frame func(ctx context.Context, data []byte) error) {
	m.MicrophoneHardware.Watch(func(ctx context.Context, data []byte) error {
		err := frame(ctx, data)
		m.tap.put(delivery{frame: data, err: err})
		return err
	})
}

// backend is the MQTT bridge, with the fake devices behind the broker, as
// a driverstest.Backend: what hardware was told is read from the fake
// devices, which heard it over the broker.
type backend struct {
	bridge *mqtt.Bridge
	fake   *fakeZ2M
	mu     sync.Mutex
	taps   map[string]tap
}

func newBackend(bridge *mqtt.Bridge, fake *fakeZ2M) *backend {
	return &backend{bridge: bridge, fake: fake, taps: map[string]tap{}}
}

// tapOf returns the tap of a device.
func (b *backend) tapOf(path string) tap {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.taps[path] == nil {
		b.taps[path] = make(tap, 64)
	}
	return b.taps[path]
}

func (b *backend) Hardware(d drivers.Device) any {
	switch hw := b.bridge.Hardware(d).(type) {
	case drivers.SensorHardware:
		return tappedSensor{hw, b.tapOf(d.Path)}
	case drivers.SwitchHardware:
		return tappedSwitch{hw, b.tapOf(d.Path)}
	case drivers.MicrophoneHardware:
		return tappedMic{hw, b.tapOf(d.Path)}
	case nil:
		return nil
	default:
		return hw
	}
}

func (b *backend) Now() time.Time { return time.Now() }

func (b *backend) Light(path string) (bool, uint8) {
	st := b.fake.device(mqtt.FriendlyName(path))
	br, _ := st["brightness"].(float64)
	return st["state"] == "ON", mqtt.Level(int(br))
}

func (b *backend) Thermostat(path string) (float64, schema.ThermostatMode) {
	st := b.fake.device(mqtt.FriendlyName(path))
	sp, _ := st["occupied_heating_setpoint"].(float64)
	mode := map[any]schema.ThermostatMode{
		"off": schema.ThermostatMode_off, "heat": schema.ThermostatMode_heat,
		"cool": schema.ThermostatMode_cool, "auto": schema.ThermostatMode_auto,
	}[st["system_mode"]]
	return sp, mode
}

func (b *backend) Locked(path string) bool {
	return b.fake.device(mqtt.FriendlyName(path))["state"] == "LOCK"
}

func (b *backend) Display(path string) string {
	s, _ := b.fake.device(mqtt.FriendlyName(path))["text"].(string)
	return s
}

func (b *backend) class(path string) schema.DeviceClass {
	for _, d := range driverstest.Devices {
		if d.Path == path {
			return d.Class
		}
	}
	return schema.DeviceClass_other
}

func (b *backend) Measure(ctx context.Context, path string, v float64) error {
	b.fake.measure(mqtt.FriendlyName(path), b.class(path), v)
	return b.tapOf(path).wait(ctx, fmt.Sprintf("reading %v of %s", v, path), func(d delivery) bool { return d.value == v })
}

func (b *backend) Button(ctx context.Context, path string, kind schema.SwitchEventKind, button uint8) error {
	if button != 0 {
		return fmt.Errorf("the fake switch has one button, not %d", button+1)
	}
	b.fake.press(mqtt.FriendlyName(path), kind, "")
	return b.tapOf(path).wait(ctx, fmt.Sprintf("%v of %s", kind, path), func(d delivery) bool { return d.kind == kind && d.button == button })
}

func (b *backend) Hear(ctx context.Context, path string, frame []byte) error {
	b.fake.hear(mqtt.FriendlyName(path), frame)
	return b.tapOf(path).wait(ctx, fmt.Sprintf("frame for %s", path), func(d delivery) bool { return bytes.Equal(d.frame, frame) })
}

// testConformance: the drivers over the MQTT bridge pass the drivers'
// conformance suite, every command and event crossing the broker.
func testConformance(t *testing.T, br testBroker) {
	driverstest.Run(t, func(t *testing.T) driverstest.Backend {
		base := newBase()
		fake := newFakeZ2M(t, br.addr(), base, fakeDevices(driverstest.Devices))
		bridge := dial(t, mqtt.Config{Broker: br.addr(), BaseTopic: base, Devices: driverstest.Devices})
		return newBackend(bridge, fake)
	})
}

// testStartFromReportedState: drivers made over the bridge command no
// device and start from the states the devices last reported (the fake's
// are retained: a thermostat at 18 °C off, an unlocked lock, a speaker at
// 30 %, a light off at full brightness).
func testStartFromReportedState(t *testing.T, br testBroker) {
	base := newBase()
	fake := newFakeZ2M(t, br.addr(), base, fakeDevices(driverstest.Devices))
	cmds := fake.watchCommands()
	bridge := dial(t, mqtt.Config{Broker: br.addr(), BaseTopic: base, Devices: driverstest.Devices})
	set, err := drivers.NewSet(driverstest.Devices, bridge.Hardware, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	clients := set.Clients()
	defer func() {
		for _, c := range clients {
			c.Release()
		}
	}()
	ctx := context.Background()
	client := func(class string) capnp.Client { return clients[driverstest.Room+"/"+class] }

	th, rel := schema.Thermostat(client("thermostat")).State(ctx, nil)
	defer rel()
	ts, err := th.State().Struct()
	if err != nil {
		t.Fatal(err)
	}
	if ts.Setpoint() != 18 || ts.Mode() != schema.ThermostatMode_off {
		t.Errorf("thermostat driver starts at %v °C %v, want the reported 18 off", ts.Setpoint(), ts.Mode())
	}
	lk, rel2 := schema.DoorLock(client("lock")).State(ctx, nil)
	defer rel2()
	ls, err := lk.State().Struct()
	if err != nil {
		t.Fatal(err)
	}
	if ls.Locked() {
		t.Errorf("lock driver starts locked; the lock reported itself unlocked")
	}
	sp, rel3 := schema.Speaker(client("speaker")).State(ctx, nil)
	defer rel3()
	ss, err := sp.State().Struct()
	if err != nil {
		t.Fatal(err)
	}
	if ss.Volume() != 30 {
		t.Errorf("speaker driver starts at volume %d, want the reported 30", ss.Volume())
	}
	li, rel4 := schema.Light(client("light")).State(ctx, nil)
	defer rel4()
	lis, err := li.State().Struct()
	if err != nil {
		t.Fatal(err)
	}
	if lis.On() || lis.Level() != 100 {
		t.Errorf("light driver starts on=%v at %d %%, want the reported off at 100", lis.On(), lis.Level())
	}
	// A command would have reached the fake by the time the states were
	// read back over the same broker; wait a little longer to be sure.
	select {
	case c := <-cmds:
		t.Errorf("starting the drivers commanded %s: %v", c.name, c.cmd)
	case <-time.After(200 * time.Millisecond):
	}
}
