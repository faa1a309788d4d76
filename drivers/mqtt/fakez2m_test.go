package mqtt_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/osmose-os/osmose/drivers"
	"github.com/osmose-os/osmose/drivers/mqtt"
	"github.com/osmose-os/osmose/schema"
)

// fakeZ2M is TEST SUPPORT, not a backend: a stand-in for Zigbee2MQTT and
// the devices behind it, so that the real bridge has something to talk
// to on a real broker. It is a plain MQTT client that keeps each device's
// state, answers commands on B/N/set with the device's new state the way
// Zigbee2MQTT does (and the transaction classes with the echo the package
// doc describes), and publishes readings, actions and audio frames when
// the test asks.
type fakeZ2M struct {
	t    *testing.T
	base string
	cli  *paho.Client
	out  chan *paho.Publish
	done chan struct{}
	wg   sync.WaitGroup

	closeOnce sync.Once

	mu   sync.Mutex
	devs map[string]*fakeDevice // by friendly name
	cmds chan fakeCommand       // every command received, if not nil
}

// fakeDevice is one device of the fake.
type fakeDevice struct {
	name   string
	class  schema.DeviceClass
	silent bool // receives commands, never answers
	fixed  bool // a light without brightness (non-dimmable)
	state  map[string]any
	sounds []string
}

// fakeCommand is a command the fake received.
type fakeCommand struct {
	name string
	cmd  map[string]any
}

// newFakeZ2M connects a fake for devices (by friendly name) under base and
// publishes their initial states, retained, as Zigbee2MQTT does with
// retain enabled.
func newFakeZ2M(t *testing.T, addr, base string, devices map[string]schema.DeviceClass) *fakeZ2M {
	t.Helper()
	id := "fake-z2m-" + base
	f := &fakeZ2M{t: t, base: base, out: make(chan *paho.Publish, 256), done: make(chan struct{}), devs: map[string]*fakeDevice{}}
	for name, class := range devices {
		d := &fakeDevice{name: name, class: class, state: map[string]any{}}
		switch class {
		case schema.DeviceClass_light:
			d.state = map[string]any{"state": "OFF", "brightness": 254.0, "linkquality": 120.0}
		case schema.DeviceClass_thermostat:
			d.state = map[string]any{"local_temperature": 20.5, "occupied_heating_setpoint": 18.0, "system_mode": "off"}
		case schema.DeviceClass_doorLock:
			d.state = map[string]any{"state": "UNLOCK", "lock_state": "unlocked", "contact": true}
		case schema.DeviceClass_speaker:
			d.state = map[string]any{"volume": 30.0, "playing": false}
			d.sounds = []string{"chime", "alarm"}
		case schema.DeviceClass_display:
			d.state = map[string]any{"text": ""}
		case schema.DeviceClass_microphone:
			d.state = map[string]any{"audio": map[string]any{"encoding": "opus", "sample_rate": 48000.0, "channels": 2.0}}
		}
		f.devs[name] = d
	}
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("fake zigbee2mqtt: %v", err)
	}
	f.cli = paho.NewClient(paho.ClientConfig{
		ClientID:          id,
		Conn:              conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){f.receive},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ca, err := f.cli.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30})
	if err != nil || ca.ReasonCode != 0 {
		t.Fatalf("fake zigbee2mqtt: connect: %v %v", err, ca)
	}
	if _, err := f.cli.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: base + "/#", QoS: 1, NoLocal: true}}}); err != nil {
		t.Fatalf("fake zigbee2mqtt: subscribe: %v", err)
	}
	f.wg.Add(1)
	go f.publisher()
	t.Cleanup(f.close)
	for name, d := range f.devs {
		f.publish(base+"/"+name+"/availability", []byte(`{"state":"online"}`), true)
		if len(d.state) > 0 {
			f.publishJSON(base+"/"+name, d.state, true)
		}
	}
	return f
}

// kick connects to the broker as clientID, which pushes the client of
// that id off the broker; leave disconnects the kicker. Call leave only at
// the end of the test: in mochi-mqtt the cleanup after a client of one id
// leaves can remove another client of that id that has connected
// meanwhile.
func kick(t *testing.T, addr, clientID string) (leave func()) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cli := paho.NewClient(paho.ClientConfig{ClientID: clientID, Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if ca, err := cli.Connect(ctx, &paho.Connect{ClientID: clientID, CleanStart: true, KeepAlive: 30}); err != nil || ca.ReasonCode != 0 {
		t.Fatalf("kick %s: connect: %v %v", clientID, err, ca)
	}
	return func() { cli.Disconnect(&paho.Disconnect{ReasonCode: 0}) }
}

// publisher sends the answers to commands, in order, off paho's goroutine
// (which must not wait for acknowledgements).
func (f *fakeZ2M) publisher() {
	defer f.wg.Done()
	for {
		select {
		case p := <-f.out:
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if _, err := f.cli.Publish(ctx, p); err != nil {
				f.t.Errorf("fake zigbee2mqtt: publish %s: %v", p.Topic, err)
			}
			cancel()
		case <-f.done:
			return
		}
	}
}

// close disconnects; a second call does nothing.
func (f *fakeZ2M) close() {
	f.closeOnce.Do(func() {
		close(f.done)
		f.wg.Wait()
		f.cli.Disconnect(&paho.Disconnect{ReasonCode: 0})
	})
}

// publish sends a message now and returns once the broker has passed it
// on to the subscribers it has: mochi-mqtt acknowledges a message before
// it passes it on, and a bridge subscribing in between would receive a
// retained message as a live one, so publish follows each message with a
// second one to a topic nobody reads, whose acknowledgement comes after
// the first message has gone out (the broker handles a connection's
// messages in order).
func (f *fakeZ2M) publish(topic string, payload []byte, retain bool) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, p := range []*paho.Publish{
		{Topic: topic, QoS: 1, Retain: retain, Payload: payload},
		{Topic: "fake-z2m-flush/" + f.base, QoS: 1},
	} {
		if _, err := f.cli.Publish(ctx, p); err != nil {
			f.t.Fatalf("fake zigbee2mqtt: publish %s: %v", p.Topic, err)
		}
	}
}

func (f *fakeZ2M) publishJSON(topic string, v any, retain bool) {
	f.t.Helper()
	p, err := json.Marshal(v)
	if err != nil {
		f.t.Fatal(err)
	}
	f.publish(topic, p, retain)
}

// receive handles a command on B/N/set.
func (f *fakeZ2M) receive(pr paho.PublishReceived) (bool, error) {
	topic := pr.Packet.Topic
	if !strings.HasPrefix(topic, f.base+"/") || !strings.HasSuffix(topic, "/set") {
		return false, nil
	}
	name := strings.TrimSuffix(strings.TrimPrefix(topic, f.base+"/"), "/set")
	var cmd map[string]any
	if err := json.Unmarshal(pr.Packet.Payload, &cmd); err != nil {
		f.t.Errorf("fake zigbee2mqtt: %s: command is not JSON: %q", topic, pr.Packet.Payload)
		return true, nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cmds != nil {
		f.cmds <- fakeCommand{name: name, cmd: cmd}
	}
	d, ok := f.devs[name]
	if !ok || d.silent {
		return true, nil
	}
	reply := d.state
	switch d.class {
	case schema.DeviceClass_light:
		if s, ok := cmd["state"].(string); ok {
			d.state["state"] = strings.ToUpper(s)
		}
		if b, ok := cmd["brightness"].(float64); ok && !d.fixed {
			d.state["brightness"] = b
		}
	case schema.DeviceClass_thermostat:
		for _, k := range []string{"occupied_heating_setpoint", "system_mode"} {
			if v, ok := cmd[k]; ok {
				d.state[k] = v
			}
		}
	case schema.DeviceClass_doorLock:
		if s, ok := cmd["state"].(string); ok {
			d.state["state"] = s
			d.state["lock_state"] = map[string]string{"LOCK": "locked", "UNLOCK": "unlocked"}[s]
		}
	case schema.DeviceClass_display:
		d.state["text"] = cmd["text"]
	case schema.DeviceClass_speaker:
		if s, ok := cmd["play"].(string); ok {
			if !slices.Contains(d.sounds, s) {
				reply = map[string]any{"error": fmt.Sprintf("not-exist: play: no sound %q", s)}
				break
			}
			d.state["playing"] = true
		}
		if _, ok := cmd["say"]; ok {
			d.state["playing"] = true
		}
		if v, ok := cmd["volume"]; ok {
			d.state["volume"] = v
		}
		if _, ok := cmd["stop"]; ok {
			d.state["playing"] = false
		}
	default:
		return true, nil
	}
	msg := map[string]any{}
	for k, v := range reply {
		msg[k] = v
	}
	if tx, ok := cmd["transaction"]; ok {
		msg["transaction"] = tx
	}
	p, _ := json.Marshal(msg)
	select {
	case f.out <- &paho.Publish{Topic: f.base + "/" + name, QoS: 1, Payload: p}:
	case <-f.done:
	}
	return true, nil
}

// device returns a copy of a device's state.
func (f *fakeZ2M) device(name string) map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]any{}
	for k, v := range f.devs[name].state {
		out[k] = v
	}
	return out
}

// setSilent makes a device ignore commands (or answer again).
func (f *fakeZ2M) setSilent(name string, silent bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.devs[name].silent = silent
}

// setDimmable makes a light report brightness or not.
func (f *fakeZ2M) setDimmable(name string, dimmable bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.devs[name]
	d.fixed = !dimmable
	if d.fixed {
		delete(d.state, "brightness")
	}
}

// watchCommands returns a channel of the commands the fake receives from
// now on.
func (f *fakeZ2M) watchCommands() <-chan fakeCommand {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cmds = make(chan fakeCommand, 64)
	return f.cmds
}

// measure publishes a sensor reading the way Zigbee2MQTT does.
func (f *fakeZ2M) measure(name string, class schema.DeviceClass, v float64) {
	f.t.Helper()
	msg := map[string]any{"linkquality": 99, "battery": 87}
	switch class {
	case schema.DeviceClass_occupancy:
		if v == 0 || v == 1 {
			msg["occupancy"] = v == 1 // a presence sensor
		} else {
			msg["occupancy"] = v // a people counter
		}
	case schema.DeviceClass_temperature:
		msg["temperature"] = v
	case schema.DeviceClass_co2:
		msg["co2"] = v
	case schema.DeviceClass_illuminance:
		// Zigbee2MQTT 1.x sends the raw value beside the lux.
		msg["illuminance"] = math.Round(10000*math.Log10(v) + 1)
		msg["illuminance_lux"] = v
	default:
		f.t.Fatalf("fake zigbee2mqtt: %s is no sensor", name)
	}
	f.publishJSON(f.base+"/"+name, msg, false)
}

// press publishes a switch action for one button event.
func (f *fakeZ2M) press(name string, kind schema.SwitchEventKind, buttonName string) {
	f.t.Helper()
	word := map[schema.SwitchEventKind]string{
		schema.SwitchEventKind_press:     "press",
		schema.SwitchEventKind_release:   "release",
		schema.SwitchEventKind_longPress: "hold",
	}[kind]
	action := word
	if buttonName != "" {
		action = buttonName + "_" + word
	}
	f.publishJSON(f.base+"/"+name, map[string]any{"action": action, "linkquality": 80}, false)
}

// hear publishes one audio frame.
func (f *fakeZ2M) hear(name string, frame []byte) {
	f.t.Helper()
	f.publish(f.base+"/"+name+"/audio", frame, false)
}

// fakeDevices returns the fake's device list for drivers devices, named
// by mqtt.FriendlyName.
func fakeDevices(ds []drivers.Device) map[string]schema.DeviceClass {
	out := map[string]schema.DeviceClass{}
	for _, d := range ds {
		out[mqtt.FriendlyName(d.Path)] = d.Class
	}
	return out
}
