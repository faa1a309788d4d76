package schema_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"testing"

	"capnproto.org/go/capnp/v3"

	"github.com/osmose-os/osmose/schema"
)

// TestGrantRoundTrip builds a Grant with full Caveats, marshals it to bytes
// and back, and checks every field survives.
func TestGrantRoundTrip(t *testing.T) {
	msg, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
	if err != nil {
		t.Fatal(err)
	}
	g, err := schema.NewRootGrant(seg)
	if err != nil {
		t.Fatal(err)
	}
	must(t, g.SetId("g-42"))
	must(t, g.SetHolder("cambridge/pembroke/f1/r12/switch-1"))
	must(t, g.SetTarget("cambridge/pembroke/f1/r12/light-3"))
	must(t, g.SetInterfaceName("Light"))
	g.SetInterfaceId(schema.Light_TypeID)
	g.SetExpiresAt(1_700_000_000_000_000_000)

	cv, err := g.NewCaveats()
	if err != nil {
		t.Fatal(err)
	}
	methods, err := cv.NewMethods(2)
	if err != nil {
		t.Fatal(err)
	}
	must(t, methods.Set(0, "set"))
	must(t, methods.Set(1, "setLevel"))
	ranges, err := cv.NewRanges(1)
	if err != nil {
		t.Fatal(err)
	}
	must(t, ranges.At(0).SetMethod("setLevel"))
	must(t, ranges.At(0).SetField("level"))
	ranges.At(0).SetMin(0)
	ranges.At(0).SetMax(60)
	cv.SetExpiresAt(1_700_000_000_000_000_000)
	win, err := cv.NewWindow()
	if err != nil {
		t.Fatal(err)
	}
	win.SetStartMinute(22 * 60)
	win.SetEndMinute(6 * 60)
	cv.SetMaxUses(1)
	must(t, cv.SetPlace("cambridge/pembroke/f1"))
	cv.SetNoReshare(true)
	pr, err := cv.NewPresence()
	if err != nil {
		t.Fatal(err)
	}
	must(t, pr.SetPerson("p-7f3a"))
	must(t, pr.SetPlace("cambridge/pembroke/f1/r12"))

	data, err := msg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	msg2, err := capnp.Unmarshal(data)
	if err != nil {
		t.Fatal(err)
	}
	g2, err := schema.ReadRootGrant(msg2)
	if err != nil {
		t.Fatal(err)
	}

	eqText(t, "id", g2.Id, "g-42")
	eqText(t, "holder", g2.Holder, "cambridge/pembroke/f1/r12/switch-1")
	eqText(t, "target", g2.Target, "cambridge/pembroke/f1/r12/light-3")
	eqText(t, "interfaceName", g2.InterfaceName, "Light")
	if got := g2.InterfaceId(); got != schema.Light_TypeID {
		t.Errorf("interfaceId = %#x, want %#x", got, uint64(schema.Light_TypeID))
	}
	if got := g2.ExpiresAt(); got != 1_700_000_000_000_000_000 {
		t.Errorf("expiresAt = %d", got)
	}
	if g2.HasParent() {
		t.Error("parent set, want unset for a root grant")
	}

	cv2, err := g2.Caveats()
	if err != nil {
		t.Fatal(err)
	}
	m2, err := cv2.Methods()
	if err != nil {
		t.Fatal(err)
	}
	if m2.Len() != 2 {
		t.Fatalf("methods len = %d, want 2", m2.Len())
	}
	for i, want := range []string{"set", "setLevel"} {
		if got, err := m2.At(i); err != nil || got != want {
			t.Errorf("methods[%d] = %q, %v; want %q", i, got, err, want)
		}
	}
	r2, err := cv2.Ranges()
	if err != nil {
		t.Fatal(err)
	}
	if r2.Len() != 1 {
		t.Fatalf("ranges len = %d, want 1", r2.Len())
	}
	eqText(t, "range method", r2.At(0).Method, "setLevel")
	eqText(t, "range field", r2.At(0).Field, "level")
	if r2.At(0).Min() != 0 || r2.At(0).Max() != 60 {
		t.Errorf("range = %v..%v, want 0..60", r2.At(0).Min(), r2.At(0).Max())
	}
	w2, err := cv2.Window()
	if err != nil {
		t.Fatal(err)
	}
	if w2.StartMinute() != 1320 || w2.EndMinute() != 360 {
		t.Errorf("window = %d..%d, want 1320..360", w2.StartMinute(), w2.EndMinute())
	}
	if cv2.HasRate() {
		t.Error("rate set, want unset (unlimited)")
	}
	if cv2.MaxUses() != 1 || !cv2.NoReshare() {
		t.Errorf("maxUses = %d, noReshare = %v; want 1, true", cv2.MaxUses(), cv2.NoReshare())
	}
	eqText(t, "place", cv2.Place, "cambridge/pembroke/f1")
	p2, err := cv2.Presence()
	if err != nil {
		t.Fatal(err)
	}
	eqText(t, "presence person", p2.Person, "p-7f3a")
	eqText(t, "presence place", p2.Place, "cambridge/pembroke/f1/r12")
}

// TestReadingRoundTrip round-trips a Reading through bytes.
func TestReadingRoundTrip(t *testing.T) {
	msg, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
	if err != nil {
		t.Fatal(err)
	}
	r, err := schema.NewRootReading(seg)
	if err != nil {
		t.Fatal(err)
	}
	r.SetKind(schema.ReadingKind_co2)
	r.SetValue(812.5)
	must(t, r.SetUnit("ppm"))
	r.SetTime(42)
	must(t, r.SetDevice("cambridge/pembroke/f1/r12/co2-1"))

	data, err := msg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	msg2, err := capnp.Unmarshal(data)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := schema.ReadRootReading(msg2)
	if err != nil {
		t.Fatal(err)
	}
	if r2.Kind() != schema.ReadingKind_co2 || r2.Value() != 812.5 || r2.Time() != 42 {
		t.Errorf("reading = %v %v @%d, want co2 812.5 @42", r2.Kind(), r2.Value(), r2.Time())
	}
	eqText(t, "unit", r2.Unit, "ppm")
	eqText(t, "device", r2.Device, "cambridge/pembroke/f1/r12/co2-1")
}

// TestLoginMessage checks the exact signed bytes of the login protocol and
// that a standard ed25519 signature over them verifies.
func TestLoginMessage(t *testing.T) {
	if !bytes.Equal(schema.LoginDomain, []byte("osmose-login-v1\x00")) {
		t.Fatalf("schema LoginDomain = %q", schema.LoginDomain)
	}
	if schema.NonceSize != 32 || schema.SignatureSize != ed25519.SignatureSize {
		t.Fatalf("NonceSize = %d, SignatureSize = %d", schema.NonceSize, schema.SignatureSize)
	}

	const kernelID = "osmose.example/pembroke"
	const principal = "cambridge/pembroke/f1/r12/light-3"
	nonce := make([]byte, schema.NonceSize)
	for i := range nonce {
		nonce[i] = byte(0xa0 + i)
	}

	got := schema.LoginMessage(kernelID, principal, nonce)
	want := []byte("osmose-login-v1\x00" +
		"osmose.example/pembroke\x00" +
		"cambridge/pembroke/f1/r12/light-3\x00" +
		"\xa0\xa1\xa2\xa3\xa4\xa5\xa6\xa7\xa8\xa9\xaa\xab\xac\xad\xae\xaf" +
		"\xb0\xb1\xb2\xb3\xb4\xb5\xb6\xb7\xb8\xb9\xba\xbb\xbc\xbd\xbe\xbf")
	if !bytes.Equal(got, want) {
		t.Fatalf("LoginMessage =\n%q\nwant\n%q", got, want)
	}
	if len(got) != 16+len(kernelID)+1+len(principal)+1+32 {
		t.Fatalf("len = %d", len(got))
	}

	// The worked example in doc.go.
	seq := make([]byte, 32)
	for i := range seq {
		seq[i] = byte(i)
	}
	docHex := "6f736d6f73652d6c6f67696e2d763100" + "6b00" + "7000" +
		"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
	if got := hex.EncodeToString(schema.LoginMessage("k", "p", seq)); got != docHex {
		t.Errorf("doc.go example: LoginMessage(k, p, 00..1f) = %s, want %s", got, docHex)
	}

	// A fixed seed: tests take no randomness from the environment.
	seed := bytes.Repeat([]byte{7}, ed25519.SeedSize)
	priv := ed25519.NewKeyFromSeed(seed)
	pub := priv.Public().(ed25519.PublicKey)
	sig := ed25519.Sign(priv, got)
	if len(sig) != int(schema.SignatureSize) {
		t.Fatalf("signature length %d", len(sig))
	}
	if !ed25519.Verify(pub, schema.LoginMessage(kernelID, principal, nonce), sig) {
		t.Fatal("signature over LoginMessage does not verify")
	}

	// The signature binds every part: kernel, principal and nonce.
	other := append([]byte(nil), nonce...)
	other[31] ^= 1
	for name, m := range map[string][]byte{
		"kernel":    schema.LoginMessage("osmose.example/other", principal, nonce),
		"principal": schema.LoginMessage(kernelID, "cambridge/pembroke/f1/r12/light-4", nonce),
		"nonce":     schema.LoginMessage(kernelID, principal, other),
	} {
		if ed25519.Verify(pub, m, sig) {
			t.Errorf("signature verifies with a different %s", name)
		}
	}
}

// fakeLight is an in-memory Light for TestLightCall.
type fakeLight struct {
	state struct {
		on    bool
		level uint8
	}
}

func (l *fakeLight) Set(_ context.Context, call schema.Light_set) error {
	l.state.on = call.Args().On()
	return nil
}

func (l *fakeLight) SetLevel(_ context.Context, call schema.Light_setLevel) error {
	l.state.level = call.Args().Level()
	l.state.on = l.state.level > 0
	return nil
}

func (l *fakeLight) State(_ context.Context, call schema.Light_state) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	st, err := res.NewState()
	if err != nil {
		return err
	}
	st.SetOn(l.state.on)
	st.SetLevel(l.state.level)
	return nil
}

// TestLightCall calls a generated interface end to end in process.
func TestLightCall(t *testing.T) {
	ctx := context.Background()
	light := schema.Light_ServerToClient(&fakeLight{})
	defer light.Release()

	f, release := light.SetLevel(ctx, func(p schema.Light_setLevel_Params) error {
		p.SetLevel(60)
		return nil
	})
	if _, err := f.Struct(); err != nil {
		t.Fatal(err)
	}
	release()

	sf, release := light.State(ctx, nil)
	defer release()
	res, err := sf.Struct()
	if err != nil {
		t.Fatal(err)
	}
	st, err := res.State()
	if err != nil {
		t.Fatal(err)
	}
	if !st.On() || st.Level() != 60 {
		t.Errorf("state = on %v level %d, want on 60", st.On(), st.Level())
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func eqText(t *testing.T, name string, get func() (string, error), want string) {
	t.Helper()
	got, err := get()
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if got != want {
		t.Errorf("%s = %q, want %q", name, got, want)
	}
}
