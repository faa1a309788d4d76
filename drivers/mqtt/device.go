package mqtt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/osmose-os/osmose/drivers"
	"github.com/osmose-os/osmose/schema"
)

// availability is what a device last said on its availability topic.
type availability int

const (
	availUnknown availability = iota
	availOnline
	availOffline
)

// match decides whether a state message (msg) and the device's state after
// merging it confirm a command: done, and the error the device answered
// with ("" for none).
type match func(msg, state map[string]any) (done bool, deviceErr string)

// waiter is a command waiting for its confirmation.
type waiter struct {
	what  string
	match match
	done  chan error // buffered; receives one result
}

// event is one delivery queued for the driver.
type event struct {
	what    string
	deliver func(ctx context.Context) error
}

// device is what every class's hardware shares: its topics, its merged
// state, the command waiting for confirmation and the queue of events.
type device struct {
	b          *Bridge
	path, name string
	class      schema.DeviceClass
	stateTopic string
	setTopic   string
	hw         any                                     // the class's hardware value
	onState    func(msg map[string]any, retained bool) // the class's reaction to a state message
	onAudio    func(frame []byte)                      // microphones: a frame arrived

	cmd sync.Mutex // held by the command in flight

	mu     sync.Mutex
	state  map[string]any
	avail  availability
	waiter *waiter

	qmu     sync.Mutex
	queue   []event
	running bool
}

// newDevice returns the device and hardware of d, or nil for a class
// without a driver.
func newDevice(b *Bridge, d drivers.Device, name string, buttons []string) *device {
	dev := &device{
		b: b, path: d.Path, name: name, class: d.Class,
		stateTopic: b.cfg.BaseTopic + "/" + name,
		setTopic:   b.cfg.BaseTopic + "/" + name + "/set",
		state:      map[string]any{},
	}
	switch d.Class {
	case schema.DeviceClass_light:
		dev.hw = &light{dev}
	case schema.DeviceClass_thermostat:
		dev.hw = &thermostat{dev}
	case schema.DeviceClass_occupancy, schema.DeviceClass_temperature, schema.DeviceClass_co2, schema.DeviceClass_illuminance:
		s := newSensor(dev)
		dev.hw, dev.onState = s, s.onState
	case schema.DeviceClass_doorLock:
		dev.hw = &lock{dev}
	case schema.DeviceClass_display:
		dev.hw = &display{dev}
	case schema.DeviceClass_speaker:
		dev.hw = &speaker{dev}
	case schema.DeviceClass_switch:
		s := &button{device: dev, names: buttons}
		dev.hw, dev.onState = s, s.onState
	case schema.DeviceClass_microphone:
		m := &microphone{device: dev}
		dev.hw, dev.onAudio = m, m.onAudio
	default:
		return nil
	}
	return dev
}

// id names the device in errors and logs: its path, and its friendly name
// where that differs.
func (d *device) id() string {
	if d.name == d.path {
		return d.path
	}
	return fmt.Sprintf("%s (%q)", d.path, d.name)
}

// clip shortens a payload for a log line.
func clip(p []byte) string {
	if len(p) > 200 {
		return string(p[:200]) + "..."
	}
	return string(p)
}

// receiveState merges a state message into the state, confirms the
// waiting command if it now holds, and lets the class react.
func (d *device) receiveState(payload []byte, retained bool) {
	var msg map[string]any
	err := json.Unmarshal(payload, &msg)
	if err == nil && msg == nil {
		err = errors.New("not a JSON object")
	}
	if err != nil {
		d.b.log.Warn("mqtt: malformed state message ignored", "device", d.id(), "topic", d.stateTopic, "err", err, "payload", clip(payload))
		return
	}
	d.mu.Lock()
	for k, v := range msg {
		if k != "transaction" && k != "error" {
			d.state[k] = v
		}
	}
	if w := d.waiter; w != nil {
		if done, devErr := w.match(msg, d.state); done {
			d.waiter = nil
			w.done <- d.deviceError(w.what, devErr)
		}
	}
	d.mu.Unlock()
	if d.onState != nil {
		d.onState(msg, retained)
	}
}

// deviceError is the error of a command the device answered with msg; nil
// for "". An error naming its kind the way the schema does ("invalid: ",
// "not-exist: ") passes unchanged.
func (d *device) deviceError(what, msg string) error {
	if msg == "" {
		return nil
	}
	if strings.HasPrefix(msg, "invalid: ") || strings.HasPrefix(msg, "not-exist: ") {
		return errors.New(msg)
	}
	return fmt.Errorf("mqtt: device %s refused %s: %s", d.id(), what, msg)
}

// receiveAvailability records an availability message; going offline
// fails the command waiting.
func (d *device) receiveAvailability(payload []byte) {
	s := strings.TrimSpace(string(payload))
	if strings.HasPrefix(s, "{") {
		var m struct {
			State string `json:"state"`
		}
		if err := json.Unmarshal(payload, &m); err != nil {
			d.b.log.Warn("mqtt: malformed availability message ignored", "device", d.id(), "topic", d.stateTopic+"/availability", "err", err, "payload", clip(payload))
			return
		}
		s = m.State
	}
	var a availability
	switch s {
	case "online":
		a = availOnline
	case "offline":
		a = availOffline
	default:
		d.b.log.Warn("mqtt: malformed availability message ignored", "device", d.id(), "topic", d.stateTopic+"/availability", "payload", clip(payload))
		return
	}
	d.mu.Lock()
	changed := d.avail != a
	d.avail = a
	if w := d.waiter; w != nil && a == availOffline {
		d.waiter = nil
		w.done <- d.offline(w.what)
	}
	d.mu.Unlock()
	if changed {
		d.b.log.Info("mqtt: device availability", "device", d.id(), "availability", s)
	}
}

// connectionLost fails the command waiting: its confirmation may have
// been lost with the connection.
func (d *device) connectionLost() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if w := d.waiter; w != nil {
		d.waiter = nil
		w.done <- fmt.Errorf("mqtt: device %s: %s: broker %s: connection lost before the device confirmed: %w", d.id(), w.what, d.b.broker, ErrNotConnected)
	}
}

func (d *device) offline(what string) error {
	return fmt.Errorf("mqtt: device %s: %s: %w (%s/availability)", d.id(), what, ErrOffline, d.stateTopic)
}

// receiveAudio hands a frame to a microphone.
func (d *device) receiveAudio(payload []byte, retained bool) {
	if retained {
		d.b.log.Warn("mqtt: retained audio frame ignored", "device", d.id(), "topic", d.stateTopic+"/audio")
		return
	}
	if d.onAudio != nil {
		d.onAudio(append([]byte(nil), payload...))
	}
}

// command sends cmd (what names it in errors) to the device's set topic
// and waits until a state message satisfies m, the device goes offline, or
// the command timeout passes.
func (d *device) command(what string, cmd map[string]any, m match) error {
	d.cmd.Lock()
	defer d.cmd.Unlock()
	body, err := json.Marshal(cmd)
	if err != nil {
		return fmt.Errorf("invalid: %s: %w", what, err)
	}
	w := &waiter{what: what, match: m, done: make(chan error, 1)}
	d.mu.Lock()
	if d.avail == availOffline {
		d.mu.Unlock()
		return d.offline(what)
	}
	d.waiter = w
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		if d.waiter == w {
			d.waiter = nil
		}
		d.mu.Unlock()
	}()
	timeout := d.b.cfg.CommandTimeout
	ctx, cancel := context.WithTimeout(d.b.ctx, timeout)
	defer cancel()
	if err := d.b.publish(ctx, d.setTopic, body); err != nil {
		return fmt.Errorf("mqtt: device %s: %s: %w", d.id(), what, err)
	}
	select {
	case err := <-w.done:
		return err
	case <-ctx.Done():
		if d.b.ctx.Err() != nil {
			return fmt.Errorf("mqtt: device %s: %s: %w", d.id(), what, ErrClosed)
		}
		return fmt.Errorf("mqtt: device %s: %s: %w: sent %s to %s, no confirming state on %s within %v",
			d.id(), what, ErrUnconfirmed, body, d.setTopic, d.stateTopic, timeout)
	}
}

// txCommand sends cmd with a fresh transaction and waits for the state
// message echoing it.
func (d *device) txCommand(what string, cmd map[string]any) error {
	tx := strconv.FormatUint(d.b.tx.Add(1), 10)
	cmd["transaction"] = tx
	return d.command(what, cmd, func(msg, _ map[string]any) (bool, string) {
		if t, _ := msg["transaction"].(string); t != tx {
			return false, ""
		}
		e, ok := msg["error"].(string)
		if !ok && msg["error"] != nil {
			e = fmt.Sprint(msg["error"])
		}
		return true, e
	})
}

// field returns the state's field k.
func (d *device) field(k string) any {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.state[k]
}

// enqueue queues an event for the driver; a goroutine drains the queue
// while it is not empty.
func (d *device) enqueue(what string, deliver func(ctx context.Context) error) {
	d.qmu.Lock()
	if len(d.queue) >= queueLimit {
		d.qmu.Unlock()
		d.b.log.Warn("mqtt: event queue full; event dropped", "device", d.id(), "event", what, "limit", queueLimit)
		return
	}
	d.queue = append(d.queue, event{what: what, deliver: deliver})
	if d.running {
		d.qmu.Unlock()
		return
	}
	d.running = true
	d.qmu.Unlock()
	if !d.b.spawn(d.drain) {
		d.qmu.Lock()
		d.running, d.queue = false, nil
		d.qmu.Unlock()
	}
}

// drain delivers the queued events in order until the queue is empty or
// the bridge closes.
func (d *device) drain() {
	for {
		d.qmu.Lock()
		if len(d.queue) == 0 || d.b.ctx.Err() != nil {
			d.running, d.queue = false, nil
			d.qmu.Unlock()
			return
		}
		e := d.queue[0]
		d.queue[0] = event{}
		d.queue = d.queue[1:]
		d.qmu.Unlock()
		if err := e.deliver(d.b.ctx); err != nil && d.b.ctx.Err() == nil {
			d.b.log.Warn("mqtt: delivering an event to the driver failed", "device", d.id(), "event", e.what, "err", err)
		}
	}
}

// number reads the number field k of a message: ok false when absent; a
// field of another type is logged and treated as absent.
func (d *device) number(msg map[string]any, k string) (float64, bool) {
	v, present := msg[k]
	if !present {
		return 0, false
	}
	f, ok := v.(float64)
	if !ok {
		d.wrongType(k, v, "a number")
	}
	return f, ok
}

func (d *device) wrongType(k string, v any, want string) {
	d.b.log.Warn("mqtt: state field of the wrong type ignored", "device", d.id(), "topic", d.stateTopic, "field", k, "value", fmt.Sprint(v), "want", want)
}
