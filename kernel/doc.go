// Package kernel is osmose's syscall gateway: the only way a device program
// touches the world. It serves Cap'n Proto RPC (schema/*.capnp) on Unix and
// TCP sockets, logs principals in, hands out capabilities that are all
// kernel gates, and records every login, grant and call on the ledger
// before it answers.
//
// Who calls it: cmd/osmose (`osmose serve`) builds a Config (ledger,
// topology, policy, drivers, clock, randomness) and calls New and Serve;
// tests and benchmarks do the same with kerneltest's fake drivers. The
// kernel imports schema, caps and ledger, never a concrete driver: drivers
// arrive as capnp clients in Config.Drivers.
//
// # Start
//
// New numbers its grants after the highest grant id the ledger holds, and
// appends a "start" entry (durable before New returns): grants of earlier
// runs are not live in this one, and the entry says so on the ledger, so
// that an auditor reading the ledger alone (osmose caps who) sees them end
// there. Their holders open again. Then come the building and the policy
// the kernel runs with: "topology" entries (KindTopology: the YAML of the
// topology in parts, see ParseTopologyPart) and a "policy" entry (result
// body: the Cedar files, see DecodePolicy), so the ledger alone says in
// which building and under which policy every later decision was made.
//
// # Lifecycle of a connection
//
//  1. Accept. Each connection gets its own codec (a capnp Decoder with
//     Config.MaxMessageSize; a larger or malformed frame ends only this
//     connection, and a "disconnect" entry records why) and its own
//     rpc.Conn whose bootstrap capability is a Gateway. rpc.Options.Network
//     is never set.
//  2. Login. Gateway.challenge returns a 32-byte nonce from Config.Rand,
//     single-use, bound to the principal and the connection, valid for
//     Config.NonceTTL, at most Config.MaxChallenges outstanding.
//     Gateway.login checks the ed25519 signature over schema.LoginMessage
//     against the topology's key. Every attempt is a "login" entry (admit,
//     or deny with the precise reason, while the caller only hears
//     "permission: login: login failed"); the Session is returned once the
//     entry is durable. Authority is bound here: the session holds the
//     principal, and never looks it up again.
//  3. Open. Session.open(path, classes, caveats) resolves the path in the
//     topology (a device, or every device at or under a place), and for
//     each device either reuses a live grant the principal holds, asks the
//     caps table for a root grant (caps.Table.Open: the Cedar policy
//     decides methods and caveats), or, when caveats are given on a held
//     grant, attenuates it (caps.Table.Delegate to oneself). Each decision
//     is a "grant" or "delegate" entry whose result body is the canonical
//     capnp bytes of the schema Grant; refusals are entries too. The
//     caller gets one gate per device, after the entries are durable.
//  4. Call. See "The data path of one call" below.
//  5. Revoke, release, delegate. Session.revoke / release / delegate run
//     through the same sequencer as admissions (caps.Table.Revoke, Release,
//     Delegate), are "revoke" / "release" / "delegate" entries (a revoke's
//     params body lists every grant it ended), and cut the derived gates of
//     every ended grant (their wrapped capability is released, so a driver
//     drops the subscription).
//  6. End. Session.logout ends the session with a "logout" entry, durable
//     when logout returns. When the program instead releases its Session,
//     or the connection ends (closed, crashed, garbage, forged capability),
//     the session ends with a "logout" or "disconnect" entry with the
//     reason (which of the two depends on what the kernel sees first).
//     Every gate of the session then refuses calls with "revoked: session
//     ended". Grants stay; a new session of the same principal can open
//     them again. Nothing else is affected: each connection has its own
//     goroutines and state.
//  7. Grants also end by policy and presence. Kernel.SetPolicy
//     (Operator.setPolicy, SIGHUP in osmose serve) replaces the Cedar
//     policy after checking every file (a bad one is refused, recorded,
//     and changes nothing), and revokes the standing grants the new policy
//     would not give; Kernel.Presence (Operator.presence, the input of
//     badge readers) records a person entering or leaving a place and
//     revokes the grants bound to a presence that no longer holds. Each is
//     a "policy" or "presence" entry (a presence entry's bodies belong to
//     the person: erasable), followed by one "revoke" entry (Ref = the
//     change) listing the grants ended.
//
// # The data path of one call
//
// Every capability the kernel hands out is a gate: one generic
// capnp.ClientHook (gate.go) for every interface, branded so the kernel
// recognises its own gates. A gate has no goroutine: a call runs on the
// goroutine that delivers it (a connection's receive loop, or a local
// caller), or on the one admitting queued calls at the time (step 4),
// until it reaches the driver, continues on the driver's goroutine
// when the driver returns, and is answered by the kernel's one answerer
// goroutine. A call on a gate:
//
//  1. counts against its connection's MaxInFlight; beyond it the caller
//     gets an exception of type overloaded ("overloaded: ...") and nothing
//     is recorded (the bound protects the ledger too);
//  2. canonicalises the params struct (capnp.Canonicalize, or directly for
//     a struct without pointers), the call's params body;
//  3. takes room for its entry in the ledger without waiting
//     (ledger.TryReserve). When the ledger is full (MaxPending entries not
//     yet durable), the call joins the gate's backlog instead, which a
//     goroutine admits in order as room appears, and later calls on the
//     gate queue behind it (at most MaxInFlight; beyond, overloaded, as a
//     driver calling a listener counts against no connection): a receive
//     loop never waits for the disk, nor for the sequencer (below), which
//     is never held waiting for the disk either: logins, logouts and
//     disconnects take their room before entering it (ledger.Reserve);
//     an open, a delegation, a revocation, a release and a policy or
//     presence change wait for room before entering (ledger.WaitRoom) and
//     append inside without waiting (ledger.AppendNow, which may go a few
//     entries beyond MaxPending);
//  4. joins the sequencer's queue, in arrival order (sequencer.go). One
//     goroutine at a time admits the queued calls, each in the sequencer
//     (one mutex): the goroutine that queued the first of them, while
//     the calls that arrive meanwhile are queued and their goroutines go
//     on, so no receive loop sleeps on the sequencer's mutex. The caps
//     table admits or denies (caps.Table.Admit: grant live, method in its
//     set, caveats, with numeric arguments extracted per method for range
//     caveats); the "call" entry is appended (Decision admit or deny,
//     Reason on deny), which fixes its seq; an admitted call is
//     registered as in flight on its grant and handed to the driver
//     (ClientHook.Recv, which only queues) with the caller's params,
//     every capability inside them rewritten in place to a gate of the
//     opposite direction.
//     Because all three happen in one critical section, ledger order is
//     admission order is revocation order, no call is admitted after its
//     grant's revocation, and each driver receives its calls in admission
//     order (a server.Server runs calls in arrival order). A gate's calls
//     arrive in order on one goroutine and are queued in that order, so
//     they are admitted in order;
//  5. a denied call is answered with the reason ("permission: setLevel:
//     ...") once its entry is durable. When the driver returns an
//     admitted call, its goroutine appends a "return" entry (Ref = the
//     call's seq, result body = canonical bytes of the results, or Reason
//     = the driver's error; when the grant ends while the driver has the
//     call, the driver's context is cancelled and the call ends at once,
//     the caller getting "revoked: ...: grant ended while the call was in
//     flight") and copies the results to the caller wrapping every
//     capability in a gate of the same direction. The driver's context
//     carries the call's values but not its caller's cancellation: an
//     admitted call runs to its end at the driver, and its return entry
//     says how it ended, even if the caller has gone. The
//     answerer answers it once the return entry is durable (group commit:
//     many calls share one sync; the answerer wakes once per commit);
//  6. ends its OpenTelemetry span (principal, grant, device, interface,
//     method, decision, reason) and records the osmose.kernel.calls counter
//     and the osmose.kernel.call.duration histogram.
//
// Drivers and every other kernel-hosted object (gateway, session,
// operator, auditor, subscription) are served by internal/idleserver: a
// go-capnp server.Server made when a call arrives, so an idle building
// holds no goroutine per capability.
//
// Gates have a direction. Outward gates are called by the program and
// forward to the driver or to what the driver returned (a Subscription).
// Inward gates are called by the driver and forward to what the program
// passed in (a ReadingListener, a SwitchListener, an AudioSink): so a
// sensor's callbacks are admitted, ledgered (actor = the device) and
// answered the same way. Derived gates (those found in params and results)
// admit while their grant is live and their session has not ended. A gate
// of this session that crosses back through the membrane is unwrapped to
// the capability it wraps, so nothing is double-wrapped and nothing
// bypasses the kernel.
//
// Unknown methods on a device gate are refused with "unimplemented" and a
// deny entry. Calls on a capability id the program was never given, or has
// released, are refused by the rpc layer, which aborts that connection;
// its "disconnect" entry records the reason.
//
// # Operator and Auditor
//
// Session.operator (principals of kind operator) and Session.auditor
// (auditors and operators) return kernel-hosted capabilities (admin.go)
// bound to the session: they count against the connection's MaxInFlight
// and refuse every call with "revoked: ...: session ended" once the
// session has ended.
//
//   - Auditor reads the ledger and nothing else: checkpoint (a signed note
//     of the durable tree), inclusionProof and consistencyProof (RFC 6962,
//     as tlog.CheckRecord and tlog.CheckTree take them), entry (the
//     envelope bytes, CID and body blocks, redacted bodies marked), and
//     trace: one page, in seq order, of the entries on a device
//     (ledger.ByDevice), of a principal (ByPrincipal, plus the entries that
//     made the grants the caps table says it holds) or of a grant (ByGrant,
//     plus the grant and delegate entries of its ancestors, followed on the
//     ledger through each delegate entry's Ref). A page holds at most
//     TraceQuery.limit entries (0: 1000; never more than 10,000); the next
//     page starts after the last seq of this one.
//   - Operator lists places, devices and principals from the topology and
//     live grants from the caps table (read under the sequencer lock); a
//     listing of more than 10,000 items is refused ("invalid": narrow the
//     filter). grant asks the caps table for root grants for another
//     principal (caps.Table.Open: the policy decides, the operator's
//     caveats narrow) and revoke revokes any grant with its subtree (the
//     operator as revoker); both go through the sequencer and the ledger
//     exactly as Session.open and Session.revoke do, with the operator as
//     actor, and revoke cuts the derived gates. Revoking a revoked grant
//     succeeds and records nothing. deviceState asks the device's driver
//     through its schema interface. setPolicy and presence: see "Grants
//     also end by policy and presence" above. forget answers
//     "unimplemented": erasure runs on a stopped kernel's ledger (osmose
//     forget). Queries are not ledgered.
//   - Operator.watch streams the ledger tail: one goroutine per watch reads
//     durable entries (ledger.WaitSize, Read) and makes one
//     EntryListener.entries call at a time with at most 256 entries;
//     entries committed meanwhile go into the next call, and a listener
//     more than 10,000 entries behind is skipped ahead to the newest ones
//     (`skipped` says how many it missed). The backlog is capped at 10,000.
//     The watch stops, and releases the listener, when its Subscription is
//     cancelled (cancel returns once the goroutine has ended) or released,
//     the listener fails, or the session ends (its end is an entry, which
//     wakes the watch). A running watch holds one of its connection's
//     MaxInFlight slots. Its calls on the listener are not gated or
//     ledgered: recording them would feed the watch its own deliveries.
//
// # Errors
//
// One error type, *Error (op, kind, cause), is mapped to a capnp exception
// in one place (toException): its text "kind: op: cause" starts with one of
// the kinds of the schema's error section, and Overloaded has exception
// type overloaded.
//
// # Reference ownership
//
// Config.Drivers' clients belong to the kernel from New until Close. Each
// gate owns one reference to what it wraps and releases it when its last
// client is released (Shutdown) or its grant ends (cut). Open's results
// carry gates the caller owns. Every answer from a driver is released once
// its results have been copied.
package kernel
