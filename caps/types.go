package caps

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// GrantID names a grant. The table assigns ids from a counter starting at 1, in
// input order, so replaying the same inputs assigns the same ids. Zero is no
// grant (the parent of a root).
type GrantID uint64

// String returns "g" followed by the number, as scripts and reasons print it.
func (id GrantID) String() string { return "g" + strconv.FormatUint(uint64(id), 10) }

// PrincipalKind says what sort of party holds a grant. Each kind is a Cedar
// entity type of the same name.
type PrincipalKind uint8

const (
	Device   PrincipalKind = iota + 1 // a device program, by topology path
	Person                            // a person, by pseudonym only
	App                               // a building app, by name
	Operator                          // an operator, by account name
)

var kindNames = [...]string{Device: "device", Person: "person", App: "app", Operator: "operator"}
var kindTypes = [...]string{Device: "Device", Person: "Person", App: "App", Operator: "Operator"}

func (k PrincipalKind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Principal is a party that can hold grants. The zero Principal stands for the
// kernel itself (see Revoke).
type Principal struct {
	Kind PrincipalKind
	ID   string
}

// String returns "kind:id", e.g. "person:p-7f3a"; the zero Principal is "kernel".
func (p Principal) String() string {
	if p == (Principal{}) {
		return "kernel"
	}
	return p.Kind.String() + ":" + p.ID
}

// ParsePrincipal parses the form String returns.
func ParsePrincipal(s string) (Principal, error) {
	if s == "kernel" {
		return Principal{}, nil
	}
	k, id, ok := strings.Cut(s, ":")
	if ok && id != "" {
		for i, n := range kindNames {
			if n != "" && n == k {
				return Principal{Kind: PrincipalKind(i), ID: id}, nil
			}
		}
	}
	return Principal{}, fmt.Errorf("parse principal %q: want device:, person:, app: or operator: and an id: %w", s, ErrInvalid)
}

func (p Principal) valid() bool {
	return p.Kind >= Device && p.Kind <= Operator && p.ID != ""
}

// Interface describes one Cap'n Proto interface the kernel serves: its 64-bit
// schema id, its name (which becomes the Cedar action group) and its methods
// (each of which becomes the Cedar action "Name.method").
type Interface struct {
	ID      uint64
	Name    string
	Methods []Method
}

// Method is one method of an Interface: its ordinal and name.
type Method struct {
	ID   uint16
	Name string
}

// MaxMethodID is the largest method ordinal the table accepts.
const MaxMethodID = 255

// methodSet is a set of method ordinals 0..MaxMethodID.
type methodSet [4]uint64

func (s *methodSet) add(id uint16)          { s[id>>6] |= 1 << (id & 63) }
func (s methodSet) has(id uint16) bool      { return id <= MaxMethodID && s[id>>6]&(1<<(id&63)) != 0 }
func (s methodSet) empty() bool             { return s == methodSet{} }
func (s methodSet) subset(p methodSet) bool { return s[0]&^p[0]|s[1]&^p[1]|s[2]&^p[2]|s[3]&^p[3] == 0 }

// Node is one place or device of the building topology. Paths are
// slash-separated and name the containment chain, e.g.
// "cambridge/pembroke/f1/r12/light-3". Parent, if set, must be the path
// without its last element; a node without a slash is a root.
type Node struct {
	Path   string
	Parent string
	// Kind is "device" for a device, or the kind of place: "site",
	// "building", "floor", "room", "zone", ... (free-form).
	Kind string
	// Class is a device's class ("light", "thermostat", "lock", ...); empty
	// for places.
	Class string
}

// KindDevice is the Node.Kind of devices.
const KindDevice = "device"

// Arg is one named numeric argument of a call, as the gate extracts it from
// the call's parameters for range caveats.
type Arg struct {
	Name  string
	Value float64
}

// Presence names a person (by pseudonym) being in a place.
type Presence struct {
	Person string
	Place  string
}

func (p Presence) String() string { return p.Person + "@" + p.Place }

// PolicyFile is one Cedar policy document. Name is used in error positions and
// in the ids of its policies.
type PolicyFile struct {
	Name string
	Text string
}

// Open asks for a root grant: Holder wants Interface on Target. The policy
// decides which methods and caveats it gets.
type Open struct {
	Holder    Principal
	Target    string // a device or place path in the topology
	Interface uint64
	// Methods lists the method names wanted; all must be permitted. Nil
	// asks for every method the policy permits (at least one).
	Methods []string
	// Caveats are restrictions the requester adds on top of the policy's.
	Caveats Caveats
	Now     time.Time
}

// Delegate asks for a child of From held by To. A child held by From's
// holder is an attenuation: it is not checked against the policy. Otherwise
// the policy must permit every method for To.
type Delegate struct {
	From GrantID
	To   Principal
	// Methods must be a subset of From's; nil keeps them all.
	Methods []string
	// Caveats set here must each be at least as strict as From's; those left
	// zero are inherited.
	Caveats Caveats
	Now     time.Time
}

// Call asks to admit one call made through a grant.
type Call struct {
	Grant  GrantID
	Method uint16
	Args   []Arg
	// Addr is the path the call acts on when the target is a place (a device
	// inside it, say); empty means the grant's target.
	Addr string
	Now  time.Time
}

// Revoke asks to revoke a grant and its whole subtree. By must be the kernel
// (the zero Principal), an operator, or the holder of the grant or of one of
// its ancestors.
type Revoke struct {
	Grant  GrantID
	By     Principal
	Reason string
}
