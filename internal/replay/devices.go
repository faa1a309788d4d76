package replay

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/server"

	"github.com/osmose-os/osmose/drivers"
	"github.com/osmose-os/osmose/internal/topology"
	"github.com/osmose-os/osmose/kernel"
	"github.com/osmose-os/osmose/schema"
)

// Driver replay. Each device of the run's topology gets a fresh driver of
// package drivers (the kernel's drivers start with it) over replay
// hardware, and every admitted call on a device gate is sent to it, in
// admission order, with the recorded params; its answer, in canonical
// form and salted as the recorded body was, must hash to the recorded
// result's CID. The driver's clock reads the call's recorded time.
//
// What the world decides is an input, taken from the recorded result
// before the call runs: a sensor's reading (Sensor.read), the temperature
// a thermostat measures, a door's contact, whether a speaker still plays,
// a microphone's format, which switch buttons are held (Switch.pressed,
// whose result is not compared: the driver learns it from button events
// that reach the kernel only if a program subscribed). A recorded driver
// error is a hardware failure, an input, when the driver had called its
// hardware for that call (the replay hardware then fails); any other
// recorded error must be reproduced word for word.
//
// A call's inputs are in its return entry, which may come after later
// calls on other devices: each device keeps its calls in a queue and sends
// the one at its head once its return is known, so its driver still sees
// its calls in admission order. Sends do not wait: each driver runs on its
// own server goroutine, its inputs (the time, the world's values, a
// failure) travel with the call and are applied on that goroutine just
// before the driver's method runs, and answers are compared in the order
// the calls were sent, while replay goes on (a bounded window).

type devices struct {
	cat    *kernel.Catalog
	byPath map[string]*device
	res    *Results
	eng    *engine
	// stubs are the capabilities a replayed call's params carry (a
	// listener, a sink): servers without methods. Replay hardware never
	// produces readings, events or frames, so the drivers never call them.
	stubs []capnp.Client
	// check carries the calls sent, in send order, to the checker
	// goroutine, which waits for each answer and compares it; a barrier
	// (wait) collects what it found.
	check chan checkItem
	// Owned by the checker until a barrier returns: the first divergence
	// found, and what it counted.
	failed   error
	counts   Results
	hardware int
	scratch  []byte
	// diverged is set by the checker when it finds a divergence.
	diverged atomic.Bool
}

// checkItem is a sent call to compare, or a barrier.
type checkItem struct {
	p       *pending
	barrier chan struct{}
}

// maxFlight bounds the calls sent to drivers and not yet compared.
const maxFlight = 1024

type device struct {
	path    string
	class   schema.DeviceClass
	client  capnp.Client
	srv     *server.Server // the client's server: replayed calls go to it directly
	hw      hardware
	clock   *replayClock
	queue   []*pending
	tainted uint64 // seq of an erased call it ran without; 0 for none
}

// pending is one admitted call on a device.
type pending struct {
	dev    *device
	call   *Entry
	ret    *Entry
	known  bool // ret is set
	skip   bool // do not compare (erased result, interrupted call)
	opaque bool // the params were erased: the call cannot be run

	// Set when sent.
	in      *callInput
	ans     *capnp.Answer
	release capnp.ReleaseFunc
	compare bool
	tainted bool // its device ran an erased call before it
}

// callInput is what a call brings its driver's goroutine: the time, and
// from the recorded return, the world's values or a failure. The driver's
// goroutine writes back what the hardware did.
type callInput struct {
	time    int64
	fail    bool
	results capnp.Struct // the recorded results, to read the world's values from
	method  uint16
	// Written on the driver's goroutine, read once the answer is in.
	world, hwFailed bool
}

type inputKey struct{}

func newDevices(eng *engine, top *topology.Topology) (*devices, error) {
	d := &devices{cat: eng.cat, byPath: map[string]*device{}, res: &eng.rep.Results, eng: eng,
		check: make(chan checkItem, maxFlight), counts: Results{Unchecked: map[string]int{}}}
	go d.checker()
	for _, dv := range top.Devices {
		hw := newHardware(dv.Class)
		if hw == nil {
			continue
		}
		clock := &replayClock{}
		// One set per device, so that each driver reads its own clock;
		// NewSet builds it as the kernel's set does.
		set, err := drivers.NewSet([]drivers.Device{{Path: dv.Path, Class: dv.Class}}, func(drivers.Device) any { return hw }, clock.Now)
		if err != nil {
			d.close()
			return nil, err
		}
		drv, ok := set.Driver(dv.Path)
		if !ok {
			continue
		}
		x := &device{path: dv.Path, class: dv.Class, hw: hw, clock: clock}
		ms, err := driverMethods(drv)
		if err != nil {
			d.close()
			return nil, fmt.Errorf("%s: %w", dv.Path, err)
		}
		for i := range ms {
			impl := ms[i].Impl
			ms[i].Impl = func(ctx context.Context, c *server.Call) error {
				in, _ := ctx.Value(inputKey{}).(*callInput)
				if in != nil {
					x.clock.set(in.time)
					x.hw.reset()
					if in.fail {
						x.hw.failNext()
					} else if in.results.IsValid() {
						in.world = x.hw.input(x.class, in.method, in.results)
					}
				}
				err := impl(ctx, c)
				if in != nil {
					in.hwFailed = x.hw.failed()
				}
				return err
			}
		}
		x.srv = server.New(ms, drv, nil)
		x.client = capnp.NewClient(x.srv)
		d.byPath[dv.Path] = x
	}
	for range 8 {
		d.stubs = append(d.stubs, capnp.NewClient(server.New(nil, nil, nil)))
	}
	return d, nil
}

// driverMethods is a driver's method table.
func driverMethods(drv any) ([]server.Method, error) {
	switch v := drv.(type) {
	case *drivers.Light:
		return schema.Light_Methods(nil, v), nil
	case *drivers.Thermostat:
		return schema.Thermostat_Methods(nil, v), nil
	case *drivers.Sensor:
		return schema.Sensor_Methods(nil, v), nil
	case *drivers.DoorLock:
		return schema.DoorLock_Methods(nil, v), nil
	case *drivers.Display:
		return schema.Display_Methods(nil, v), nil
	case *drivers.Speaker:
		return schema.Speaker_Methods(nil, v), nil
	case *drivers.Microphone:
		return schema.Microphone_Methods(nil, v), nil
	case *drivers.Switch:
		return schema.Switch_Methods(nil, v), nil
	}
	return nil, fmt.Errorf("a driver of type %T, which replay does not know", drv)
}

// close releases the drivers, once every answer has been compared.
func (d *devices) close() {
	d.wait()
	close(d.check)
	for _, dv := range d.byPath {
		dv.client.Release()
	}
	for _, c := range d.stubs {
		c.Release()
	}
}

// call queues an admitted call on its device; opaque says its params were
// erased. It returns nil for a device without a driver.
func (d *devices) call(en *Entry, opaque bool) *pending {
	dv := d.byPath[en.Env.Device]
	if dv == nil {
		return nil
	}
	p := &pending{dev: dv, call: en, opaque: opaque}
	dv.queue = append(dv.queue, p)
	return p
}

// setReturn gives a pending call its return entry.
func (p *pending) setReturn(ret *Entry, skip bool) {
	p.ret, p.known, p.skip = ret, true, skip
}

// drain sends the calls at the head of a device's queue whose returns are
// known. A divergence the checker found meanwhile is returned.
func (d *devices) drain(ctx context.Context, dv *device) error {
	for len(dv.queue) > 0 && dv.queue[0].known {
		p := dv.queue[0]
		dv.queue[0] = nil
		dv.queue = dv.queue[1:]
		d.send(ctx, p)
	}
	if d.diverged.Load() {
		return d.wait()
	}
	return nil
}

// checker compares the answers of the calls sent, in send order, until
// check is closed.
func (d *devices) checker() {
	for it := range d.check {
		if it.barrier != nil {
			close(it.barrier)
			continue
		}
		<-it.p.ans.Done()
		if d.failed == nil {
			if err := d.compare(it.p); err != nil {
				d.failed = err
				d.diverged.Store(true)
			}
		}
		it.p.release()
	}
}

// wait waits until every call sent has been compared, adds what the
// checker counted to the report, and returns the first divergence.
func (d *devices) wait() error {
	b := make(chan struct{})
	d.check <- checkItem{barrier: b}
	<-b
	r := &d.counts
	d.res.Reproduced += r.Reproduced
	d.res.World += r.World
	d.res.Hardware += r.Hardware
	for k, v := range r.Unchecked {
		d.res.Unchecked[k] += v
	}
	if d.hardware > 0 {
		d.eng.rep.Inputs["hardware failures (the driver's error came from its hardware)"] += d.hardware
	}
	d.counts, d.hardware = Results{Unchecked: map[string]int{}}, 0
	return d.failed
}

// Methods whose results carry what the world decides.
const (
	mSensorRead      = 0
	mThermostatState = 2
	mLockState       = 3
	mSpeakerState    = 4
	mMicFormat       = 0
	mMicRecord       = 1
	mSwitchPressed   = 1
)

// worldMethod reports whether a method's results carry the world's values.
func worldMethod(c schema.DeviceClass, m uint16) bool {
	switch c {
	case schema.DeviceClass_occupancy, schema.DeviceClass_temperature, schema.DeviceClass_co2, schema.DeviceClass_illuminance:
		return m == mSensorRead
	case schema.DeviceClass_thermostat:
		return m == mThermostatState
	case schema.DeviceClass_doorLock:
		return m == mLockState
	case schema.DeviceClass_speaker:
		return m == mSpeakerState
	case schema.DeviceClass_microphone:
		return m == mMicFormat || m == mMicRecord
	}
	return false
}

// send sends one call to its driver, with its inputs.
func (d *devices) send(ctx context.Context, p *pending) {
	dv, env, res := p.dev, p.call.Env, d.res
	if p.opaque {
		if dv.tainted == 0 {
			dv.tainted = env.Seq
		}
		res.Unchecked["calls whose params were erased (not run on the driver)"]++
		return
	}
	p.compare = !p.skip
	if dv.class == schema.DeviceClass_switch && env.Method == mSwitchPressed {
		p.compare = false // the buttons held are the world's; see above
		res.Unchecked["switch button states (the world's)"]++
	}
	in := &callInput{time: env.Time, method: env.Method}
	if p.compare {
		if p.ret.Env.Reason != "" {
			in.fail = true
		} else if p.ret.Result != nil && worldMethod(dv.class, env.Method) {
			in.results = rootStruct(p.ret.Result)
		}
	}
	p.in = in
	// The call goes to the driver's server as a received call whose
	// params are the recorded ones, read in place (as server.Send does,
	// without copying them into a message of their own).
	m := capnp.Method{InterfaceID: env.Interface, MethodID: env.Method}
	args := p.call.paramsStruct()
	if args.IsValid() && args.Size().PointerCount > 0 {
		ct := args.Message().CapTable()
		for _, c := range d.stubs {
			ct.Add(c.AddRef())
		}
	}
	ret := new(capnp.StructReturner)
	pc := dv.srv.Recv(context.WithValue(ctx, inputKey{}, in), capnp.Recv{Method: m, Args: args, ReleaseArgs: func() {}, Returner: ret})
	p.tainted = dv.tainted != 0
	p.ans, p.release = ret.Answer(m, pc)
	d.check <- checkItem{p: p}
}

// compare checks an answer that is in against the recorded return. It
// runs on the checker goroutine: it reads the entries and counts in
// d.counts. A divergence is reported unless the call's params are damaged.
func (d *devices) compare(p *pending) error {
	err := d.compareResult(p)
	if err != nil && IsDivergence(err) {
		if perr := p.call.verifyBodies(); perr != nil {
			return perr
		}
	}
	return err
}

func (d *devices) compareResult(p *pending) error {
	env, res := p.call.Env, &d.counts
	if !p.compare {
		return nil
	}
	var out []byte
	var errText string
	st, err := p.ans.Struct()
	switch {
	case err != nil:
		errText = kernel.Truncate(err.Error())
	case st.IsValid():
		if out, err = capnp.Canonicalize(st); err != nil {
			errText = kernel.Truncate(err.Error())
		}
	}
	if p.tainted {
		res.Unchecked["results of devices that ran a call whose params were erased"]++
		return nil
	}
	ret := p.ret
	switch {
	case ret.Env.Reason != "" && p.in.hwFailed:
		res.Hardware++
		d.hardware++
		return nil
	case ret.Env.Reason != "" || errText != "":
		if errText == ret.Env.Reason && !ret.Env.Result.Defined() {
			res.Reproduced++
			return nil
		}
		rep := "error " + quote(errText)
		if errText == "" {
			rep = "result " + describeResult(env.Interface, env.Method, out)
		}
		rec := "error " + quote(ret.Env.Reason)
		if ret.Env.Reason == "" {
			rec = "result " + describeResult(env.Interface, env.Method, ret.Result)
		}
		return d.eng.diverge(ret, "result", rep, rec, "")
	case !ret.Env.Result.Defined() && out == nil:
		res.Reproduced++
		return nil
	case !ret.Env.Result.Defined() || out == nil:
		return d.eng.diverge(ret, "result", describeResult(env.Interface, env.Method, out), describeResult(env.Interface, env.Method, ret.Result), "")
	}
	var key string
	key, d.scratch = bodyKey(out, ret.ResultSalt, d.scratch)
	if key != ret.Env.Result.KeyString() {
		return d.eng.diverge(ret, "result", describeResult(env.Interface, env.Method, out), describeResult(env.Interface, env.Method, ret.Result),
			"a ledger whose drivers were not those of package drivers on a logical clock (osmose serve's fakes, real hardware) replays with --drivers none")
	}
	if p.in.world {
		res.World++
	} else {
		res.Reproduced++
	}
	return nil
}

// replayClock is the drivers' clock: the recorded time of the call being
// replayed.
type replayClock struct{ ns atomic.Int64 }

func (c *replayClock) set(ns int64)   { c.ns.Store(ns) }
func (c *replayClock) Now() time.Time { return time.Unix(0, c.ns.Load()) }

// ---- replay hardware ----

// hardware is a device's replay hardware: it does what the driver asks,
// reports the world's values the record gives it, and fails when the
// record says the call failed.
type hardware interface {
	reset()
	failNext()
	failed() bool
	// input sets the world's values from a call's recorded results; it
	// reports whether the method's results carry any.
	input(class schema.DeviceClass, method uint16, results capnp.Struct) bool
}

// errHardware is what replay hardware fails with.
var errHardware = errors.New("hardware failure, as recorded")

type hwBase struct {
	fail, didFail bool
}

func (h *hwBase) reset()       { h.fail, h.didFail = false, false }
func (h *hwBase) failNext()    { h.fail = true }
func (h *hwBase) failed() bool { return h.didFail }
func (h *hwBase) act() error {
	if h.fail {
		h.didFail = true
		return errHardware
	}
	return nil
}
func (h *hwBase) input(schema.DeviceClass, uint16, capnp.Struct) bool { return false }

func newHardware(c schema.DeviceClass) hardware {
	switch c {
	case schema.DeviceClass_light:
		return &lightHW{}
	case schema.DeviceClass_thermostat:
		return &thermostatHW{}
	case schema.DeviceClass_occupancy, schema.DeviceClass_temperature, schema.DeviceClass_co2, schema.DeviceClass_illuminance:
		return &sensorHW{}
	case schema.DeviceClass_doorLock:
		return &lockHW{}
	case schema.DeviceClass_display:
		return &displayHW{}
	case schema.DeviceClass_speaker:
		return &speakerHW{}
	case schema.DeviceClass_switch:
		return &switchHW{}
	case schema.DeviceClass_microphone:
		return &micHW{enc: schema.AudioEncoding_pcmS16le, rate: 16000, ch: 1}
	}
	return nil
}

type lightHW struct{ hwBase }

func (h *lightHW) SetLight(on bool, level uint8) error { return h.act() }

type thermostatHW struct {
	hwBase
	temp float64
}

func (h *thermostatHW) SetThermostat(float64, schema.ThermostatMode) error { return h.act() }
func (h *thermostatHW) Temperature() float64                               { return h.temp }
func (h *thermostatHW) input(_ schema.DeviceClass, m uint16, r capnp.Struct) bool {
	if m != mThermostatState {
		return false
	}
	st, err := schema.Thermostat_state_Results(r).State()
	if err != nil {
		return false
	}
	h.temp = st.Temperature()
	return true
}

type sensorHW struct {
	hwBase
	value float64
}

func (h *sensorHW) Sample() float64                                  { return h.value }
func (h *sensorHW) Watch(func(ctx context.Context, v float64) error) {}
func (h *sensorHW) input(_ schema.DeviceClass, m uint16, r capnp.Struct) bool {
	if m != mSensorRead {
		return false
	}
	rd, err := schema.Sensor_read_Results(r).Reading()
	if err != nil {
		return false
	}
	h.value = rd.Value()
	return true
}

type lockHW struct {
	hwBase
	open bool
}

func (h *lockHW) SetLocked(bool) error { return h.act() }
func (h *lockHW) DoorOpen() bool       { return h.open }
func (h *lockHW) input(_ schema.DeviceClass, m uint16, r capnp.Struct) bool {
	if m != mLockState {
		return false
	}
	st, err := schema.DoorLock_state_Results(r).State()
	if err != nil {
		return false
	}
	h.open = st.Open()
	return true
}

type displayHW struct{ hwBase }

func (h *displayHW) Show(string) error { return h.act() }

type speakerHW struct {
	hwBase
	playing bool
}

func (h *speakerHW) Play(string) error     { return h.act() }
func (h *speakerHW) Say(string) error      { return h.act() }
func (h *speakerHW) SetVolume(uint8) error { return h.act() }
func (h *speakerHW) Stop() error           { return h.act() }
func (h *speakerHW) Playing() bool         { return h.playing }
func (h *speakerHW) input(_ schema.DeviceClass, m uint16, r capnp.Struct) bool {
	if m != mSpeakerState {
		return false
	}
	st, err := schema.Speaker_state_Results(r).State()
	if err != nil {
		return false
	}
	h.playing = st.Playing()
	return true
}

type switchHW struct{ hwBase }

func (h *switchHW) Buttons() int { return 1 }
func (h *switchHW) Watch(func(ctx context.Context, kind schema.SwitchEventKind, button uint8) error) {
}

type micHW struct {
	hwBase
	enc  schema.AudioEncoding
	rate uint32
	ch   uint8
}

func (h *micHW) Format() (schema.AudioEncoding, uint32, uint8)       { return h.enc, h.rate, h.ch }
func (h *micHW) Watch(func(ctx context.Context, frame []byte) error) {}
func (h *micHW) input(_ schema.DeviceClass, m uint16, r capnp.Struct) bool {
	var f schema.AudioFormat
	var err error
	switch m {
	case mMicFormat:
		f, err = schema.Microphone_format_Results(r).Format()
	case mMicRecord:
		f, err = schema.Microphone_record_Results(r).Format()
	default:
		return false
	}
	if err != nil {
		return false
	}
	h.enc, h.rate, h.ch = f.Encoding(), f.SampleRate(), f.Channels()
	return true
}
