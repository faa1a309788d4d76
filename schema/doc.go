// Package schema is the wire vocabulary of osmose: the Cap'n Proto schemas
// (*.capnp in this directory) through which device programs, the operator's
// shell and auditors talk to a kernel, and the Go code generated from them.
//
// The .capnp files are the contract and carry the documentation of every
// interface, method and field; the generated *.capnp.go files are committed,
// so users of the package need neither capnp nor capnpc-go. A program in any
// language with a Cap'n Proto RPC implementation (C++, Rust, ...) needs
// nothing but these schemas and a standard ed25519 signature to use a
// kernel.
//
//	gateway.capnp  Gateway (bootstrap, login), Session, Held
//	grants.capnp   Principal, PrincipalKind, Grant, Caveats and its parts
//	devices.capnp  DeviceClass; Light, Thermostat, Sensor, DoorLock, Display,
//	               Speaker, Microphone, Switch; Reading; Subscription and
//	               the listener and sink interfaces a program implements
//	admin.capnp    Operator, Auditor; Place, Device, DeviceState, Checkpoint,
//	               LedgerEntry, Envelope, TraceQuery
//
// After editing a schema, run go generate ./schema (it needs Go and Debian's
// capnproto; see gen.sh) and commit the result. CI regenerates and fails on
// any difference.
//
// # Vocabulary
//
//   - A principal is a party that logs in: a device program, a person, a
//     building app, an operator or an auditor (PrincipalKind). Its id is a
//     Text without zero bytes; a device's id is usually its device path, a
//     person's is the pseudonym handed out when they badge in. Each principal
//     has one ed25519 key pair; the kernel knows the public key.
//   - A place path names a node of the containment tree site ⊃ building ⊃
//     floor ⊃ room ⊃ zone, outermost first, joined by "/":
//     "cambridge/pembroke/f1/r12". A device path is a place path plus one
//     segment for the device: "cambridge/pembroke/f1/r12/light-3". "At or
//     under" a place means the place itself and everything it contains.
//   - A grant is the right of one principal (the holder) to call some methods
//     of one device's interface, under Caveats. Operators make root grants;
//     a holder may delegate a grant to another principal with at most the
//     same power, which forms a delegation tree. Revoking a grant revokes its
//     whole subtree. Grants are named by a kernel-assigned id (Text).
//   - Caveats attenuate a grant: method subset, argument ranges, expiry,
//     time-of-day window, rate limit, maximum uses, place scope, no-reshare,
//     presence binding. They only ever narrow: a grant's effective caveats
//     are the intersection of its own and all its ancestors'.
//   - A gate is the kernel-hosted capability that enforces one grant around
//     a device's driver. Session.open returns gates.
//   - A session is the authority of one logged-in principal, bound at login.
//   - The ledger is the kernel's append-only Merkle log. Every entry has a
//     sequence number (seq, its place in the total order), a CID (binary
//     CIDv1, sha2-256, as Data) and a leaf in an RFC 6962 tree. A checkpoint
//     is a C2SP signed note of the tree's size and root hash (32 bytes of
//     SHA-256), signed with the kernel's ed25519 key. Hashes and CIDs travel
//     as Data, signed notes as Text.
//   - Logical time is an Int64 count of nanoseconds since the Unix epoch on
//     the kernel's clock, as recorded in the ledger entry that consumed it
//     (so replay sees the same value). Time fields named time, expiresAt and
//     so on are logical time; 0 means "not set" or "never".
//
// # Every capability is a kernel gate
//
// A program touches the world only through capabilities, and every
// capability it holds was handed to it by the kernel and is a gate: the
// Gateway, its Session, the devices Session.open returns, Subscriptions,
// and the Operator and Auditor interfaces. There is no other way to reach a
// device. Every call on a gate is admitted or denied (for a device, against
// its grant and caveats), recorded on the ledger, and only then forwarded. Capabilities inside
// parameters and results are wrapped too, on their way in and out (a
// listener or sink a program passes to the kernel becomes a gate that
// records the calls made on it), so nothing bypasses the kernel. Sharing
// power with another principal is Session.delegate, which makes a grant the
// ledger records and the delegator can revoke.
//
// # Login
//
// The bootstrap capability of a connection is a Gateway, whose only power is
// logging in by challenge–response with the principal's ed25519 key. The
// login message, the bytes a principal signs, is exactly
//
//	"osmose-login-v1" 0x00 || kernelId || 0x00 || principal || 0x00 || nonce
//
// that is: the 16 bytes of LoginDomain (the ASCII string "osmose-login-v1"
// and one zero byte), the kernel id in UTF-8, one zero byte, the principal
// id in UTF-8, one zero byte, and the 32 nonce bytes exactly as received.
// There are no length prefixes and no terminator after the nonce; neither id
// may contain a zero byte, which makes the encoding unambiguous.
// LoginMessage builds it. For kernel "k", principal "p" and a nonce of 32
// bytes 0x00..0x1f it is the 52 bytes
//
//	6f736d6f73652d6c6f67696e2d763100 6b00 7000 000102...1e1f
//
// A client logs in in four steps:
//
//  1. Call Gateway.challenge(principal); get a nonce of NonceSize (32)
//     random bytes and the kernel's id, kernelId. Check that kernelId is
//     the id of the kernel you meant to reach, and stop if not.
//  2. Build the login message for (kernelId, principal, nonce).
//  3. Sign it with the principal's ed25519 private key: pure Ed25519 as in
//     RFC 8032 (crypto/ed25519.Sign in Go, crypto_sign_detached in
//     libsodium), not Ed25519ph or Ed25519ctx. The signature is 64 bytes.
//  4. Call Gateway.login(principal, nonce, signature); get a Session bound
//     to the principal.
//
// A nonce is single-use (the first login presenting it consumes it, whatever
// the outcome), valid only for the principal it was issued to, on the
// connection it was issued on, and for a short time (30 s by default). A
// wrong signature, an unknown principal, and a nonce that is unknown, used or
// expired all fail with a "permission" error, without saying which; a nonce
// or signature of the wrong length, or an id containing a zero byte, fails
// with "invalid". Every login, successful or not, is on the ledger.
//
// # Errors
//
// The kernel answers a refused or failed call with a Cap'n Proto exception
// whose reason (in Go, the error's Error() string) starts with one of these
// kinds, a colon and a space, then a human-readable detail:
//
//	permission  the grant does not allow it: method not granted, argument out
//	            of range, outside the time window, rate limit hit, presence
//	            missing, not your grant, login failed
//	not-exist   no such path, principal, grant, seq or subject
//	revoked     the grant is dead: revoked, released, expired, uses spent, or
//	            the session that opened the gate has ended
//	invalid     malformed arguments (bad length, level above 100, ...)
//	overloaded  too many calls or challenges in flight; retry later
//
// for example "permission: setLevel: level 80 outside 0..60". Exceptions of
// kind overloaded have exception type overloaded, all others type failed;
// disconnected and unimplemented keep their Cap'n Proto meaning. Denials are
// recorded on the ledger with the same reason.
//
// # Reference ownership
//
// Capabilities in results belong to the caller, who releases them (in Go,
// Release on the client; releasing the result future releases what the
// caller did not AddRef). Capabilities a program passes as parameters
// (listeners, sinks) stay owned by the program; the kernel holds its own
// reference for as long as it needs one and releases it when the
// subscription ends. Releasing a gate reference does not give up the grant
// behind it: that is Session.release (ReleaseGrant in Go).
package schema
