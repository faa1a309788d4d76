# grants.capnp — who holds what: principals, grants and the caveats that
# attenuate them.

@0x99f99783a8b43a56;

using Go = import "/go.capnp";
$Go.package("schema");
$Go.import("github.com/osmose-os/osmose/schema");

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("osmose::schema");

enum PrincipalKind {
  # What kind of party a principal is. The kind decides which interfaces a
  # session may reach beyond its grants (Session.operator, Session.auditor).

  unknown @0;
  # Not set. The kernel never reports it for a real principal.

  device @1;
  # A device program: the logic of a light, switch, sensor, lock, ...
  # Its id is usually its device path.

  person @2;
  # A person, known to the kernel only by a pseudonym handed out when they
  # badge in. The pseudonym is the principal id.

  app @3;
  # A building application (e.g. the meeting-room recorder).

  operator @4;
  # A building operator: may grant, revoke any grant and forget data
  # subjects through Session.operator.

  auditor @5;
  # An auditor: may read the ledger and its proofs through Session.auditor,
  # and nothing else.
}

struct Principal {
  # A party that can log in and hold grants.

  id @0 :Text;
  # The principal id, as given to Gateway.challenge and login. Never
  # contains a zero byte.

  kind @1 :PrincipalKind;

  label @2 :Text;
  # A human-readable name for the operator's screens ("Light 3, room 12").
  # Empty for persons: their only name here is the pseudonym.

  place @3 :Text;
  # Where the principal lives, as a place path ("cambridge/pembroke/f1/r12")
  # for devices; for persons the place they are present in right now, or
  # empty. Empty for other kinds.
}

struct Grant {
  # One capability grant: the right of one principal to call some methods of
  # one device's interface, under caveats. Grants form a tree: an operator's
  # grant is a root, and each delegation is a child with at most its
  # parent's power.

  id @0 :Text;
  # The grant id, assigned by the kernel and unique for the life of the
  # ledger. It is what delegate, revoke and release take, and what ledger
  # entries name.

  holder @1 :Text;
  # The principal id that holds the grant.

  grantor @2 :Text;
  # The principal id that gave it (an operator for root grants, the parent's
  # holder for delegations).

  parent @3 :Text;
  # The id of the grant this one was delegated from; empty for a root grant.

  target @4 :Text;
  # The device path the grant is on ("cambridge/pembroke/f1/r12/light-3").

  interfaceName @5 :Text;
  # The name of the target's interface as declared in these schemas
  # ("Light", "Thermostat", "Sensor", ...).

  interfaceId @6 :UInt64;
  # The Cap'n Proto type id of that interface (in Go, e.g. Light_TypeID).

  methods @7 :List(Text);
  # The methods the grant allows, by name as declared in the interface
  # ("set", "setLevel", "state"). Never empty for a live grant.

  caveats @8 :Caveats;
  # The effective caveats: the intersection of this grant's own caveats and
  # those of every ancestor.

  caveatsSummary @9 :Text;
  # The effective caveats in one human-readable line, for shells and logs,
  # e.g. "level 0..60; 08:00-18:00; 10/min; expires 2025-03-01T18:00Z".

  expiresAt @10 :Int64;
  # When the grant expires, in logical nanoseconds (see doc.go); 0 = never.
  # Equal to caveats.expiresAt, repeated for convenience.

  createdAt @11 :Int64;
  # When the grant was made, in logical nanoseconds.

  seq @12 :UInt64;
  # The sequence number of the ledger entry that made the grant.
}

struct Caveats {
  # Restrictions on a grant. Every field narrows; an unset or zero field
  # restricts nothing. Caveats only ever narrow along a delegation chain:
  # the effective caveats of a grant are the intersection of its own and its
  # ancestors'. A call that breaks a caveat is denied with "permission" (or
  # "revoked" once the grant has expired or its uses are spent) and the
  # denial is recorded on the ledger.

  methods @0 :List(Text);
  # Method subset: only these methods, by name, may be called. Empty = every
  # method the grant already allows.

  ranges @1 :List(ArgRange);
  # Argument ranges: every listed parameter must lie within its range.

  expiresAt @2 :Int64;
  # Expiry in logical nanoseconds (see doc.go); 0 = no expiry. From this
  # instant on the grant is dead.

  window @3 :TimeWindow;
  # Time-of-day window; unset = any time of day.

  rate @4 :RateLimit;
  # Rate limit; unset = unlimited.

  maxUses @5 :UInt64;
  # Maximum number of admitted calls over the life of the grant; 0 =
  # unlimited, 1 = one-time. Denied calls do not count.

  place @6 :Text;
  # Place scope: the grant works only on devices at or under this place
  # path; empty = no scope.

  noReshare @7 :Bool;
  # If true the holder may not delegate the grant further.

  presence @8 :Presence;
  # Presence binding; unset = not bound. The grant works only while the
  # person is present in the place, and is revoked when they leave.
}

struct ArgRange {
  # A closed interval that a numeric method parameter must lie in.

  method @0 :Text;
  # The method name; empty = every allowed method that has a parameter
  # called `field`.

  field @1 :Text;
  # The parameter name as declared in the schema, e.g. "level" of
  # Light.setLevel or "celsius" of Thermostat.setSetpoint.

  min @2 :Float64;
  # Inclusive lower bound.

  max @3 :Float64;
  # Inclusive upper bound.
}

struct TimeWindow {
  # A daily window of building-local time (the kernel's configured zone).
  # Calls outside it are denied.

  startMinute @0 :UInt16;
  # Start, in minutes from midnight (0..1439), inclusive.

  endMinute @1 :UInt16;
  # End, in minutes from midnight (0..1440), exclusive. If end < start the
  # window wraps past midnight (e.g. 22:00-06:00 is 1320..360).
}

struct RateLimit {
  # At most `calls` admitted calls in any sliding period of `periodNs`.

  calls @0 :UInt32;

  periodNs @1 :Int64;
  # The period in nanoseconds of logical time.
}

struct Presence {
  # A binding of a grant to a person being somewhere.

  person @0 :Text;
  # The person's pseudonym (their principal id).

  place @1 :Text;
  # The place path they must be present in (at or under).
}
