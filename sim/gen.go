package sim

import (
	"bytes"
	"fmt"

	"github.com/osmose-os/osmose/internal/topology"
	"github.com/osmose-os/osmose/schema"
)

// GenConfig says what building Generate makes.
type GenConfig struct {
	// Floors and Rooms (per floor) size the building; both at least 1.
	Floors, Rooms int
	// DevicesPerRoom takes the first devices of RoomKit (1..len(RoomKit));
	// beyond the kit, extra lights are added (light-3, light-4, ...).
	DevicesPerRoom int
	// People is the number of occupants to declare as principals of kind
	// person, "p-0001".. (PersonID), so the door badges can report them
	// and they can log in. 0..9999.
	People int
	// Seed derives every key (see Key).
	Seed int64
	// Site and Building name the two outer places. Default "campus", "hq".
	Site, Building string
}

// RoomKit is the devices of a generated room, most useful first: a room
// with DevicesPerRoom = n gets the first n.
var RoomKit = []struct {
	Name  string
	Class schema.DeviceClass
}{
	{"light-1", schema.DeviceClass_light},
	{"occupancy", schema.DeviceClass_occupancy},
	{"switch", schema.DeviceClass_switch},
	{"thermostat", schema.DeviceClass_thermostat},
	{"temperature", schema.DeviceClass_temperature},
	{"co2", schema.DeviceClass_co2},
	{"illuminance", schema.DeviceClass_illuminance},
	{"display", schema.DeviceClass_display},
	{"light-2", schema.DeviceClass_light},
	{"lock", schema.DeviceClass_doorLock},
	{"speaker", schema.DeviceClass_speaker},
	{"mic", schema.DeviceClass_microphone},
}

// Principals of a generated building besides its devices and people.
const (
	OperatorID = "op"
	AuditorID  = "audit"
	// BadgesID is the door-badge bridge: the program that reports people
	// entering and leaving rooms (Operator.presence). It is of kind
	// operator because the schema gives Operator.presence to operators
	// only (Session.operator) and has no narrower kind for a presence
	// bridge; Policy keeps it from every device.
	BadgesID = "badges"
)

// PersonID is the pseudonym of the i-th simulated person (1-based),
// "p-0001": the id the world's people go by, the principal id a generated
// building declares, and the person the kernel records presence for.
func PersonID(i int) string { return fmt.Sprintf("p-%04d", i) }

// Generate returns a building: site ⊃ building ⊃ floors f1.. ⊃ rooms
// ("campus/hq/f2/r203" is room 3 of floor 2), each with DevicesPerRoom
// devices from RoomKit, plus an operator "op", an auditor "audit", the
// door-badge bridge "badges" (kind operator) and People persons
// "p-0001".. (kind person). Every key is Key(Seed, id).
func Generate(c GenConfig) (*topology.Topology, error) {
	switch {
	case c.Floors < 1 || c.Floors > 99:
		return nil, fmt.Errorf("floors %d: want 1..99", c.Floors)
	case c.Rooms < 1 || c.Rooms > 99:
		return nil, fmt.Errorf("rooms %d: want 1..99 per floor", c.Rooms)
	case c.DevicesPerRoom < 1 || c.DevicesPerRoom > 64:
		return nil, fmt.Errorf("devices per room %d: want 1..64", c.DevicesPerRoom)
	case c.People < 0 || c.People > 9999:
		return nil, fmt.Errorf("people %d: want 0..9999", c.People)
	}
	if c.Site == "" {
		c.Site = "campus"
	}
	if c.Building == "" {
		c.Building = "hq"
	}
	t := &topology.Topology{}
	b := c.Site + "/" + c.Building
	t.Places = append(t.Places,
		topology.Place{Path: c.Site, Kind: schema.PlaceKind_site, Label: "Campus"},
		topology.Place{Path: b, Kind: schema.PlaceKind_building, Label: "Headquarters"})
	for f := 1; f <= c.Floors; f++ {
		floor := fmt.Sprintf("%s/f%d", b, f)
		t.Places = append(t.Places, topology.Place{Path: floor, Kind: schema.PlaceKind_floor, Label: fmt.Sprintf("Floor %d", f)})
		for r := 1; r <= c.Rooms; r++ {
			num := fmt.Sprintf("%d%02d", f, r)
			room := floor + "/r" + num
			t.Places = append(t.Places, topology.Place{Path: room, Kind: schema.PlaceKind_room, Label: "Room " + num})
			for i := 0; i < c.DevicesPerRoom; i++ {
				name, class := fmt.Sprintf("light-%d", i-len(RoomKit)+3), schema.DeviceClass_light
				if i < len(RoomKit) {
					name, class = RoomKit[i].Name, RoomKit[i].Class
				}
				path := room + "/" + name
				t.Devices = append(t.Devices, topology.Device{Path: path, Class: class, Key: PublicKey(c.Seed, path)})
			}
		}
	}
	t.Principals = append(t.Principals,
		topology.Principal{ID: OperatorID, Kind: schema.PrincipalKind_operator, Key: PublicKey(c.Seed, OperatorID), Label: "Operator"},
		topology.Principal{ID: AuditorID, Kind: schema.PrincipalKind_auditor, Key: PublicKey(c.Seed, AuditorID), Label: "Auditor"},
		topology.Principal{ID: BadgesID, Kind: schema.PrincipalKind_operator, Key: PublicKey(c.Seed, BadgesID), Label: "Door badges (presence bridge)"})
	for i := 1; i <= c.People; i++ {
		// No label: a person is known to the kernel by pseudonym only.
		id := PersonID(i)
		t.Principals = append(t.Principals, topology.Principal{ID: id, Kind: schema.PrincipalKind_person, Key: PublicKey(c.Seed, id)})
	}
	t.Index()
	return t, nil
}

// WriteTopology writes t as a topology file with a header comment saying
// how it was made and how its keys derive from seed.
func WriteTopology(t *topology.Topology, c GenConfig) ([]byte, error) {
	var buf bytes.Buffer
	fmt.Fprintf(&buf, `# A simulated building: osmose topology gen --floors %d --rooms %d --devices-per-room %d --people %d --seed %d
# Format: see internal/topology. Keys are public keys; the private key of
# principal ID is the ed25519 key whose seed is
#   SHA-256("%s" || 0x00 || "%d" || 0x00 || ID)
# so the simulator (osmose sim --seed %d) can log in as every device, as
# the door-badge bridge %q and as each person (p-0001.., pseudonyms).
`, c.Floors, c.Rooms, c.DevicesPerRoom, c.People, c.Seed, KeyDomain, c.Seed, c.Seed, BadgesID)
	if err := t.Write(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Policy is the default Cedar policy of a simulated building: each device
// program may use every device of its own room, lights dimmed to at most
// 80 % (an energy rule: a switch's "full brightness" long press is denied);
// a person may use the lights (at most 80 %) and the display of the room
// they are in, by grants bound to their presence there (@presence("room"):
// the door badges report them in, and leaving the room revokes the
// grants); the operator may use everything; the door-badge bridge, an
// operator by kind, no device at all.
const Policy = `// Device programs use the devices of their own room.
// Energy rule: lights are dimmed to at most 80 %.
@range("level=0..80")
permit (principal is Device, action in Action::"Light", resource is Device)
when { principal.place == resource.place };

permit (principal is Device, action in [Action::"Sensor", Action::"Switch", Action::"DoorLock",
        Action::"Display", Action::"Speaker", Action::"Thermostat", Action::"Microphone"], resource is Device)
when { principal.place == resource.place };

// People use the lights and the display of the room they are in, while
// they are in it: the door badges report them in and out, and leaving
// ends these grants.
@presence("room")
@range("level=0..80")
permit (principal is Person, action in Action::"Light", resource is Device)
when { principal in resource.place };

@presence("room")
permit (principal is Person, action in Action::"Display", resource is Device)
when { principal in resource.place };

// The operator may use everything; the door-badge bridge, an operator
// only so that it may report presence, uses no device.
permit (principal is Operator, action, resource)
unless { principal == Operator::"badges" };
`
