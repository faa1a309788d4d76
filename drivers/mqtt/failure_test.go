package mqtt_test

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/osmose-os/osmose/drivers"
	"github.com/osmose-os/osmose/drivers/mqtt"
	"github.com/osmose-os/osmose/schema"
)

var (
	light  = drivers.Device{Path: "test/room/light", Class: schema.DeviceClass_light}
	co2    = drivers.Device{Path: "test/room/co2", Class: schema.DeviceClass_co2}
	button = drivers.Device{Path: "test/room/switch", Class: schema.DeviceClass_switch}
)

func slogOf(rec *logRecorder) *slog.Logger { return slog.New(rec) }

func wantContains(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one containing %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not contain %q", err, p)
		}
	}
}

// nextCommand returns the next command the fake receives.
func nextCommand(t *testing.T, cmds <-chan fakeCommand) fakeCommand {
	t.Helper()
	select {
	case c := <-cmds:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no command reached the device within 5 s")
		return fakeCommand{}
	}
}

// testUnconfirmed: a device that never answers a command gives, after the
// command timeout, an error naming the device, what was sent and where.
func testUnconfirmed(t *testing.T, br testBroker) {
	base := newBase()
	devs := []drivers.Device{light}
	fake := newFakeZ2M(t, br.addr(), base, fakeDevices(devs))
	fake.setSilent(light.Path, true)
	cmds := fake.watchCommands()
	bridge := dial(t, mqtt.Config{Broker: br.addr(), BaseTopic: base, Devices: devs, CommandTimeout: 300 * time.Millisecond})
	set, err := drivers.NewSet(devs, bridge.Hardware, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	clients := set.Clients()
	defer clients[light.Path].Release()
	l := schema.Light(clients[light.Path])

	start := time.Now()
	f, rel := l.SetLevel(context.Background(), func(p schema.Light_setLevel_Params) error { p.SetLevel(40); return nil })
	_, err = f.Struct()
	rel()
	elapsed := time.Since(start)
	wantContains(t, err, "light: mqtt: device test/room/light", "command not confirmed", base+"/test/room/light/set", `"brightness":102`, "within 300ms")
	if elapsed < 300*time.Millisecond {
		t.Errorf("gave up after %v, before the 300ms timeout", elapsed)
	}
	if c := nextCommand(t, cmds); c.name != light.Path || c.cmd["state"] != "ON" || c.cmd["brightness"] != 102.0 {
		t.Errorf("device received %v, want ON at brightness 102", c)
	}

	hw := bridge.Hardware(light).(drivers.LightHardware)
	if err := hw.SetLight(false, 40); !errors.Is(err, mqtt.ErrUnconfirmed) {
		t.Errorf("SetLight on a silent device: %v, want ErrUnconfirmed", err)
	}
	nextCommand(t, cmds)
	// The device answers again: so does the bridge.
	fake.setSilent(light.Path, false)
	if err := hw.SetLight(true, 70); err != nil {
		t.Fatalf("after the device came back: %v", err)
	}
	if st := fake.device(light.Path); st["state"] != "ON" || st["brightness"] != float64(mqtt.Brightness(70)) {
		t.Errorf("device state %v, want ON at 70 %%", st)
	}
}

// testOffline: a device that announced it is offline fails commands at
// once, and a command in flight when it goes offline fails then.
func testOffline(t *testing.T, br testBroker) {
	base := newBase()
	devs := []drivers.Device{light}
	fake := newFakeZ2M(t, br.addr(), base, fakeDevices(devs))
	avail := base + "/" + light.Path + "/availability"
	fake.publish(avail, []byte(`{"state":"offline"}`), true)
	cmds := fake.watchCommands()
	rec := newLogRecorder()
	bridge := dial(t, mqtt.Config{Broker: br.addr(), BaseTopic: base, Devices: devs, CommandTimeout: 10 * time.Second, Logger: slogOf(rec)})
	hw := bridge.Hardware(light).(drivers.LightHardware)

	start := time.Now()
	err := hw.SetLight(true, 50)
	if !errors.Is(err, mqtt.ErrOffline) {
		t.Fatalf("command to an offline device: %v, want ErrOffline", err)
	}
	wantContains(t, err, "test/room/light", avail)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("offline device failed only after %v", d)
	}

	fake.publish(avail, []byte("online"), false) // the legacy plain form
	rec.wait(t, 1, "availability=online", light.Path)
	if err := hw.SetLight(true, 50); err != nil {
		t.Fatalf("after online: %v", err)
	}
	// The command refused while offline never went out.
	if c := nextCommand(t, cmds); c.cmd["brightness"] != float64(mqtt.Brightness(50)) || c.cmd["state"] != "ON" {
		t.Errorf("first command the device saw: %v", c.cmd)
	}

	fake.setSilent(light.Path, true)
	done := make(chan error, 1)
	go func() { done <- hw.SetLight(false, 50) }()
	nextCommand(t, cmds)
	fake.publish(avail, []byte(`{"state":"offline"}`), false)
	if err := <-done; !errors.Is(err, mqtt.ErrOffline) {
		t.Errorf("command in flight when the device went offline: %v, want ErrOffline", err)
	}
}

// testMalformed: malformed messages from devices are logged and ignored;
// the bridge carries on.
func testMalformed(t *testing.T, br testBroker) {
	base := newBase()
	devs := []drivers.Device{light, co2, button}
	fake := newFakeZ2M(t, br.addr(), base, fakeDevices(devs))
	rec := newLogRecorder()
	bridge := dial(t, mqtt.Config{Broker: br.addr(), BaseTopic: base, Devices: devs, Logger: slogOf(rec)})
	readings, events := make(tap, 16), make(tap, 16)
	sensor := bridge.Hardware(co2).(drivers.SensorHardware)
	sensor.Watch(func(ctx context.Context, v float64) error { readings.put(delivery{value: v}); return nil })
	bridge.Hardware(button).(drivers.SwitchHardware).Watch(func(ctx context.Context, k schema.SwitchEventKind, b uint8) error {
		events.put(delivery{kind: k, button: b})
		return nil
	})

	state := base + "/" + co2.Path
	for _, p := range []string{"{not json", "[1,2]", "null", `{"co2":"high"}`, "\xff\xfe", `{"co2":650}`} {
		fake.publish(state, []byte(p), false)
	}
	fake.publish(state+"/availability", []byte("maybe"), false)
	for _, p := range []string{`{"action":5}`, `{"action":"brightness_move_up"}`, `{"action":""}`, `{"action":"single"}`} {
		fake.publish(base+"/"+button.Path, []byte(p), false)
	}
	select {
	case d := <-readings:
		if d.value != 650 {
			t.Errorf("first reading delivered %v, want 650 (the first well-formed one)", d.value)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the well-formed reading after the malformed ones never arrived")
	}
	for _, want := range []schema.SwitchEventKind{schema.SwitchEventKind_press, schema.SwitchEventKind_release} {
		select {
		case d := <-events:
			if d.kind != want {
				t.Errorf("switch event %v, want %v", d.kind, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the well-formed action after the malformed ones never arrived")
		}
	}
	if v := sensor.Sample(); v != 650 {
		t.Errorf("sample %v, want 650", v)
	}
	for _, c := range []struct {
		n     int
		parts []string
	}{
		{4, []string{"WARN", "malformed state message", co2.Path, state}},
		{1, []string{"WARN", "wrong type", co2.Path, "field=co2"}},
		{1, []string{"WARN", "malformed availability", co2.Path}},
		{1, []string{"WARN", "wrong type", button.Path, "field=action"}},
		{1, []string{"WARN", "switch action ignored", "brightness_move_up"}},
	} {
		if got := rec.count(c.parts...); got != c.n {
			t.Errorf("%d log records with %q, want %d; log:\n%s", got, c.parts, c.n, rec)
		}
	}
	if err := bridge.Hardware(light).(drivers.LightHardware).SetLight(true, 10); err != nil {
		t.Errorf("bridge after malformed messages: %v", err)
	}
}

// testConventions checks the conventions the conformance suite does not
// reach: retained state, Zigbee2MQTT 2.x illuminance, boolean occupancy,
// the door contact, announced audio format, speaker errors, named buttons.
func testConventions(t *testing.T, br testBroker) {
	base := newBase()
	devs := []drivers.Device{
		{Path: "c/occupancy", Class: schema.DeviceClass_occupancy},
		{Path: "c/illuminance", Class: schema.DeviceClass_illuminance},
		{Path: "c/temperature", Class: schema.DeviceClass_temperature},
		{Path: "c/thermostat", Class: schema.DeviceClass_thermostat},
		{Path: "c/lock", Class: schema.DeviceClass_doorLock},
		{Path: "c/mic", Class: schema.DeviceClass_microphone},
		{Path: "c/speaker", Class: schema.DeviceClass_speaker},
		{Path: "c/switch", Class: schema.DeviceClass_switch},
		{Path: "c/light", Class: schema.DeviceClass_light},
	}
	fake := newFakeZ2M(t, br.addr(), base, fakeDevices(devs))
	fake.publish(base+"/c/occupancy", []byte(`{"occupancy":true}`), true)
	fake.publish(base+"/c/illuminance", []byte(`{"illuminance":300}`), true)
	fake.publish(base+"/c/lock", []byte(`{"state":"LOCK","contact":false}`), true)
	fake.setDimmable("c/light", false)
	fake.publishJSON(base+"/c/light", fake.device("c/light"), true)
	bridge := dial(t, mqtt.Config{Broker: br.addr(), BaseTopic: base, Devices: devs,
		Buttons: map[string][]string{"c/switch": {"left", "right"}}})
	hw := func(i int) any { return bridge.Hardware(devs[i]) }

	// Retained state is there when Dial returns.
	occ := hw(0).(drivers.SensorHardware)
	if v := occ.Sample(); v != 1 {
		t.Errorf("occupancy from retained {occupancy:true}: %v, want 1", v)
	}
	if v := hw(1).(drivers.SensorHardware).Sample(); v != 300 {
		t.Errorf("illuminance from {illuminance:300}: %v, want 300", v)
	}
	if v := hw(2).(drivers.SensorHardware).Sample(); !math.IsNaN(v) {
		t.Errorf("temperature before any report: %v, want NaN", v)
	}
	if v := hw(3).(drivers.ThermostatHardware).Temperature(); v != 20.5 {
		t.Errorf("thermostat temperature %v, want local_temperature 20.5", v)
	}
	if !hw(4).(drivers.LockHardware).DoorOpen() {
		t.Errorf("door with contact false not open")
	}
	if enc, rate, ch := hw(5).(drivers.MicrophoneHardware).Format(); enc != schema.AudioEncoding_opus || rate != 48000 || ch != 2 {
		t.Errorf("microphone format %v %d %d, want the announced opus 48000 2", enc, rate, ch)
	}

	readings := make(tap, 4)
	occ.Watch(func(ctx context.Context, v float64) error { readings.put(delivery{value: v}); return nil })
	fake.measure("c/occupancy", schema.DeviceClass_occupancy, 0)
	if err := readings.wait(context.Background(), "occupancy false", func(d delivery) bool { return d.value == 0 }); err != nil {
		t.Error(err)
	}

	sp := hw(6).(drivers.SpeakerHardware)
	if err := sp.Play("gong"); err == nil || err.Error() != `not-exist: play: no sound "gong"` {
		t.Errorf("play of a missing sound: %v, want the device's not-exist error unchanged", err)
	}
	if err := sp.Play("alarm"); err != nil || !sp.Playing() {
		t.Errorf("play alarm: %v, playing %v", err, sp.Playing())
	}

	sw := hw(7).(drivers.SwitchHardware)
	if n := sw.Buttons(); n != 2 {
		t.Errorf("switch with two named buttons has %d", n)
	}
	events := make(tap, 8)
	sw.Watch(func(ctx context.Context, k schema.SwitchEventKind, b uint8) error {
		events.put(delivery{kind: k, button: b})
		return nil
	})
	fake.publish(base+"/c/switch", []byte(`{"action":"single_right"}`), false)
	fake.press("c/switch", schema.SwitchEventKind_longPress, "left")
	for _, want := range []delivery{{kind: schema.SwitchEventKind_press, button: 1}, {kind: schema.SwitchEventKind_release, button: 1}, {kind: schema.SwitchEventKind_longPress, button: 0}} {
		select {
		case d := <-events:
			if d.kind != want.kind || d.button != want.button {
				t.Errorf("event %v on button %d, want %v on %d", d.kind, d.button, want.kind, want.button)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no %v on button %d", want.kind, want.button)
		}
	}

	// A light that reports no brightness is non-dimmable: state alone
	// confirms.
	l := hw(8).(drivers.LightHardware)
	if err := l.SetLight(true, 30); err != nil {
		t.Errorf("non-dimmable light: %v", err)
	}
}

// testFriendlyNameOverride: a device paired under another name is reached
// by that name, and errors give both.
func testFriendlyNameOverride(t *testing.T, br testBroker) {
	base := newBase()
	const name = "0x00158d0001a2b3c4"
	fake := newFakeZ2M(t, br.addr(), base, map[string]schema.DeviceClass{name: schema.DeviceClass_light})
	bridge := dial(t, mqtt.Config{Broker: br.addr(), BaseTopic: base, Devices: []drivers.Device{light},
		Names: map[string]string{light.Path: name}, CommandTimeout: 200 * time.Millisecond})
	hw := bridge.Hardware(light).(drivers.LightHardware)
	if err := hw.SetLight(true, 100); err != nil {
		t.Fatal(err)
	}
	if st := fake.device(name); st["state"] != "ON" || st["brightness"] != 254.0 {
		t.Errorf("device %s state %v", name, st)
	}
	fake.setSilent(name, true)
	wantContains(t, hw.SetLight(false, 100), light.Path, name, base+"/"+name+"/set")
}

// testRetainedAction: a switch action the broker holds as retained state
// is not replayed as a button press when the bridge subscribes again
// after losing its connection.
func testRetainedAction(t *testing.T, br testBroker) {
	base := newBase()
	devs := []drivers.Device{button}
	fake := newFakeZ2M(t, br.addr(), base, fakeDevices(devs))
	rec := newLogRecorder()
	cfg := mqtt.Config{Broker: br.addr(), BaseTopic: base, ClientID: "bridge-" + base, Devices: devs, RetryDelay: 50 * time.Millisecond, Logger: slogOf(rec)}
	bridge := dial(t, cfg)
	events := make(tap, 8)
	bridge.Hardware(button).(drivers.SwitchHardware).Watch(func(ctx context.Context, k schema.SwitchEventKind, b uint8) error {
		events.put(delivery{kind: k})
		return nil
	})
	next := func() schema.SwitchEventKind {
		t.Helper()
		select {
		case d := <-events:
			return d.kind
		case <-time.After(5 * time.Second):
			t.Fatal("no switch event within 5 s")
			return 0
		}
	}
	// A device publishing its state retained: live, the action is an event.
	fake.publish(base+"/"+button.Path, []byte(`{"action":"hold"}`), true)
	if k := next(); k != schema.SwitchEventKind_longPress {
		t.Fatalf("live retained hold gave %v", k)
	}
	// Another client taking the bridge's client id pushes it off the
	// broker; it reconnects (pushing the other off in turn), subscribes
	// again and receives the retained hold once more, as retained.
	t.Cleanup(kick(t, br.addr(), cfg.ClientID))
	rec.wait(t, 1, "connection to broker lost")
	rec.wait(t, 2, "connected and subscribed")
	fake.press(button.Path, schema.SwitchEventKind_press, "")
	if k := next(); k != schema.SwitchEventKind_press {
		t.Errorf("first event after the reconnect %v, want the live press (the retained hold was replayed)", k)
	}
}

// testBrokerLost: with the broker gone, commands fail at once naming the
// broker; when it is back, the bridge reconnects and resubscribes.
func testBrokerLost(t *testing.T, br testBroker) {
	base := newBase()
	devs := []drivers.Device{light}
	old := newFakeZ2M(t, br.addr(), base, fakeDevices(devs))
	rec := newLogRecorder()
	bridge := dial(t, mqtt.Config{Broker: br.addr(), BaseTopic: base, Devices: devs, RetryDelay: 50 * time.Millisecond, CommandTimeout: 10 * time.Second, Logger: slogOf(rec)})
	hw := bridge.Hardware(light).(drivers.LightHardware)
	if err := hw.SetLight(true, 20); err != nil {
		t.Fatal(err)
	}
	// A command waiting for its confirmation when the broker goes fails
	// then, not at its timeout.
	old.setSilent(light.Path, true)
	cmds := old.watchCommands()
	done := make(chan error, 1)
	go func() { done <- hw.SetLight(true, 30) }()
	nextCommand(t, cmds)
	br.stop()
	rec.wait(t, 1, "connection to broker lost", br.addr())
	select {
	case err := <-done:
		if !errors.Is(err, mqtt.ErrNotConnected) {
			t.Errorf("command in flight when the broker went: %v, want ErrNotConnected", err)
		}
		wantContains(t, err, "test/room/light", "connection lost before the device confirmed")
	case <-time.After(5 * time.Second):
		t.Errorf("command in flight when the broker went still waiting after 5 s")
	}
	err := hw.SetLight(false, 20)
	if !errors.Is(err, mqtt.ErrNotConnected) {
		t.Errorf("command without a broker: %v, want ErrNotConnected", err)
	}
	wantContains(t, err, "test/room/light", "broker mqtt://"+br.addr())
	if bridge.Connected() {
		t.Errorf("Connected() with the broker down")
	}

	br.start(t)
	rec.wait(t, 2, "connected and subscribed")
	fake := newFakeZ2M(t, br.addr(), base, fakeDevices(devs))
	if err := hw.SetLight(false, 20); err != nil {
		t.Fatalf("after the broker came back: %v", err)
	}
	if st := fake.device(light.Path); st["state"] != "OFF" {
		t.Errorf("device state %v, want OFF", st)
	}
}

// TestDialUnreachable: no broker at the address gives an error naming it
// and the reason, within the connect timeout.
func TestDialUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	start := time.Now()
	_, err = mqtt.Dial(context.Background(), mqtt.Config{Broker: addr, Devices: []drivers.Device{light},
		ConnectTimeout: 500 * time.Millisecond, RetryDelay: 100 * time.Millisecond})
	wantContains(t, err, "broker mqtt://"+addr, "not reachable within 500ms", "connection refused")
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Dial took %v with a 500ms connect timeout", d)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = mqtt.Dial(ctx, mqtt.Config{Broker: "tcp://" + addr, Devices: []drivers.Device{light}})
	wantContains(t, err, "broker tcp://"+addr, "context deadline exceeded")
}

// TestDialConfig: configurations Dial refuses before connecting.
func TestDialConfig(t *testing.T) {
	l := func(path string) drivers.Device { return drivers.Device{Path: path, Class: schema.DeviceClass_light} }
	for _, c := range []struct {
		cfg  mqtt.Config
		want string
	}{
		{mqtt.Config{}, "no broker"},
		{mqtt.Config{Broker: "mqtt://"}, "no host"},
		{mqtt.Config{Broker: "http://x:1"}, `scheme "http"`},
		{mqtt.Config{Broker: "x:1", BaseTopic: "z/#"}, "wildcard"},
		{mqtt.Config{Broker: "x:1", BaseTopic: "$SYS"}, "reserved"},
		{mqtt.Config{Broker: "x:1", Devices: []drivers.Device{l("b/f1/3")}}, "endpoint"},
		{mqtt.Config{Broker: "x:1", Devices: []drivers.Device{l("b//l")}}, "empty level"},
		{mqtt.Config{Broker: "x:1", Devices: []drivers.Device{l("bridge/l")}}, "bridge"},
		{mqtt.Config{Broker: "x:1", Devices: []drivers.Device{l("a/l"), l("a/l")}}, "listed twice"},
		{mqtt.Config{Broker: "x:1", Devices: []drivers.Device{l("a/l"), l("a/l/set")}}, "share topic z"},
		{mqtt.Config{Broker: "x:1", Devices: []drivers.Device{l("a/l"), l("b/l")}, Names: map[string]string{"b/l": "a/l"}}, "share topic"},
	} {
		_, err := mqtt.Dial(context.Background(), c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Dial(%+v): %v, want an error containing %q", c.cfg, err, c.want)
		}
	}
}

// TestParseAction: Zigbee2MQTT actions of common devices.
func TestParseAction(t *testing.T) {
	P, R, L := schema.SwitchEventKind_press, schema.SwitchEventKind_release, schema.SwitchEventKind_longPress
	hue := []string{"on", "up", "down", "off"}
	for _, c := range []struct {
		action  string
		buttons []string
		want    []mqtt.ButtonEvent
		err     string
	}{
		{"single", nil, []mqtt.ButtonEvent{{P, 0}, {R, 0}}, ""},
		{"double", nil, []mqtt.ButtonEvent{{P, 0}, {R, 0}, {P, 0}, {R, 0}}, ""},
		{"hold", nil, []mqtt.ButtonEvent{{L, 0}}, ""},
		{"release", nil, []mqtt.ButtonEvent{{R, 0}}, ""},
		{"on_press", hue, []mqtt.ButtonEvent{{P, 0}}, ""},
		{"off_hold", hue, []mqtt.ButtonEvent{{L, 3}}, ""},
		{"down_hold_release", hue, []mqtt.ButtonEvent{{R, 2}}, ""},
		{"up_press_release", hue, []mqtt.ButtonEvent{{R, 1}}, ""},
		{"single_right", []string{"left", "right", "both"}, []mqtt.ButtonEvent{{P, 1}, {R, 1}}, ""},
		{"button_2_long_press", []string{"button_1", "button_2"}, []mqtt.ButtonEvent{{L, 1}}, ""},
		{"off", []string{"on", "off"}, []mqtt.ButtonEvent{{P, 1}, {R, 1}}, ""},
		{"brightness_move_up", []string{"on", "off"}, nil, "unknown action"},
		{"left_single", nil, nil, "unknown button"},
		{"single", hue, nil, "names no button"},
	} {
		got, err := mqtt.ParseAction(c.action, c.buttons)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseAction(%q): %v, %v; want error %q", c.action, got, err, c.err)
			}
			continue
		}
		if err != nil || len(got) != len(c.want) {
			t.Errorf("ParseAction(%q) = %v, %v; want %v", c.action, got, err, c.want)
			continue
		}
		for i := range got {
			if got[i] != c.want[i] {
				t.Errorf("ParseAction(%q) = %v, want %v", c.action, got, c.want)
				break
			}
		}
	}
}

// TestBrightness: level → brightness → level is the identity on 1..100,
// and the ends map to Zigbee2MQTT's ends.
func TestBrightness(t *testing.T) {
	for lv := uint8(1); lv <= 100; lv++ {
		b := mqtt.Brightness(lv)
		if b < 1 || b > 254 || mqtt.Level(b) != lv {
			t.Errorf("level %d → brightness %d → level %d", lv, b, mqtt.Level(b))
		}
	}
	if mqtt.Brightness(100) != 254 || mqtt.Level(254) != 100 || mqtt.Level(0) != 0 {
		t.Errorf("ends: Brightness(100)=%d Level(254)=%d Level(0)=%d", mqtt.Brightness(100), mqtt.Level(254), mqtt.Level(0))
	}
}
