package kerneltest

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"net"
	"time"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/rpc"
	"capnproto.org/go/capnp/v3/rpc/transport"

	"github.com/osmose-os/osmose/internal/topology"
	"github.com/osmose-os/osmose/schema"
)

// Key returns the deterministic test key of a principal id: the ed25519
// key whose seed is SHA-256(seed || 0 || id). Never use it outside tests
// and benchmarks.
func Key(seed, id string) ed25519.PrivateKey {
	s := sha256.Sum256([]byte(seed + "\x00" + id))
	return ed25519.NewKeyFromSeed(s[:])
}

// RoomDevices are the devices of every room of Building, by last path
// segment, with their classes.
var RoomDevices = []struct {
	Name  string
	Class schema.DeviceClass
}{
	{"light-1", schema.DeviceClass_light},
	{"light-2", schema.DeviceClass_light},
	{"occupancy", schema.DeviceClass_occupancy},
	{"switch", schema.DeviceClass_switch},
	{"lock", schema.DeviceClass_doorLock},
	{"display", schema.DeviceClass_display},
	{"speaker", schema.DeviceClass_speaker},
	{"thermostat", schema.DeviceClass_thermostat},
	{"mic", schema.DeviceClass_microphone},
}

// Building returns a topology of one site "cam", building "cam/pem", floor
// "cam/pem/f1" and rooms "cam/pem/f1/r1".. with RoomDevices each, plus an
// operator "op", an app "scenes", an auditor "audit" and a person (by
// pseudonym) "p-ada". Every key is
// Key(seed, id).
func Building(seed string, rooms int) *topology.Topology {
	t := &topology.Topology{}
	t.Places = append(t.Places,
		topology.Place{Path: "cam", Kind: schema.PlaceKind_site},
		topology.Place{Path: "cam/pem", Kind: schema.PlaceKind_building},
		topology.Place{Path: "cam/pem/f1", Kind: schema.PlaceKind_floor})
	for r := 1; r <= rooms; r++ {
		room := fmt.Sprintf("cam/pem/f1/r%d", r)
		t.Places = append(t.Places, topology.Place{Path: room, Kind: schema.PlaceKind_room})
		for _, d := range RoomDevices {
			path := room + "/" + d.Name
			t.Devices = append(t.Devices, topology.Device{Path: path, Class: d.Class, Key: Key(seed, path).Public().(ed25519.PublicKey)})
		}
	}
	for _, p := range []struct {
		id   string
		kind schema.PrincipalKind
	}{{"op", schema.PrincipalKind_operator}, {"scenes", schema.PrincipalKind_app}, {"audit", schema.PrincipalKind_auditor}, {"p-ada", schema.PrincipalKind_person}} {
		t.Principals = append(t.Principals, topology.Principal{ID: p.id, Kind: p.kind, Key: Key(seed, p.id).Public().(ed25519.PublicKey)})
	}
	t.Index()
	return t
}

// Policy is a Cedar policy for Building: a device program may use the
// lights of its own room dimmed to 0..80 %, and every other device of its
// room; operators may use everything; the app gets lights by delegation;
// a person the lights of a room while present in it.
const Policy = `// Device programs: their own room.
@range("level=0..80")
permit (principal is Device, action in Action::"Light", resource is Device)
when { principal.place == resource.place };

permit (principal is Device, action in [Action::"Sensor", Action::"Switch", Action::"DoorLock",
        Action::"Display", Action::"Speaker", Action::"Thermostat", Action::"Microphone"], resource is Device)
when { principal.place == resource.place };

permit (principal is Operator, action, resource);

// People: the lights of a room they are in, while they are there.
@presence("room")
permit (principal is Person, action in Action::"Light", resource is Device)
when { principal in resource.place };

permit (principal is App, action in Action::"Light", resource)
when { context.op == "delegate" };
`

// Fakes is one fake driver per device of a topology.
type Fakes struct {
	Lights      map[string]*Light
	Thermostats map[string]*Thermostat
	Sensors     map[string]*Sensor
	Locks       map[string]*DoorLock
	Displays    map[string]*Display
	Speakers    map[string]*Speaker
	Mics        map[string]*Microphone
	Switches    map[string]*Switch
	clients     map[string]func() capnp.Client
}

// NewFakes builds a fake for every device of t whose class has an
// interface.
func NewFakes(t *topology.Topology, now func() time.Time) *Fakes {
	f := &Fakes{
		Lights: map[string]*Light{}, Thermostats: map[string]*Thermostat{}, Sensors: map[string]*Sensor{},
		Locks: map[string]*DoorLock{}, Displays: map[string]*Display{}, Speakers: map[string]*Speaker{},
		Mics: map[string]*Microphone{}, Switches: map[string]*Switch{}, clients: map[string]func() capnp.Client{},
	}
	for _, d := range t.Devices {
		p := d.Path
		switch d.Class {
		case schema.DeviceClass_light:
			x := NewLight(p, now)
			f.Lights[p], f.clients[p] = x, x.Client
		case schema.DeviceClass_thermostat:
			x := NewThermostat(now)
			f.Thermostats[p], f.clients[p] = x, x.Client
		case schema.DeviceClass_occupancy, schema.DeviceClass_temperature, schema.DeviceClass_co2, schema.DeviceClass_illuminance:
			kind, unit := schema.ReadingKind_occupancy, "people"
			switch d.Class {
			case schema.DeviceClass_temperature:
				kind, unit = schema.ReadingKind_temperature, "°C"
			case schema.DeviceClass_co2:
				kind, unit = schema.ReadingKind_co2, "ppm"
			case schema.DeviceClass_illuminance:
				kind, unit = schema.ReadingKind_illuminance, "lx"
			}
			x := NewSensor(p, kind, unit, now)
			f.Sensors[p], f.clients[p] = x, x.Client
		case schema.DeviceClass_doorLock:
			x := NewDoorLock(now)
			f.Locks[p], f.clients[p] = x, x.Client
		case schema.DeviceClass_display:
			x := NewDisplay()
			f.Displays[p], f.clients[p] = x, x.Client
		case schema.DeviceClass_speaker:
			x := NewSpeaker()
			f.Speakers[p], f.clients[p] = x, x.Client
		case schema.DeviceClass_microphone:
			x := NewMicrophone()
			f.Mics[p], f.clients[p] = x, x.Client
		case schema.DeviceClass_switch:
			x := NewSwitch(p, now)
			f.Switches[p], f.clients[p] = x, x.Client
		}
	}
	return f
}

// Drivers returns a new client of every fake, by device path, for
// kernel.Config.Drivers (which takes ownership).
func (f *Fakes) Drivers() map[string]capnp.Client {
	out := make(map[string]capnp.Client, len(f.clients))
	for p, c := range f.clients {
		out[p] = c()
	}
	return out
}

// Client is one device program's connection to a kernel.
type Client struct {
	Conn    *rpc.Conn
	Gateway schema.Gateway
}

// Dial connects to a kernel. The caller calls Close.
func Dial(ctx context.Context, network, addr string) (*Client, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	conn := rpc.NewConn(transport.NewStream(nc), nil)
	return &Client{Conn: conn, Gateway: schema.Gateway(conn.Bootstrap(ctx))}, nil
}

// Close releases the gateway and closes the connection.
func (c *Client) Close() error {
	c.Gateway.Release()
	return c.Conn.Close()
}

// Login logs in as id with key on a kernel whose id is kernelID: challenge,
// sign, login. The caller releases the returned session.
func Login(ctx context.Context, gw schema.Gateway, kernelID, id string, key ed25519.PrivateKey) (schema.Session, error) {
	cf, rel := gw.Challenge(ctx, func(p schema.Gateway_challenge_Params) error { return p.SetPrincipal(id) })
	defer rel()
	cr, err := cf.Struct()
	if err != nil {
		return schema.Session{}, fmt.Errorf("challenge: %w", err)
	}
	kid, err := cr.KernelId()
	if err != nil {
		return schema.Session{}, err
	}
	if kid != kernelID {
		return schema.Session{}, fmt.Errorf("kernel id %q, want %q", kid, kernelID)
	}
	nonce, err := cr.Nonce()
	if err != nil {
		return schema.Session{}, err
	}
	sig := ed25519.Sign(key, schema.LoginMessage(kernelID, id, nonce))
	lf, rel2 := gw.Login(ctx, func(p schema.Gateway_login_Params) error {
		if err := p.SetPrincipal(id); err != nil {
			return err
		}
		if err := p.SetNonce(nonce); err != nil {
			return err
		}
		return p.SetSignature(sig)
	})
	defer rel2()
	lr, err := lf.Struct()
	if err != nil {
		return schema.Session{}, fmt.Errorf("login: %w", err)
	}
	return lr.Session().AddRef(), nil
}

// Open opens the capabilities at path of the given classes. The caller
// releases each returned client.
func Open(ctx context.Context, s schema.Session, path string, classes ...schema.DeviceClass) ([]capnp.Client, []string, error) {
	f, rel := s.Open(ctx, func(p schema.Session_open_Params) error {
		if err := p.SetPath(path); err != nil {
			return err
		}
		l, err := p.NewClasses(int32(len(classes)))
		if err != nil {
			return err
		}
		for i, c := range classes {
			l.Set(i, c)
		}
		return nil
	})
	defer rel()
	r, err := f.Struct()
	if err != nil {
		return nil, nil, err
	}
	hl, err := r.Caps()
	if err != nil {
		return nil, nil, err
	}
	cs := make([]capnp.Client, hl.Len())
	ids := make([]string, hl.Len())
	for i := range cs {
		cs[i] = hl.At(i).Cap().AddRef()
		g, err := hl.At(i).Grant()
		if err != nil {
			return nil, nil, err
		}
		ids[i], _ = g.Id()
	}
	return cs, ids, nil
}

// ReadBody returns the message of a ledger body: the canonical Cap'n Proto
// bytes of a params, results or grant struct (one segment, no framing).
func ReadBody(b []byte) (*capnp.Message, error) {
	msg, _, err := capnp.NewMessage(capnp.SingleSegment(b))
	return msg, err
}
