package topology

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"reflect"
	"strings"
	"testing"

	"github.com/osmose-os/osmose/schema"
)

func key(b byte) ed25519.PublicKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{b}, 32)).Public().(ed25519.PublicKey)
}

func b64(k ed25519.PublicKey) string { return base64.StdEncoding.EncodeToString(k) }

func TestParse(t *testing.T) {
	src := `places:
  - path: cam
    kind: site
  - path: cam/pem
    kind: building
  - path: cam/pem/f1
    kind: floor
  - path: cam/pem/f1/r12
    kind: room
    label: Room 12
devices:
  - path: cam/pem/f1/r12/light-3
    class: light
    key: ` + b64(key(1)) + `
    id: l3
  - path: cam/pem/f1/r12/lock
    class: doorLock
principals:
  - id: alice
    kind: operator
    key: ` + b64(key(2)) + `
`
	top, err := Parse("t.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if len(top.Places) != 4 || len(top.Devices) != 2 || len(top.Principals) != 1 {
		t.Fatalf("got %d places %d devices %d principals", len(top.Places), len(top.Devices), len(top.Principals))
	}
	d, ok := top.Device("cam/pem/f1/r12/light-3")
	if !ok || d.Class != schema.DeviceClass_light || d.Place() != "cam/pem/f1/r12" || !d.Key.Equal(key(1)) {
		t.Fatalf("device = %+v", d)
	}
	for _, id := range []string{"l3", "cam/pem/f1/r12/light-3"} {
		p, ok := top.Login(id)
		if !ok || p.ID != "cam/pem/f1/r12/light-3" || p.Kind != schema.PrincipalKind_device {
			t.Errorf("Login(%q) = %+v, %v", id, p, ok)
		}
	}
	if _, ok := top.Login("cam/pem/f1/r12/lock"); ok {
		t.Error("a device without a key logged in")
	}
	if p, ok := top.Login("alice"); !ok || p.Kind != schema.PrincipalKind_operator {
		t.Errorf("Login(alice) = %+v", p)
	}
	if got := len(top.Under("cam/pem")); got != 2 {
		t.Errorf("Under(cam/pem) = %d devices", got)
	}
	if got := len(top.Under("cam/pe")); got != 0 {
		t.Errorf("Under(cam/pe) = %d devices, want 0 (not a path prefix)", got)
	}

	// Write and read back.
	var buf bytes.Buffer
	if err := top.Write(&buf); err != nil {
		t.Fatal(err)
	}
	back, err := Parse("back.yaml", buf.Bytes())
	if err != nil {
		t.Fatalf("parse written topology: %v\n%s", err, buf.String())
	}
	if !reflect.DeepEqual(back.Places, top.Places) || !reflect.DeepEqual(back.Devices, top.Devices) || !reflect.DeepEqual(back.Principals, top.Principals) {
		t.Errorf("round trip differs:\n%s", buf.String())
	}
}

func TestParseErrors(t *testing.T) {
	good := b64(key(1))
	for _, tc := range []struct {
		name, src, want string
	}{
		{"syntax", "places: [\n", "t.yaml:1: did not find expected node content"},
		{"unknown top key", "plaecs: []\n", "t.yaml:1: topology: unknown key \"plaecs\""},
		{"unknown place key", "places:\n  - path: a\n    kidn: site\n", "t.yaml:3: place: unknown key \"kidn\""},
		{"bad kind", "places:\n  - path: a\n    kind: castle\n", "t.yaml:3: place \"a\": unknown kind \"castle\""},
		{"orphan place", "places:\n  - path: a\n  - path: b/c\n", "t.yaml:3: place \"b/c\": parent place \"b\" is not declared"},
		{"empty segment", "places:\n  - path: a//b\n", "t.yaml:2: place \"a//b\": empty path segment"},
		{"dup place", "places:\n  - path: a\n  - path: a\n", "t.yaml:3: place \"a\" declared twice"},
		{"device no place", "places:\n  - path: a\ndevices:\n  - path: b/l\n    class: light\n", "t.yaml:4: device \"b/l\": place \"b\" is not declared"},
		{"device root", "devices:\n  - path: l\n    class: light\n", "t.yaml:2: device \"l\": a device path is a place path plus one segment"},
		{"bad class", "places:\n  - path: a\ndevices:\n  - path: a/l\n    class: lamp\n", "t.yaml:5: device \"a/l\": unknown class \"lamp\""},
		{"missing class", "places:\n  - path: a\ndevices:\n  - path: a/l\n", "t.yaml:4: device a/l: missing class"},
		{"bad key", "places:\n  - path: a\ndevices:\n  - path: a/l\n    class: light\n    key: abc\n", "t.yaml:6: device \"a/l\": key: "},
		{"short key", "places:\n  - path: a\ndevices:\n  - path: a/l\n    class: light\n    key: AAAA\n", "t.yaml:6: device \"a/l\": key: 3 bytes"},
		{"principal kind", "principals:\n  - id: x\n    kind: device\n    key: " + good + "\n", "t.yaml:3: principal \"x\": kind \"device\""},
		{"principal no key", "principals:\n  - id: x\n    kind: person\n", "t.yaml:2: principal x: missing key"},
		{"dup login", "places:\n  - path: a\ndevices:\n  - path: a/l\n    class: light\nprincipals:\n  - id: a/l\n    kind: app\n    key: " + good + "\n", "t.yaml:7: login id \"a/l\" used twice"},
		{"not a list", "places: 3\n", "t.yaml:1: places: want a list"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tc.src))
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			if _, ok := err.(*Error); !ok {
				t.Errorf("error %T, want *Error", err)
			}
			if !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("error %q, want prefix %q", err, tc.want)
			}
		})
	}
}

func TestEmpty(t *testing.T) {
	for _, src := range []string{"", "# nothing\n", "{}\n"} {
		top, err := Parse("e.yaml", []byte(src))
		if err != nil {
			t.Fatalf("%q: %v", src, err)
		}
		if _, ok := top.Login("x"); ok {
			t.Fatal("empty topology has a principal")
		}
	}
}
