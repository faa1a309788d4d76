package sim

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"sync"
	"time"

	"github.com/osmose-os/osmose/internal/topology"
	"github.com/osmose-os/osmose/schema"
)

// WorldConfig configures NewWorld.
type WorldConfig struct {
	// Topology is the building; every place of kind room becomes a room
	// of the model (a device outside any room is still driven, in a room
	// of its own).
	Topology *topology.Topology
	// Seed draws people's schedules, switch habits and sensor noise.
	Seed int64
	// People is the number of occupants.
	People int
	// Start is the simulated time the world starts at.
	Start time.Time
	// Physics are the model's constants; zero fields take DefaultPhysics.
	Physics Physics
	// Sleep, if set, is how a slow device (Slow) answers late: it waits
	// for a real-time duration (time.Sleep at the edge). Nil: slow devices
	// answer at once. Nothing simulated depends on it.
	Sleep func(time.Duration)
}

// World is the building's physics and people: a seeded state machine that
// Advance moves forward in simulated time. It is also the simulator's
// hardware: Hardware returns the object a driver drives for each device
// (its methods match the hardware interfaces of package drivers). Nothing
// in it reads the wall clock or a global random source; the noise of a
// sensor reading is a hash of the seed, the device and the step, so it
// does not depend on the order in which anything is read.
type World struct {
	phys Physics
	seed int64

	mu      sync.Mutex
	now     time.Time
	tick    uint64
	rooms   []*room
	byRoom  map[string]*room
	hw      map[string]any
	sensors []*Sensor // in topology order
	people  []*Person
	at      []string // the room each person is in, "" out

	// Faults (see Slow, Hold, Freeze).
	sleep func(time.Duration)
	slow  map[string]time.Duration
	holds map[string]*Hold
	late  int
}

// room is one room's state.
type room struct {
	path       string
	temp, co2  float64
	heating    bool
	cooling    bool
	setpoint   float64
	mode       schema.ThermostatMode
	lights     []*Light
	switches   []*Switch
	occupants  int
	hasControl bool // a thermostat is in the room
}

// Event is something the building reports: a sensor's new reading or a
// person's hand on a switch, for the runner to deliver through the drivers
// (World.Fire); or a door badge: a person entering or leaving a room, for
// the runner to report to the kernel (Operator.presence).
type Event struct {
	Device string
	// Reading is the new value of a sensor (Buttons empty).
	Reading float64
	// Buttons is a sequence of events of button 0 of a switch.
	Buttons []schema.SwitchEventKind
	// Person, when set, makes the event a door badge's: the person
	// entered (Present) or left the room Place. Device is empty.
	Person  string
	Place   string
	Present bool
}

func (e Event) String() string {
	if e.Person != "" {
		if e.Present {
			return fmt.Sprintf("%s entered %s", e.Person, e.Place)
		}
		return fmt.Sprintf("%s left %s", e.Person, e.Place)
	}
	if len(e.Buttons) > 0 {
		return fmt.Sprintf("%s %v", e.Device, e.Buttons)
	}
	return fmt.Sprintf("%s %.1f", e.Device, e.Reading)
}

// Publishing thresholds: a sensor reports when its value moved by its
// dead band since the last report, and at least every Heartbeat.
const (
	Heartbeat     = 15 * time.Minute
	bandTemp      = 0.3
	bandCO2       = 75
	bandLuxAbs    = 40
	bandLuxRel    = 0.2
	boostChance   = 0.15 // a person entering an empty room long-presses for full light
	switchOffOdds = 0.6  // the last one out switches the lights off
)

// NewWorld builds the world of a building at cfg.Start: rooms at 19 °C
// and outdoor CO2, lights off, nobody in.
func NewWorld(cfg WorldConfig) (*World, error) {
	if cfg.Topology == nil {
		return nil, errors.New("sim: WorldConfig.Topology is required")
	}
	w := &World{
		phys:   cfg.Physics.withDefaults(),
		seed:   cfg.Seed,
		now:    cfg.Start,
		byRoom: map[string]*room{},
		hw:     map[string]any{},
		sleep:  cfg.Sleep,
		slow:   map[string]time.Duration{},
		holds:  map[string]*Hold{},
	}
	var roomPaths []string
	for _, p := range cfg.Topology.Places {
		if p.Kind == schema.PlaceKind_room {
			w.addRoom(p.Path)
			roomPaths = append(roomPaths, p.Path)
		}
	}
	for _, d := range cfg.Topology.Devices {
		r := w.roomOf(d.Path)
		switch d.Class {
		case schema.DeviceClass_light:
			l := &Light{w: w, r: r, path: d.Path}
			r.lights = append(r.lights, l)
			w.hw[d.Path] = l
		case schema.DeviceClass_thermostat:
			r.hasControl = true
			w.hw[d.Path] = &Thermostat{w: w, r: r, path: d.Path}
		case schema.DeviceClass_occupancy, schema.DeviceClass_temperature, schema.DeviceClass_co2, schema.DeviceClass_illuminance:
			s := &Sensor{w: w, r: r, path: d.Path, class: d.Class}
			w.sensors = append(w.sensors, s)
			w.hw[d.Path] = s
		case schema.DeviceClass_doorLock:
			w.hw[d.Path] = &Lock{w: w, path: d.Path}
		case schema.DeviceClass_display:
			w.hw[d.Path] = &Display{w: w, path: d.Path}
		case schema.DeviceClass_speaker:
			w.hw[d.Path] = &Speaker{w: w, path: d.Path}
		case schema.DeviceClass_microphone:
			w.hw[d.Path] = &Microphone{w: w}
		case schema.DeviceClass_switch:
			s := &Switch{w: w, path: d.Path}
			r.switches = append(r.switches, s)
			w.hw[d.Path] = s
		}
	}
	w.people = newPeople(cfg.Seed, cfg.People, roomPaths)
	w.at = make([]string, len(w.people))
	return w, nil
}

func (w *World) addRoom(path string) *room {
	r := &room{path: path, temp: 19, co2: w.phys.CO2Outside, setpoint: 20}
	w.rooms = append(w.rooms, r)
	w.byRoom[path] = r
	return r
}

// roomOf returns the innermost room containing a device, or a room of the
// device's own place.
func (w *World) roomOf(device string) *room {
	for p := topology.Parent(device); p != ""; p = topology.Parent(p) {
		if r, ok := w.byRoom[p]; ok {
			return r
		}
	}
	if r, ok := w.byRoom[topology.Parent(device)]; ok {
		return r
	}
	return w.addRoom(topology.Parent(device))
}

// Hardware returns the simulated hardware of a device (*Light, *Sensor,
// ...), or nil for a device of a class the world does not model.
func (w *World) Hardware(path string) any { return w.hw[path] }

// People returns the occupants.
func (w *World) People() []*Person { return w.people }

// Now returns the world's time.
func (w *World) Now() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.now
}

// Occupied returns how many people are in the building now.
func (w *World) Occupied() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, r := range w.rooms {
		n += r.occupants
	}
	return n
}

// RoomState is a snapshot of one room, for progress lines and tests.
type RoomState struct {
	Path        string
	Temperature float64
	CO2         float64
	Illuminance float64
	Occupants   int
	Heating     bool
	LightsOn    int
}

// Rooms returns a snapshot of every room.
func (w *World) Rooms() []RoomState {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]RoomState, len(w.rooms))
	for i, r := range w.rooms {
		on := 0
		for _, l := range r.lights {
			if l.on {
				on++
			}
		}
		out[i] = RoomState{Path: r.path, Temperature: r.temp, CO2: r.co2, Illuminance: w.lux(r),
			Occupants: r.occupants, Heating: r.heating, LightsOn: on}
	}
	return out
}

func (w *World) lux(r *room) float64 {
	levels := make([]uint8, 0, len(r.lights))
	for _, l := range r.lights {
		if l.on {
			levels = append(levels, l.level)
		}
	}
	return w.phys.Illuminance(w.now, levels...)
}

// Advance moves the world to time to: people move to where their schedule
// puts them, thermostats switch their heating, temperature and CO2 follow
// their first-order models over the step, and every sensor whose value
// moved past its dead band (or whose heartbeat is due) reports. It returns
// the events to deliver, in a deterministic order: the door badges first
// (person by person, in the order of People: leaving the old room, then
// entering the new one), then occupancy changes, then the other readings
// in topology order, then switch presses.
func (w *World) Advance(to time.Time) []Event {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !to.After(w.now) {
		return nil
	}
	dt := to.Sub(w.now)
	// Heating and cooling run at the state the thermostat chose at the
	// start of the step.
	for _, r := range w.rooms {
		n := r.occupants
		r.temp = FirstOrder(r.temp, w.phys.TempTarget(w.now, n, r.heating, r.cooling), dt, w.phys.Tau)
		r.co2 = FirstOrder(r.co2, w.phys.CO2Target(n), dt, w.phys.CO2Tau())
	}
	w.now = to
	w.tick++
	// People move, badging out of one room and into the next.
	counts := map[string]int{}
	var badges []Event
	for i, p := range w.people {
		at := p.At(to)
		if at != "" {
			counts[at]++
		}
		if at == w.at[i] {
			continue
		}
		if w.at[i] != "" {
			badges = append(badges, Event{Person: p.ID, Place: w.at[i]})
		}
		if at != "" {
			badges = append(badges, Event{Person: p.ID, Place: at, Present: true})
		}
		w.at[i] = at
	}
	var presses []Event
	for _, r := range w.rooms {
		prev := r.occupants
		r.occupants = counts[r.path]
		if len(r.switches) > 0 {
			sw := r.switches[0].path
			switch {
			case prev > 0 && r.occupants == 0 && w.chance(r.path, "off") < switchOffOdds:
				presses = append(presses, Event{Device: sw, Buttons: []schema.SwitchEventKind{schema.SwitchEventKind_press, schema.SwitchEventKind_release}})
			case prev == 0 && r.occupants > 0 && w.chance(r.path, "boost") < boostChance:
				presses = append(presses, Event{Device: sw, Buttons: []schema.SwitchEventKind{schema.SwitchEventKind_press, schema.SwitchEventKind_longPress, schema.SwitchEventKind_release}})
			}
		}
		// The thermostat decides for the next step.
		wasHeating := r.heating
		r.heating, r.cooling = false, false
		if r.hasControl {
			lo, hi := r.setpoint-w.phys.Hysteresis, r.setpoint+w.phys.Hysteresis
			switch r.mode {
			case schema.ThermostatMode_heat:
				r.heating = r.temp < lo || (wasHeating && r.temp < hi)
			case schema.ThermostatMode_cool:
				r.cooling = r.temp > hi
			case schema.ThermostatMode_auto:
				r.heating, r.cooling = r.temp < lo, r.temp > hi
			}
		}
	}
	var occ, other []Event
	for _, s := range w.sensors {
		v := s.sample()
		if !s.due(v) {
			continue
		}
		s.last, s.lastAt, s.reported = v, w.now, true
		e := Event{Device: s.path, Reading: v}
		if s.class == schema.DeviceClass_occupancy {
			occ = append(occ, e)
		} else {
			other = append(other, e)
		}
	}
	return append(append(append(badges, occ...), other...), presses...)
}

// Fire delivers an event through the driver watching the hardware, and
// returns when every subscriber has it. Hardware nobody drives ignores it.
// A door badge's event has no hardware: the runner reports it to the
// kernel itself.
func (w *World) Fire(ctx context.Context, e Event) error {
	if e.Person != "" {
		return fmt.Errorf("sim: %v: a door badge's report goes to the kernel, not through a driver", e)
	}
	w.mu.Lock()
	hw := w.hw[e.Device]
	w.mu.Unlock()
	switch h := hw.(type) {
	case *Sensor:
		return h.fire(ctx, e.Reading)
	case *Switch:
		for _, k := range e.Buttons {
			if err := h.fire(ctx, k, 0); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("sim: %s: no hardware that reports", e.Device)
}

// hash returns a 64-bit hash of the seed, the current step and the parts.
func (w *World) hash(parts ...string) uint64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%d\x00%d", w.seed, w.tick)
	for _, p := range parts {
		h.Write([]byte{0})
		h.Write([]byte(p))
	}
	// splitmix64 finaliser: fnv's low bits are weak.
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// chance returns a uniform number in [0, 1) for this step and these parts.
func (w *World) chance(parts ...string) float64 {
	return float64(w.hash(parts...)>>11) / (1 << 53)
}

// noise returns a standard normal number for this step and device.
func (w *World) noise(path string) float64 {
	u1 := w.chance(path, "n1")
	u2 := w.chance(path, "n2")
	if u1 < 1e-300 {
		u1 = 1e-300
	}
	return math.Sqrt(-2*math.Log(u1)) * math.Cos(2*math.Pi*u2)
}

// Stick makes a sensor report v whatever it measures (a stuck sensor); it
// is also how tests make a sensor measure a given value.
func (w *World) Stick(path string, v float64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	s, ok := w.hw[path].(*Sensor)
	if !ok {
		return fmt.Errorf("sim: %s is not a sensor", path)
	}
	s.stuck = &v
	return nil
}

// Freeze makes a sensor stuck at the value it last reported (or measures
// now, if it never reported): it keeps reporting that value, on its
// heartbeat, until Unstick.
func (w *World) Freeze(path string) (float64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s, ok := w.hw[path].(*Sensor)
	if !ok {
		return 0, fmt.Errorf("sim: %s is not a sensor", path)
	}
	v := s.last
	if !s.reported {
		v = s.sample()
	}
	s.stuck = &v
	return v, nil
}

// Unstick makes a stuck sensor measure again.
func (w *World) Unstick(path string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	s, ok := w.hw[path].(*Sensor)
	if !ok {
		return fmt.Errorf("sim: %s is not a sensor", path)
	}
	s.stuck = nil
	return nil
}

// Slow makes a device answer each request of its driver d late (a slow
// device; 0: on time again). The delay is real time, through
// WorldConfig.Sleep: it changes how long calls take, never what they do.
func (w *World) Slow(path string, d time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if d <= 0 {
		delete(w.slow, path)
		return
	}
	w.slow[path] = d
}

// LateAnswers returns how many requests slow devices answered late.
func (w *World) LateAnswers() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.late
}

// Hold is a device whose answers wait for the runner's word: each request
// of its driver waits until Next lets one through, or until Release.
// With a driver serving one request at a time, the runner decides when
// each answer goes back, which makes a flood of calls deterministic (see
// the malicious program in the package doc).
type Hold struct {
	w    *World
	path string

	mu       sync.Mutex
	cond     *sync.Cond
	turns    int
	released bool
}

// Hold holds the answers of a device until the Hold is released. One
// hold per device at a time.
func (w *World) Hold(path string) *Hold {
	h := &Hold{w: w, path: path}
	h.cond = sync.NewCond(&h.mu)
	w.mu.Lock()
	w.holds[path] = h
	w.mu.Unlock()
	return h
}

// Next lets one more request through.
func (h *Hold) Next() {
	h.mu.Lock()
	h.turns++
	h.mu.Unlock()
	h.cond.Broadcast()
}

// Release ends the hold: every request waiting or to come goes through.
func (h *Hold) Release() {
	h.w.mu.Lock()
	if h.w.holds[h.path] == h {
		delete(h.w.holds, h.path)
	}
	h.w.mu.Unlock()
	h.mu.Lock()
	h.released = true
	h.mu.Unlock()
	h.cond.Broadcast()
}

func (h *Hold) wait() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for h.turns == 0 && !h.released {
		h.cond.Wait()
	}
	if !h.released {
		h.turns--
	}
}

// answer runs before a device answers a request of its driver: a held
// device waits for its turn, a slow one answers late.
func (w *World) answer(path string) {
	w.mu.Lock()
	h, d, sleep := w.holds[path], w.slow[path], w.sleep
	if d > 0 && sleep != nil {
		w.late++
	}
	w.mu.Unlock()
	if h != nil {
		h.wait()
	}
	if d > 0 && sleep != nil {
		sleep(d)
	}
}

// Publish makes a sensor report what it measures now.
func (w *World) Publish(ctx context.Context, path string) error {
	w.mu.Lock()
	s, ok := w.hw[path].(*Sensor)
	var v float64
	if ok {
		v = s.sample()
		s.last, s.lastAt, s.reported = v, w.now, true
	}
	w.mu.Unlock()
	if !ok {
		return fmt.Errorf("sim: %s is not a sensor", path)
	}
	return s.fire(ctx, v)
}

// Button makes a switch's button do kind.
func (w *World) Button(ctx context.Context, path string, kind schema.SwitchEventKind, button uint8) error {
	w.mu.Lock()
	s, ok := w.hw[path].(*Switch)
	w.mu.Unlock()
	if !ok {
		return fmt.Errorf("sim: %s is not a switch", path)
	}
	return s.fire(ctx, kind, button)
}

// Hear makes a microphone produce one frame.
func (w *World) Hear(ctx context.Context, path string, frame []byte) error {
	w.mu.Lock()
	m, ok := w.hw[path].(*Microphone)
	var f func(context.Context, []byte) error
	if ok {
		f = m.frame
	}
	w.mu.Unlock()
	if !ok {
		return fmt.Errorf("sim: %s is not a microphone", path)
	}
	if f == nil {
		return nil
	}
	return f(ctx, frame)
}

// Light is a simulated luminaire: its output adds to its room's
// illuminance.
type Light struct {
	w     *World
	r     *room
	path  string
	on    bool
	level uint8
}

func (l *Light) SetLight(on bool, level uint8) error {
	l.w.answer(l.path)
	l.w.mu.Lock()
	l.on, l.level = on, level
	l.w.mu.Unlock()
	return nil
}

// Output reports what the light emits.
func (l *Light) Output() (on bool, level uint8) {
	l.w.mu.Lock()
	defer l.w.mu.Unlock()
	return l.on, l.level
}

// Thermostat is a simulated room controller: it switches its room's
// heating (or cooling) with a dead band around the setpoint.
type Thermostat struct {
	w    *World
	r    *room
	path string
}

func (t *Thermostat) SetThermostat(setpoint float64, mode schema.ThermostatMode) error {
	t.w.answer(t.path)
	t.w.mu.Lock()
	t.r.setpoint, t.r.mode = setpoint, mode
	t.w.mu.Unlock()
	return nil
}

// Target reports the setpoint and mode the thermostat holds.
func (t *Thermostat) Target() (float64, schema.ThermostatMode) {
	t.w.mu.Lock()
	defer t.w.mu.Unlock()
	return t.r.setpoint, t.r.mode
}

func (t *Thermostat) Temperature() float64 {
	t.w.answer(t.path)
	t.w.mu.Lock()
	defer t.w.mu.Unlock()
	return math.Round((t.r.temp+0.1*t.w.noise(t.path))*10) / 10
}

// Sensor is a simulated sensor of its room: occupancy counts the people
// in it; temperature, CO2 and illuminance measure the room with Gaussian
// noise (σ 0.1 °C, 15 ppm, 3 %).
type Sensor struct {
	w     *World
	r     *room
	path  string
	class schema.DeviceClass

	publish  func(context.Context, float64) error
	stuck    *float64
	last     float64
	lastAt   time.Time
	reported bool
}

func (s *Sensor) Sample() float64 {
	s.w.answer(s.path)
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	return s.sample()
}

func (s *Sensor) sample() float64 {
	if s.stuck != nil {
		return *s.stuck
	}
	r := s.r
	switch s.class {
	case schema.DeviceClass_occupancy:
		return float64(r.occupants)
	case schema.DeviceClass_temperature:
		return math.Round((r.temp+0.1*s.w.noise(s.path))*10) / 10
	case schema.DeviceClass_co2:
		return math.Round(math.Max(0, r.co2+15*s.w.noise(s.path)))
	case schema.DeviceClass_illuminance:
		return math.Round(math.Max(0, s.w.lux(r)*(1+0.03*s.w.noise(s.path))))
	}
	return 0
}

// due says whether a sample v is worth reporting.
func (s *Sensor) due(v float64) bool {
	if !s.reported || s.w.now.Sub(s.lastAt) >= Heartbeat {
		return true
	}
	d := math.Abs(v - s.last)
	switch s.class {
	case schema.DeviceClass_occupancy:
		return d > 0
	case schema.DeviceClass_temperature:
		return d >= bandTemp
	case schema.DeviceClass_co2:
		return d >= bandCO2
	case schema.DeviceClass_illuminance:
		return d >= math.Max(bandLuxAbs, bandLuxRel*s.last)
	}
	return false
}

func (s *Sensor) Watch(publish func(context.Context, float64) error) {
	s.w.mu.Lock()
	s.publish = publish
	s.w.mu.Unlock()
}

func (s *Sensor) fire(ctx context.Context, v float64) error {
	s.w.mu.Lock()
	f := s.publish
	s.w.mu.Unlock()
	if f == nil {
		return nil
	}
	return f(ctx, v)
}

// Lock is a simulated door lock without a door contact.
type Lock struct {
	w      *World
	path   string
	locked bool
}

func (l *Lock) SetLocked(locked bool) error {
	l.w.answer(l.path)
	l.w.mu.Lock()
	l.locked = locked
	l.w.mu.Unlock()
	return nil
}

func (l *Lock) DoorOpen() bool { return false }

// Locked reports whether the bolt is thrown.
func (l *Lock) Locked() bool {
	l.w.mu.Lock()
	defer l.w.mu.Unlock()
	return l.locked
}

// Display is a simulated text panel.
type Display struct {
	w    *World
	path string
	text string
}

func (d *Display) Show(text string) error {
	d.w.answer(d.path)
	d.w.mu.Lock()
	d.text = text
	d.w.mu.Unlock()
	return nil
}

// Text reports what the panel shows.
func (d *Display) Text() string {
	d.w.mu.Lock()
	defer d.w.mu.Unlock()
	return d.text
}

// Speaker is a simulated loudspeaker with the sounds "chime" and "alarm".
// A sound or an utterance plays until Stop (the model has no duration).
type Speaker struct {
	w       *World
	path    string
	volume  uint8
	playing bool
	said    []string
}

func (s *Speaker) Play(sound string) error {
	s.w.answer(s.path)
	if sound != "chime" && sound != "alarm" {
		return fmt.Errorf("not-exist: play: no sound %q", sound)
	}
	s.w.mu.Lock()
	s.playing = true
	s.w.mu.Unlock()
	return nil
}

func (s *Speaker) Say(text string) error {
	s.w.answer(s.path)
	s.w.mu.Lock()
	s.playing = true
	s.said = append(s.said, text)
	s.w.mu.Unlock()
	return nil
}

func (s *Speaker) SetVolume(v uint8) error {
	s.w.answer(s.path)
	s.w.mu.Lock()
	s.volume = v
	s.w.mu.Unlock()
	return nil
}

func (s *Speaker) Stop() error {
	s.w.answer(s.path)
	s.w.mu.Lock()
	s.playing = false
	s.w.mu.Unlock()
	return nil
}

func (s *Speaker) Playing() bool {
	s.w.answer(s.path)
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	return s.playing
}

// Said returns what the speaker has said.
func (s *Speaker) Said() []string {
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	return append([]string(nil), s.said...)
}

// Switch is a simulated one-button wall switch.
type Switch struct {
	w     *World
	path  string
	event func(context.Context, schema.SwitchEventKind, uint8) error
}

func (s *Switch) Buttons() int { return 1 }

func (s *Switch) Watch(event func(context.Context, schema.SwitchEventKind, uint8) error) {
	s.w.mu.Lock()
	s.event = event
	s.w.mu.Unlock()
}

func (s *Switch) fire(ctx context.Context, kind schema.SwitchEventKind, button uint8) error {
	s.w.mu.Lock()
	f := s.event
	s.w.mu.Unlock()
	if f == nil {
		return nil
	}
	return f(ctx, kind, button)
}

// Microphone is a simulated microphone: 16 kHz mono PCM.
type Microphone struct {
	w     *World
	frame func(context.Context, []byte) error
}

// Format is 16 kHz mono 16-bit PCM.
func (m *Microphone) Format() (schema.AudioEncoding, uint32, uint8) {
	return schema.AudioEncoding_pcmS16le, 16000, 1
}

func (m *Microphone) Watch(frame func(context.Context, []byte) error) {
	m.w.mu.Lock()
	m.frame = frame
	m.w.mu.Unlock()
}
