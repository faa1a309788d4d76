package kernel

import (
	"strconv"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/server"

	"github.com/osmose-os/osmose/caps"
	"github.com/osmose-os/osmose/schema"
)

// iface is what the kernel knows of one Cap'n Proto interface: its id and
// name, its methods by ordinal, and for range caveats the numeric
// arguments of each method.
type iface struct {
	id      uint64
	name    string // as in the schema: "Light"
	methods []capnp.Method
	args    map[uint16]func(capnp.Struct) []caps.Arg
}

func (f *iface) method(id uint16) (capnp.Method, bool) {
	if int(id) >= len(f.methods) {
		return capnp.Method{}, false
	}
	return f.methods[id], true
}

// catalog is the set of interfaces the kernel serves, built once from the
// generated code: device interfaces (which grants are for) and the
// callback interfaces (listeners, sinks, subscriptions) that only ever
// appear inside params and results.
type catalog struct {
	byID    map[uint64]*iface
	byClass map[schema.DeviceClass]*iface
}

// methodsOf lists an interface's methods from its generated method table;
// the server argument is never called.
func methodsOf(name string, ms []server.Method) *iface {
	f := &iface{id: ms[0].InterfaceID, name: name, methods: make([]capnp.Method, len(ms))}
	for _, m := range ms {
		mm := m.Method
		mm.InterfaceName = name
		f.methods[m.MethodID] = mm
	}
	return f
}

func newCatalog() *catalog {
	light := methodsOf("Light", schema.Light_Methods(nil, nil))
	light.args = map[uint16]func(capnp.Struct) []caps.Arg{
		1: func(s capnp.Struct) []caps.Arg {
			return []caps.Arg{{Name: "level", Value: float64(schema.Light_setLevel_Params(s).Level())}}
		},
	}
	thermo := methodsOf("Thermostat", schema.Thermostat_Methods(nil, nil))
	thermo.args = map[uint16]func(capnp.Struct) []caps.Arg{
		0: func(s capnp.Struct) []caps.Arg {
			return []caps.Arg{{Name: "celsius", Value: schema.Thermostat_setSetpoint_Params(s).Celsius()}}
		},
	}
	sensor := methodsOf("Sensor", schema.Sensor_Methods(nil, nil))
	lock := methodsOf("DoorLock", schema.DoorLock_Methods(nil, nil))
	lock.args = map[uint16]func(capnp.Struct) []caps.Arg{
		2: func(s capnp.Struct) []caps.Arg {
			return []caps.Arg{{Name: "seconds", Value: float64(schema.DoorLock_unlockFor_Params(s).Seconds())}}
		},
	}
	display := methodsOf("Display", schema.Display_Methods(nil, nil))
	speaker := methodsOf("Speaker", schema.Speaker_Methods(nil, nil))
	speaker.args = map[uint16]func(capnp.Struct) []caps.Arg{
		2: func(s capnp.Struct) []caps.Arg {
			return []caps.Arg{{Name: "volume", Value: float64(schema.Speaker_setVolume_Params(s).Volume())}}
		},
	}
	mic := methodsOf("Microphone", schema.Microphone_Methods(nil, nil))
	sw := methodsOf("Switch", schema.Switch_Methods(nil, nil))
	c := &catalog{
		byID: map[uint64]*iface{},
		byClass: map[schema.DeviceClass]*iface{
			schema.DeviceClass_light:       light,
			schema.DeviceClass_thermostat:  thermo,
			schema.DeviceClass_occupancy:   sensor,
			schema.DeviceClass_temperature: sensor,
			schema.DeviceClass_co2:         sensor,
			schema.DeviceClass_illuminance: sensor,
			schema.DeviceClass_doorLock:    lock,
			schema.DeviceClass_display:     display,
			schema.DeviceClass_speaker:     speaker,
			schema.DeviceClass_microphone:  mic,
			schema.DeviceClass_switch:      sw,
		},
	}
	for _, f := range []*iface{light, thermo, sensor, lock, display, speaker, mic, sw,
		methodsOf("Subscription", schema.Subscription_Methods(nil, nil)),
		methodsOf("ReadingListener", schema.ReadingListener_Methods(nil, nil)),
		methodsOf("SwitchListener", schema.SwitchListener_Methods(nil, nil)),
		methodsOf("AudioSink", schema.AudioSink_Methods(nil, nil)),
	} {
		c.byID[f.id] = f
	}
	return c
}

// capsInterfaces is the catalog of device interfaces for caps.Config.
func (c *catalog) capsInterfaces() []caps.Interface {
	seen := map[uint64]bool{}
	var out []caps.Interface
	for _, cl := range []schema.DeviceClass{
		schema.DeviceClass_light, schema.DeviceClass_thermostat, schema.DeviceClass_occupancy,
		schema.DeviceClass_doorLock, schema.DeviceClass_display, schema.DeviceClass_speaker,
		schema.DeviceClass_microphone, schema.DeviceClass_switch,
	} {
		f := c.byClass[cl]
		if seen[f.id] {
			continue
		}
		seen[f.id] = true
		ci := caps.Interface{ID: f.id, Name: f.name}
		for _, m := range f.methods {
			ci.Methods = append(ci.Methods, caps.Method{ID: m.MethodID, Name: m.MethodName})
		}
		out = append(out, ci)
	}
	return out
}

// methodName names a method for spans and errors, by the catalog when it
// knows the interface.
func (c *catalog) methodName(m capnp.Method) (ifaceName, method string) {
	if f := c.byID[m.InterfaceID]; f != nil {
		if mm, ok := f.method(m.MethodID); ok {
			return f.name, mm.MethodName
		}
		return f.name, "#" + strconv.Itoa(int(m.MethodID))
	}
	return "@" + strconv.FormatUint(m.InterfaceID, 16), "#" + strconv.Itoa(int(m.MethodID))
}
