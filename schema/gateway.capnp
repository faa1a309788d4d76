# gateway.capnp — how a program gets in: the bootstrap Gateway, the login
# challenge, and the Session that a login returns.
#
# The bootstrap capability of every connection to an osmose kernel is a
# Gateway. Its only power is logging in; everything else is reached through
# the Session it returns. See doc.go for the byte-exact login protocol.

@0x859bf8034e46e468;

using Go = import "/go.capnp";
$Go.package("schema");
$Go.import("github.com/osmose-os/osmose/schema");

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("osmose::schema");

using Grants = import "grants.capnp";
using Devices = import "devices.capnp";
using Admin = import "admin.capnp";

const loginDomain :Data = 0x"6f736d6f73652d6c6f67696e2d763100";
# The 16 bytes that begin every signed login message: the ASCII string
# "osmose-login-v1" followed by one zero byte. A future, incompatible login
# protocol changes the version number in this string.

const nonceSize :UInt32 = 32;
# Length in bytes of every nonce that Gateway.challenge returns.

const signatureSize :UInt32 = 64;
# Length in bytes of an ed25519 signature, as Gateway.login expects it.

interface Gateway {
  # The bootstrap capability of a kernel connection. Its only power is
  # logging in by challenge–response with the principal's ed25519 key.
  #
  # The message to sign is exactly
  #
  #   loginDomain || kernelId || 0x00 || principal || 0x00 || nonce
  #
  # (kernelId and principal as UTF-8 without terminator, nonce as the 32 raw
  # bytes challenge returned), signed with pure Ed25519 (RFC 8032, not
  # Ed25519ph or Ed25519ctx). The Go helper schema.LoginMessage builds it.

  challenge @0 (principal :Text) -> (nonce :Data, kernelId :Text);
  # Starts a login as `principal` (a principal id, e.g. a device path such
  # as "cambridge/pembroke/f1/r12/light-3" or a person's pseudonym). Returns
  # a fresh random nonce of nonceSize bytes and the kernel's id, the string
  # that goes into the signed message.
  #
  # The nonce is single-use: the first login that presents it consumes it,
  # whatever the outcome. It expires after a short, kernel-configured time
  # (30 s by default) and is valid only for this principal on this Gateway
  # (that is, this connection).
  #
  # kernelId is returned for convenience. A client that knows which kernel it
  # meant to reach (it should: it is configured with the kernel's public key
  # and id) must compare and refuse to sign for another id; otherwise a
  # relaying kernel could use its signature to log in elsewhere.
  #
  # The kernel answers a challenge for any well-formed principal id, known or
  # not, so that challenge does not reveal which principals exist. Errors:
  # "invalid" (empty id, or one containing a zero byte), "overloaded" (too
  # many outstanding challenges).

  login @1 (principal :Text, nonce :Data, signature :Data) -> (session :Session);
  # Completes a login: `signature` is the principal's ed25519 signature over
  # the login message for (kernelId, principal, nonce). Returns a Session
  # bound to the principal; its authority is fixed here and never looked up
  # again from anything but the kernel's grant table.
  #
  # Errors: "permission" for a wrong signature, an unknown principal, and a
  # nonce that was never issued, was already used or has expired (the kernel
  # does not say which, and records the failed attempt on the ledger);
  # "invalid" for a nonce or signature of the wrong length.
}

interface Session {
  # The authority of one logged-in principal. Every capability obtained
  # through a Session is a kernel gate around the device's driver: each call
  # is checked against the grant's caveats and recorded on the ledger before
  # it reaches the device.
  #
  # The session lasts while the Session capability is held and its
  # connection is up. When it ends, the gates it handed out stop working
  # (calls fail with "revoked"); the grants themselves stay, and a new
  # session of the same principal can open them again.

  whoAmI @0 () -> (principal :Grants.Principal);
  # The principal this session is bound to.

  list @1 () -> (grants :List(Grants.Grant));
  # Every live grant this principal holds: grant id, target path,
  # interface, methods, effective caveats and expiry. Revoked, released and
  # expired grants are not listed.

  open @2 (path :Text, classes :List(Devices.DeviceClass), caveats :Grants.Caveats)
       -> (caps :List(Held));
  # Opens capabilities on the devices the principal holds grants for.
  #
  # `path` is a device path ("cambridge/pembroke/f1/r12/light-3"), which
  # yields at most one capability, or a place path
  # ("cambridge/pembroke/f1/r12"), which yields one capability for every
  # device at or under that place that the principal holds a live grant on.
  # `classes` filters by device class; empty means every class. So "all the
  # lights of room 12" is open("cambridge/pembroke/f1/r12", [light]).
  #
  # `caveats`, if set, narrows the returned gates further (it never widens a
  # grant): useful to hand a sub-program a one-shot or rate-limited view.
  #
  # The caller owns each returned capability and releases it when done;
  # releasing a capability reference does not give up the grant (see
  # release). Errors: "not-exist" for an unknown path, "permission" for a
  # device path the principal holds no grant on. A place under which no
  # device matches gives an empty list.

  delegate @3 (grant :Text, to :Text, caveats :Grants.Caveats) -> (grant :Grants.Grant);
  # Gives principal `to` a new grant derived from grant `grant`, which this
  # principal holds, with at most the same power: the new grant's caveats are
  # the intersection of the held grant's caveats and `caveats` (method
  # subset, argument ranges, expiry, time window, rate, uses, place,
  # presence; noReshare set in either stays set). Returns the new grant; its
  # id is what revoke takes.
  #
  # Errors: "permission" if the held grant has noReshare set or is not held
  # by this principal; "revoked" if it is no longer live; "not-exist" for an
  # unknown recipient; "invalid" for caveats that name methods or fields the
  # interface lacks, or that could never be satisfied.

  revoke @4 (grant :Text) -> ();
  # Revokes a grant that this principal gave (by delegate), or any grant
  # delegated further from one it gave. Revocation cascades: every grant
  # delegated from the revoked one is revoked in the same ledger entry, and
  # every gate on them fails with "revoked" from the next admission on.
  # Errors: "permission" for a grant outside this principal's delegations,
  # "not-exist" for an unknown id. Revoking a revoked grant succeeds.

  release @5 (grant :Text) -> () $Go.name("releaseGrant");
  # (In Go the method is ReleaseGrant: Release is taken by capnp.Client.)
  # Gives up a grant this principal holds. It ends as if revoked: grants
  # delegated from it are revoked too, and gates on it fail with "revoked".
  # Errors: "permission" if this principal does not hold it.

  checkpoint @6 () -> (checkpoint :Admin.Checkpoint);
  # The kernel's latest signed ledger checkpoint. Any principal may read it,
  # to later check proofs of what was done with its grants.

  operator @7 () -> (operator :Admin.Operator);
  # The operator interface. Error "permission" unless the principal's kind
  # is operator.

  auditor @8 () -> (auditor :Admin.Auditor);
  # The read-only auditor interface. Error "permission" unless the
  # principal's kind is auditor or operator.

  logout @9 () -> ();
  # Ends the session: every capability it opened stops working, and the
  # end is a "logout" entry, durable when this returns. A session that is
  # dropped without logout, or whose connection goes down, ends as
  # "logout" or "disconnect" depending on which the kernel sees first; a
  # program that wants its ledger to say which calls logout, then closes.
}

struct Held {
  # One capability returned by Session.open, with the grant behind it.

  cap @0 :Capability;
  # The gate: an interface pointer of the interface grant.interfaceId names
  # (Light, Thermostat, Sensor, ...). Cast it to that interface; calling a
  # method the grant does not allow fails with "permission".

  grant @1 :Grants.Grant;
  # The grant this gate enforces.
}
