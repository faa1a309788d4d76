package sim

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/osmose-os/osmose/internal/idleserver"
	"github.com/osmose-os/osmose/internal/topology"
	"github.com/osmose-os/osmose/schema"
)

// Device programs. Each device with a key derived from the seed runs one
// program on its own connection: it logs in as the device, opens what it
// needs of its room (the policy decides what it gets), and from then on
// only reacts to what reaches it through the kernel, inside the listener
// call that brought it. So a whole chain (a reading, the program's calls,
// their answers) completes before the driver's delivery returns, and the
// runner's next event starts only then.
//
//	light, lock, speaker, mic   open their own device and check it (state,
//	                            format) once
//	switch                      a click toggles the room's lights; a long
//	                            press asks for 100 % (the default policy
//	                            caps lights at 80 %: denied, then 80 %)
//	occupancy                   lights on at 80 % when someone comes in;
//	                            off after 10 min of vacancy
//	thermostat                  heat mode; 21 °C while the room is
//	                            occupied, 17 °C otherwise
//	co2                         above 1200 ppm the room's speaker asks to
//	                            open a window (once, until below 1000)
//	temperature, illuminance    subscribe to their own readings
//	display                     shows occupancy, temperature and the time
//	                            by its own clock
//
// A program's clock is the world's time plus its skew (the "skew" fault;
// zero otherwise). An occupancy program with a skewed clock stamps the
// start of a vacancy by it and compares the readings' stamps (the
// kernel's clock) against that, so its lights go off early or late.

const (
	comfort     = 21.0
	setback     = 17.0
	lightLevel  = 80
	vacancyOff  = 10 * time.Minute
	co2Alarm    = 1200
	co2AllClear = 1000
)

// program is one device program.
type program struct {
	r    *runner
	dev  topology.Device
	room string
	c    *conn

	caps []held
	subs []capnp.Client
	// sensorSubs counts the subscriptions in subs that are to sensors.
	sensorSubs int
	// listeners counts the listeners the program exports to the kernel
	// that the kernel still holds; called is when the kernel last called
	// one (Config.Wall, Unix ns; 0 if never or no Wall).
	listeners sync.WaitGroup
	called    atomic.Int64

	// Faults: see the package doc.
	skew      time.Duration
	malicious bool
	down      bool // crashed, not yet restarted
	garbage   int  // hostile connections made, to vary the bytes

	mu        sync.Mutex
	people    float64
	seen      bool
	vacantAt  int64
	offSent   bool
	setpoint  float64
	alarm     bool
	long      bool
	temp      float64
	shownText string
}

func (p *program) of(class schema.DeviceClass) []held {
	var out []held
	for _, h := range p.caps {
		if h.class == class {
			out = append(out, h)
		}
	}
	return out
}

func (p *program) own() (held, bool) {
	for _, h := range p.caps {
		if h.path == p.dev.Path {
			return h, true
		}
	}
	return held{}, false
}

// call runs one call of the program, counting it and its latency.
func (p *program) call(what string, f func() error) error {
	return p.r.do(p.dev.Path, what, f)
}

// now is the program's clock: the world's time, plus its skew.
func (p *program) now() time.Time { return p.r.cfg.World.Now().Add(p.skew) }

// do runs one call of a program or person, counting it and its latency.
func (r *runner) do(who, what string, f func() error) error {
	var t0 time.Time
	if r.cfg.Wall != nil {
		t0 = r.cfg.Wall()
	}
	err := f()
	var d time.Duration
	if r.cfg.Wall != nil {
		d = r.cfg.Wall().Sub(t0)
	}
	r.count(d, err)
	if err != nil && !strings.HasPrefix(denialKind(err), "permission") {
		r.logf("%s: %s: %v", who, what, err)
	}
	return err
}

// denialKind returns the kernel's error kind of err ("permission", ...),
// or "".
func denialKind(err error) string {
	msg := err.Error()
	for _, k := range []string{"permission", "revoked", "not-exist", "invalid", "overloaded", "unimplemented"} {
		if strings.Contains(msg, k+": ") {
			return k
		}
	}
	return ""
}

// start opens what the program needs and subscribes.
func (p *program) start(ctx context.Context) error {
	var want []schema.DeviceClass
	path := p.room
	switch p.dev.Class {
	case schema.DeviceClass_switch:
		want = []schema.DeviceClass{schema.DeviceClass_switch, schema.DeviceClass_light}
	case schema.DeviceClass_occupancy:
		want = []schema.DeviceClass{schema.DeviceClass_occupancy, schema.DeviceClass_light}
	case schema.DeviceClass_thermostat:
		want = []schema.DeviceClass{schema.DeviceClass_thermostat, schema.DeviceClass_occupancy}
	case schema.DeviceClass_co2:
		want = []schema.DeviceClass{schema.DeviceClass_co2, schema.DeviceClass_speaker}
	case schema.DeviceClass_display:
		want = []schema.DeviceClass{schema.DeviceClass_display, schema.DeviceClass_occupancy, schema.DeviceClass_temperature}
	default:
		path = p.dev.Path
	}
	var err error
	if err = p.call("open", func() error {
		p.caps, err = p.c.open(ctx, path, p.r.classOf, want...)
		return err
	}); err != nil {
		return err
	}
	own, ok := p.own()
	if !ok {
		return fmt.Errorf("open %s: no capability on the device itself", path)
	}
	switch p.dev.Class {
	case schema.DeviceClass_light:
		return p.call("state", func() error { return do(schema.Light(own.cap).State(ctx, nil)) })
	case schema.DeviceClass_doorLock:
		return p.call("lock", func() error { return do(schema.DoorLock(own.cap).Lock(ctx, nil)) })
	case schema.DeviceClass_speaker:
		return p.call("setVolume", func() error {
			return do(schema.Speaker(own.cap).SetVolume(ctx, func(q schema.Speaker_setVolume_Params) error { q.SetVolume(40); return nil }))
		})
	case schema.DeviceClass_microphone:
		return p.call("format", func() error { return do(schema.Microphone(own.cap).Format(ctx, nil)) })
	case schema.DeviceClass_switch:
		return p.subscribeSwitch(ctx, own, p.onSwitch)
	case schema.DeviceClass_occupancy:
		return p.subscribe(ctx, own, p.onOccupancy)
	case schema.DeviceClass_thermostat:
		th := schema.Thermostat(own.cap)
		p.setpoint = setback
		if err := p.call("setMode", func() error {
			return do(th.SetMode(ctx, func(q schema.Thermostat_setMode_Params) error { q.SetMode(schema.ThermostatMode_heat); return nil }))
		}); err != nil {
			return err
		}
		if err := p.setSetpoint(ctx, setback); err != nil {
			return err
		}
		for _, s := range p.of(schema.DeviceClass_occupancy) {
			if err := p.subscribe(ctx, s, p.onOccupancyForHeat); err != nil {
				return err
			}
			break
		}
		return nil
	case schema.DeviceClass_co2:
		return p.subscribe(ctx, own, p.onCO2)
	case schema.DeviceClass_temperature, schema.DeviceClass_illuminance:
		return p.subscribe(ctx, own, func(context.Context, schema.Reading) {})
	case schema.DeviceClass_display:
		for _, s := range append(p.of(schema.DeviceClass_occupancy), p.of(schema.DeviceClass_temperature)...) {
			if err := p.subscribe(ctx, s, p.onDisplayReading); err != nil {
				return err
			}
		}
		return nil
	}
	return nil
}

// stop releases what the program holds, logs out and closes its
// connection. A crashed program has nothing to stop.
func (p *program) stop(ctx context.Context) {
	if p.down || p.c == nil {
		return
	}
	c := p.c
	err := end(ctx, p.r.cfg.Settle, p.ending(func() {
		p.release()
		// The kernel lets go of the listeners once the subscriptions
		// are gone; only then is nothing of the kernel's own on its way
		// to the program, and the connection can end without a message
		// lost.
		p.awaitListeners(ctx)
		c.quit()
	}, c.hangUp))
	if err != nil {
		p.r.logf("%s: stop: %v", p.dev.Path, err)
	}
	p.c = nil
}

// awaitListeners waits until the kernel has released every listener the
// program gave it (10 s at most).
func (p *program) awaitListeners(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		p.listeners.Wait()
		close(done)
	}()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	select {
	case <-done:
	case <-ctx.Done():
		p.r.logf("%s: stop: the kernel still holds a listener: %v", p.dev.Path, ctx.Err())
	}
}

// listener counts a listener the program exports until its Shutdown, and
// notes when the kernel calls it.
type listener struct {
	p    *program
	once sync.Once
}

func (p *program) newListener() *listener {
	p.listeners.Add(1)
	return &listener{p: p}
}

// Shutdown runs when the last reference to the listener is gone.
func (l *listener) Shutdown() { l.once.Do(l.p.listeners.Done) }

// answered notes that the program has answered a call of the kernel.
func (l *listener) answered() {
	if w := l.p.r.cfg.Wall; w != nil {
		l.p.called.Store(w().UnixNano())
	}
}

// ending returns how the program's connection ends, for Config.Settle.
func (p *program) ending(quit, close func()) Ending {
	e := Ending{Quit: quit, Close: close, Subs: p.sensorSubs}
	if t := p.called.Load(); t != 0 {
		e.Called = time.Unix(0, t)
	}
	return e
}

// release releases the program's capabilities and subscriptions.
func (p *program) release() {
	for _, s := range p.subs {
		s.Release()
	}
	for _, h := range p.caps {
		h.cap.Release()
	}
	p.subs, p.caps, p.sensorSubs = nil, nil, 0
}

// cut ends the program's connection without a word, as a crash or a
// dropped connection does, and releases what it held locally.
func (p *program) cut(ctx context.Context) error {
	if p.down || p.c == nil {
		return nil
	}
	c := p.c
	err := end(ctx, p.r.cfg.Settle, p.ending(nil, func() { c.hangUp(); p.release() }))
	p.c = nil
	return err
}

// readingListener calls f with every reading, inside the delivery.
type readingListener struct {
	*listener
	f func(context.Context, schema.Reading)
}

func (l readingListener) Reading(ctx context.Context, call schema.ReadingListener_reading) error {
	r, err := call.Args().Reading()
	if err != nil {
		return err
	}
	l.f(ctx, r)
	l.answered()
	return nil
}

func (p *program) subscribe(ctx context.Context, s held, f func(context.Context, schema.Reading)) error {
	l := schema.ReadingListener(idleserver.Of[schema.ReadingListener_Server](schema.ReadingListener_Methods, readingListener{p.newListener(), f}))
	defer l.Release()
	return p.call("subscribe", func() error {
		fut, rel := schema.Sensor(s.cap).Subscribe(ctx, func(q schema.Sensor_subscribe_Params) error { return q.SetListener(l.AddRef()) })
		defer rel()
		res, err := fut.Struct()
		if err != nil {
			return err
		}
		p.subs = append(p.subs, capnp.Client(res.Subscription()).AddRef())
		p.sensorSubs++
		return nil
	})
}

type switchListener struct {
	*listener
	f func(context.Context, schema.SwitchEvent)
}

func (l switchListener) Event(ctx context.Context, call schema.SwitchListener_event) error {
	e, err := call.Args().Event()
	if err != nil {
		return err
	}
	l.f(ctx, e)
	l.answered()
	return nil
}

func (p *program) subscribeSwitch(ctx context.Context, s held, f func(context.Context, schema.SwitchEvent)) error {
	l := schema.SwitchListener(idleserver.Of[schema.SwitchListener_Server](schema.SwitchListener_Methods, switchListener{p.newListener(), f}))
	defer l.Release()
	return p.call("subscribe", func() error {
		fut, rel := schema.Switch(s.cap).Subscribe(ctx, func(q schema.Switch_subscribe_Params) error { return q.SetListener(l.AddRef()) })
		defer rel()
		res, err := fut.Struct()
		if err != nil {
			return err
		}
		p.subs = append(p.subs, capnp.Client(res.Subscription()).AddRef())
		return nil
	})
}

// lights sets every light of the room: level 0 is off.
func (p *program) lights(ctx context.Context, level uint8) error {
	var first error
	for _, h := range p.of(schema.DeviceClass_light) {
		err := p.call("setLevel", func() error {
			return do(schema.Light(h.cap).SetLevel(ctx, func(q schema.Light_setLevel_Params) error { q.SetLevel(level); return nil }))
		})
		if err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (p *program) onSwitch(ctx context.Context, e schema.SwitchEvent) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch e.Kind() {
	case schema.SwitchEventKind_press:
		p.long = false
	case schema.SwitchEventKind_longPress:
		p.long = true
		// Full brightness: the policy may cap it; then settle for ours.
		if err := p.lights(ctx, 100); err != nil && denialKind(err) == "permission" {
			p.lights(ctx, lightLevel)
		}
	case schema.SwitchEventKind_release:
		if p.long {
			return
		}
		ls := p.of(schema.DeviceClass_light)
		if len(ls) == 0 {
			return
		}
		on := false
		p.call("state", func() error {
			f, rel := schema.Light(ls[0].cap).State(ctx, nil)
			defer rel()
			res, err := f.Struct()
			if err != nil {
				return err
			}
			st, err := res.State()
			on = err == nil && st.On()
			return err
		})
		if on {
			p.lights(ctx, 0)
		} else {
			p.lights(ctx, lightLevel)
		}
	}
}

func (p *program) onOccupancy(ctx context.Context, r schema.Reading) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n, prev, seen := r.Value(), p.people, p.seen
	p.people, p.seen = n, true
	switch {
	case n > 0 && (prev == 0 || !seen):
		p.vacantAt, p.offSent = 0, false
		p.lights(ctx, lightLevel)
	case n == 0:
		if p.vacantAt == 0 {
			p.vacantAt = r.Time()
			if p.skew != 0 {
				// A skewed clock stamps the vacancy; the readings'
				// stamps are the kernel's.
				p.vacantAt = p.now().UnixNano()
			}
		}
		if !p.offSent && seen && time.Duration(r.Time()-p.vacantAt) >= vacancyOff {
			p.offSent = true
			p.lights(ctx, 0)
		}
	}
}

func (p *program) setSetpoint(ctx context.Context, c float64) error {
	th, ok := p.own()
	if !ok {
		return nil
	}
	err := p.call("setSetpoint", func() error {
		return do(schema.Thermostat(th.cap).SetSetpoint(ctx, func(q schema.Thermostat_setSetpoint_Params) error { q.SetCelsius(c); return nil }))
	})
	if err == nil {
		p.setpoint = c
	}
	return err
}

func (p *program) onOccupancyForHeat(ctx context.Context, r schema.Reading) {
	p.mu.Lock()
	defer p.mu.Unlock()
	want := setback
	if r.Value() > 0 {
		want = comfort
	}
	if want != p.setpoint {
		p.setSetpoint(ctx, want)
	}
}

func (p *program) onCO2(ctx context.Context, r schema.Reading) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v := r.Value()
	switch {
	case v >= co2Alarm && !p.alarm:
		p.alarm = true
		for _, s := range p.of(schema.DeviceClass_speaker) {
			msg := fmt.Sprintf("CO2 is at %.0f ppm: please open a window.", v)
			p.call("say", func() error {
				return do(schema.Speaker(s.cap).Say(ctx, func(q schema.Speaker_say_Params) error { return q.SetText(msg) }))
			})
		}
	case v < co2AllClear:
		p.alarm = false
	}
}

func (p *program) onDisplayReading(ctx context.Context, r schema.Reading) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch r.Kind() {
	case schema.ReadingKind_occupancy:
		p.people, p.seen = r.Value(), true
	case schema.ReadingKind_temperature:
		p.temp = r.Value()
	}
	who := "free"
	if p.people == 1 {
		who = "1 person"
	} else if p.people > 1 {
		who = fmt.Sprintf("%.0f people", p.people)
	}
	text := fmt.Sprintf("%s\n%s · %.0f °C · %s", p.r.label(p.room), who, p.temp, p.now().Format("15:04"))
	if text == p.shownText {
		return
	}
	ds := p.of(schema.DeviceClass_display)
	for _, d := range ds {
		if d.path != p.dev.Path {
			continue
		}
		if p.call("show", func() error {
			return do(schema.Display(d.cap).Show(ctx, func(q schema.Display_show_Params) error { return q.SetText(text) }))
		}) == nil {
			p.shownText = text
		}
	}
}
