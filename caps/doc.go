// Package caps is the pure core of osmose's capabilities: the table of
// grants, their derivation tree, attenuation by caveats, cascading
// revocation, and the Cedar policy that decides what may be granted.
//
// # What it is
//
// Every capability the kernel hands a device program, person, app or
// operator is a grant: a holder (a Principal), a target (the path of a
// device or place in the building topology, like
// "cambridge/pembroke/f1/r12/light-3"), an interface (a Cap'n Proto
// interface id, uint64), a set of methods (ordinals, uint16), caveats and a
// parent. A root grant comes from Open and is decided by the policy. A child
// comes from Delegate and can only ever have less power than its parent:
// asking for more methods, a wider argument range or place, a later expiry,
// a wider time window, a higher rate or more uses is refused with
// CodeAmplify (ErrAmplify).
//
// A call through a grant is a call through each of its ancestors: Admit
// checks the whole chain up to the root and spends a use and a rate token
// on each. So delegating a one-time grant never yields two uses, and a
// released parent's caveats still bind its children.
//
// # Who calls it
//
// Only the kernel. Its sequencer owns a *Table and feeds it one input at a
// time in ledger order; its gates (the membranes around every capability)
// ask Admit before forwarding a call. caps imports nothing of osmose's: ids
// of interfaces and methods are plain integers, and the kernel wires the
// table into its gate.
//
// The table is a state machine with no I/O, no clock, no randomness and no
// goroutines. Time is an input (the Now field of each input, a logical time
// the kernel records), grant ids come from a counter in input order, and no
// map is iterated into an output. The same inputs in the same order give the
// same decisions, ids included, which is how replay rebuilds the state.
//
// # Lifecycle
//
// The kernel follows these steps:
//
//  1. At start, call New with the interface catalog, the topology (every
//     place and device with its path, kind or class, and parent), the policy
//     files and the building's time zone. Then replay the ledger's caps
//     inputs into it, in order, to rebuild the state.
//  2. For each input from a session or the operator, take the next ledger
//     sequence number and call the matching method: Open, Delegate, Admit,
//     Revoke, Release, Enter, Leave, SetPolicy or SetTopology. Each returns
//     a Decision (op, code, grant id, reason, revocations); SetPolicy and
//     SetTopology also return an error when the new policy or topology is
//     rejected, and then change nothing.
//  3. Persist the input and its Decision in one ledger entry, refusals
//     included (a refused delegation is evidence too). For a new grant,
//     Grant(id) gives the full record (methods, caveats, the policies that
//     permitted it) to store alongside.
//  4. Apply the decision: build a gate for a new grant; forward an admitted
//     call to its driver, or fail a denied one with Decision.Err (whose
//     sentinel, ErrRevoked, ErrExpired, ErrRateLimited, ..., maps to a
//     capnp exception); for every Revocation in Decision.Revoked, cancel the
//     grant's calls in flight and turn its gate into an error client.
//  5. When a holder drops a capability, call Release so the tree can shed
//     it. Advance to the next input.
//
// Because admission and revocation pass through the same sequencer, no call
// is admitted after its grant's revocation in input order.
//
// # Caveats
//
// Caveats restrict what a grant admits, checked at admission against every
// grant of the chain: method set; argument ranges on named numeric
// arguments (Call.Args, e.g. {Name: "celsius", Value: 21.5}); expiry; a
// time-of-day window in Config.Location; a rate (a token bucket of N per
// period); a number of uses; a place scope (Call.Addr, the path a call acts
// on, must lie in it); no-reshare (no delegation to others); and presence
// bindings (the grant lives while a person is in a place: Leave returns the
// revocations of every grant bound to a presence that no longer holds).
//
// # Policy
//
// The policy is Cedar (github.com/cedar-policy/cedar-go), type-checked at
// load against a schema the table derives:
//
//   - Entities. The topology is the entity hierarchy: Place::"path" with
//     attributes kind and place, and Device::"path" with attributes class and
//     place (its innermost enclosing place), each in its parent. Principals
//     are Device (by path: the same entity), Person (by pseudonym; a person
//     is in every place they are present in, so "principal in
//     resource.place" means "is in the room"), App and Operator.
//   - Actions. Each interface method is the action Action::"Iface.method",
//     in the group Action::"Iface".
//   - Request. For Open (and for Delegate to another principal) the table
//     asks, for each method wanted: may the (new) holder perform
//     Iface.method on the resource, which is the grant's place scope (the
//     target, or the narrower Caveats.Place)? The context is {op: "open" or
//     "delegate", depth, minuteOfDay, weekday} at issue time. The methods
//     permitted form the method set; if specific methods were asked for,
//     every one must be permitted.
//   - Caveats. Each permit policy that allowed a method attaches the
//     caveats named by its annotations: @range("level=0..60,
//     celsius=18..24"), @expires("8h") (after issue), @window("08:00-18:00"),
//     @rate("10/1m"), @uses("1"), @noreshare, and @presence or
//     @presence("room") (bound to the holder's presence in the innermost
//     place, or nearest place of that kind, containing the resource). The
//     grant gets the strictest combination of the caveats of all the
//     policies that applied and of those the requester asked for. Policies
//     are never consulted per call: admission is plain Go over the grant's
//     caveats.
//   - Load errors. A file with a syntax error, a type error (unknown action
//     or entity type, wrong attribute or type) or a bad caveat annotation is
//     rejected with a *PolicyError per problem: file, line, column, reason.
//   - Change. SetPolicy re-checks every standing grant against the new
//     policy, with the context it was issued in, and revokes (with its
//     subtree) each grant the new policy would not give, or would give only
//     with stricter caveats. SetTopology does the same after a topology
//     change, and also revokes grants whose target or places are gone.
//     Attenuations (children held by their parent's holder) are not asked
//     about: they fall with their parent. Presence changes do not re-ask the
//     policy: a condition such as "principal in resource.place" is checked
//     when the grant is issued, and @presence is what makes a grant end when
//     the person leaves.
//
// # Errors
//
// Decision.Code is the outcome, a small integer fit for a ledger entry;
// Decision.Reason says why in words; Decision.Err wraps the sentinel for the
// code (ErrNotFound, ErrNotPermitted, ErrRevoked, ErrExpired, ErrAmplify,
// ErrOutOfRange, ErrWindow, ErrRateLimited, ErrUsedUp, ErrOutOfScope,
// ErrNoReshare, ErrNotPresent, ErrInvalid) for errors.Is.
package caps
