package kernel

// Replay support: the pure pieces of the kernel's decisions, exported so
// that internal/replay can re-derive, without running a kernel, every
// decision the kernel recorded: the interface catalog the caps table is
// built with, the arguments the gate extracts for range caveats, the grant
// body of a grant entry, and the exact words of every recorded reason.
// Each function here says which code of the kernel it mirrors; the words
// must stay in step with it (internal/replay's tests replay ledgers that
// real kernels wrote, and fail at the first entry where they differ).

import (
	"fmt"

	"capnproto.org/go/capnp/v3"

	"github.com/osmose-os/osmose/caps"
	"github.com/osmose-os/osmose/internal/topology"
	"github.com/osmose-os/osmose/schema"
)

// Catalog is the kernel's catalog of interfaces, for replay: the device
// interfaces grants are for (with their methods and the numeric arguments
// range caveats read) and the callback interfaces found in params and
// results. It holds no state beyond the catalog; the zero value is not
// usable, call NewCatalog. Safe for concurrent use.
type Catalog struct {
	cat *catalog
	k   *Kernel // only its catalog, for writeGrant
}

// NewCatalog returns the catalog a kernel of this build uses.
func NewCatalog() *Catalog {
	c := newCatalog()
	return &Catalog{cat: c, k: &Kernel{cat: c}}
}

// Interfaces is the catalog of device interfaces the kernel builds its
// caps table with (caps.Config.Interfaces).
func (c *Catalog) Interfaces() []caps.Interface { return c.cat.capsInterfaces() }

// Methods returns the number of methods of an interface, 0 for one the
// catalog does not know.
func (c *Catalog) Methods(iface uint64) int {
	if f := c.cat.byID[iface]; f != nil {
		return len(f.methods)
	}
	return 0
}

// MethodName names a method as the kernel names it in spans and reasons:
// "Light", "setLevel"; "#7" for a method the catalog does not know, and
// "@<hex id>" for an unknown interface.
func (c *Catalog) MethodName(iface uint64, method uint16) (ifaceName, methodName string) {
	return c.cat.methodName(capnp.Method{InterfaceID: iface, MethodID: method})
}

// HasArgs reports whether the gate extracts numeric arguments from the
// calls of a method (so that CallArgs needs their params).
func (c *Catalog) HasArgs(iface uint64, method uint16) bool {
	f := c.cat.byID[iface]
	return f != nil && f.args[method] != nil
}

// CallArgs returns the numeric arguments of a call as the gate extracts
// them for range caveats (catalog.go), from the call's params struct; nil
// for a method without any.
func (c *Catalog) CallArgs(iface uint64, method uint16, params capnp.Struct) []caps.Arg {
	f := c.cat.byID[iface]
	if f == nil || !params.IsValid() {
		return nil
	}
	if fn := f.args[method]; fn != nil {
		return fn(params)
	}
	return nil
}

// GrantBody returns the result body of the entry that made grant g: the
// canonical Cap'n Proto bytes of its schema Grant (session.go, grantBytes),
// with grantor "policy" for a root grant and the parent's holder id for a
// delegation.
func (c *Catalog) GrantBody(g caps.Grant, grantor string) ([]byte, error) {
	_, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
	if err != nil {
		return nil, err
	}
	sg, err := schema.NewRootGrant(seg)
	if err != nil {
		return nil, err
	}
	if err := c.k.writeGrant(sg, g, 0, grantor); err != nil {
		return nil, err
	}
	return capnp.Canonicalize(capnp.Struct(sg))
}

// CapsTopology is the topology as the kernel gives it to its caps table.
func CapsTopology(t *topology.Topology) []caps.Node { return capsTopology(t) }

// CapsPrincipal maps a principal of the topology to a grant holder, as a
// session does at login; false for auditors, who hold nothing.
func CapsPrincipal(p topology.Principal) (caps.Principal, bool) { return capsPrincipal(p) }

// Truncate cuts a reason to the length the kernel records.
func Truncate(s string) string { return truncate(s) }

// Refusal is the recorded reason of an input the caps table refused, for
// an entry of operation op (a method name for a call; "grant",
// "delegate", "revoke", "release" otherwise): "kind: op: cause".
func Refusal(op string, d caps.Decision) string { return truncate(capsError(op, d).Error()) }

// EndedRefusal is the reason of a call refused because its grant had
// ended (revoked or released) in this run (gate.go, admit).
func EndedRefusal(method string, id caps.GrantID) string {
	return truncate(errorf(Revoked, method, "%s has ended", id).Error())
}

// SessionEndedRefusal is the reason of a call refused because the
// caller's session had ended (gate.go, admit).
func SessionEndedRefusal(method string) string {
	return truncate((&Error{Op: method, Kind: Revoked, Cause: ErrSessionEnded}).Error())
}

// ReleasedRefusal is the reason of a call refused because the capability
// the gate wrapped had been released (gate.go, admit).
func ReleasedRefusal(method string) string {
	return truncate((&Error{Op: method, Kind: Revoked, Cause: ErrGateReleased}).Error())
}

// UnknownMethodRefusal is the reason of a call of a method that a device
// gate's interface does not have (gate.go, unknown): gateIface is the
// name of the gate's interface, the rest names the method called.
func UnknownMethodRefusal(gateIface, method string, iface uint64, id uint16) string {
	return truncate(fmt.Sprintf("unimplemented: %s has no method %s (interface %#x, method %d)", gateIface, method, iface, id))
}

// InFlightError is the reason of the "return" entry of a call whose
// grant ended while its driver had it (gate.go, call).
func InFlightError(method string, id caps.GrantID) string {
	return truncate((&Error{Op: method, Kind: Revoked, Cause: fmt.Errorf("%w (%s)", ErrEndedInFlight, id)}).Error())
}

// StartReason is the reason of the "start" entry of a kernel whose first
// grant is first (restart.go, recordStart).
func StartReason(first caps.GrantID) string {
	if first > 1 {
		return fmt.Sprintf("kernel started: grants g1 to g%d of earlier runs ended", first-1)
	}
	return "kernel started"
}

// StartPolicyReason is the reason of the "policy" entry that follows the
// topology entries at start (policy.go, recordPolicy).
func StartPolicyReason(files int) string {
	return fmt.Sprintf("policy in force at start: %d files", files)
}

// PolicyRefusal is the reason of a "policy" entry whose files the caps
// table rejected (policy.go, SetPolicy).
func PolicyRefusal(err error) string { return truncate("invalid: " + err.Error()) }

// PresenceReason is the reason of an admitted "presence" entry
// (policy.go, Presence).
func PresenceReason(present bool, place string) string {
	if present {
		return "a person entered " + place
	}
	return "a person left " + place
}

// PresenceRefusal is the reason of a refused "presence" entry; the
// person's id stays out of it (policy.go, Presence).
func PresenceRefusal(d caps.Decision, place string) string {
	return truncate(fmt.Sprintf("%s: %s", d.Code, place))
}

// Why a change entry revoked grants, in the reason of the "revoke" entry
// that follows it (policy.go, endGrants), or why the kernel revoked a
// forgotten person's grants (forget.go, Forget).
const (
	WhyPolicy    = "policy changed"
	WhyPresence  = "presence binding no longer holds"
	WhyForgotten = "data subject forgotten" // Kernel.Forget's revocations (forget.go)
)

// EndedGrantsReason is the reason of the "revoke" entry that lists the n
// grants a policy or presence change revoked (policy.go, endGrants).
func EndedGrantsReason(why string, n int) string {
	return truncate(fmt.Sprintf("%s: %d grants ended", why, n))
}

// GrantList is the params body of a "revoke" or "release" entry: the
// grants it ended, "g1 g4 g7" (session.go, grantList).
func GrantList(ids []caps.GrantID) string { return grantList(ids) }
