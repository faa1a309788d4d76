# admin.capnp — the operator's and the auditor's view of the building and
# its ledger: topology, grants, the ledger tail, erasure, checkpoints and
# proofs.
#
# Ledger conventions: hashes are the raw 32-byte SHA-256 values of the
# RFC 6962 tree; CIDs are binary CIDv1 (sha2-256) as Data; checkpoints are
# C2SP signed notes (tlog-checkpoint) as Text, signed with the kernel's
# ed25519 key.

@0x8c576bf76355d06d;

using Go = import "/go.capnp";
$Go.package("schema");
$Go.import("github.com/osmose-os/osmose/schema");

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("osmose::schema");

using Grants = import "grants.capnp";
using Devices = import "devices.capnp";

# ---------------------------------------------------------------- Topology

enum PlaceKind {
  other @0;
  site @1;
  # A campus or site ("cambridge").

  building @2;
  floor @3;
  room @4;
  zone @5;
  # A part of a room (a desk, a chair, a corner).
}

struct Place {
  # A node of the physical containment tree: site ⊃ building ⊃ floor ⊃
  # room ⊃ zone.

  path @0 :Text;
  # The place path: segments from the outermost place inward, joined by
  # "/", e.g. "cambridge/pembroke/f1/r12".

  kind @1 :PlaceKind;

  label @2 :Text;
  # A human-readable name ("Room 12, Pembroke").
}

struct Device {
  # A device as the operator sees it.

  path @0 :Text;
  # The device path: its place path plus one segment naming the device,
  # e.g. "cambridge/pembroke/f1/r12/light-3".

  class @1 :Devices.DeviceClass;

  interfaceName @2 :Text;
  # The interface its capabilities have ("Light", "Sensor", ...).

  interfaceId @3 :UInt64;
  # That interface's Cap'n Proto type id.

  principal @4 :Text;
  # The principal id its device program logs in as; empty if none.

  online @5 :Bool;
  # The driver reaches the device now.

  label @6 :Text;
}

struct DeviceState {
  # What a device is doing now, as its driver last reported.

  device @0 :Device;

  lastSeen @1 :Int64;
  # When the driver last heard from the device, logical nanoseconds.

  summary @2 :Text;
  # One human-readable line ("on, 80 %", "21.5 °C → 22 °C heat").

  detail :union {
    # The class-specific state, where the class has one.
    none @3 :Void;
    light @4 :Devices.LightState;
    thermostat @5 :Devices.ThermostatState;
    reading @6 :Devices.Reading;
    # Any sensor: its latest reading.
    doorLock @7 :Devices.LockState;
    display @8 :Text;
    # The text on display.
    speaker @9 :Devices.SpeakerState;
    switch @10 :List(Bool);
    # Which buttons are held down.
    microphone @11 :UInt32;
    # Number of recordings running.
  }
}

# ---------------------------------------------------------------- Ledger

struct Checkpoint {
  # A signed statement of the ledger's Merkle tree at one size.

  note @0 :Text;
  # The C2SP signed note, complete: origin line, tree size, base64 root
  # hash, optional extension lines, blank line, signature lines. Verify it
  # with the kernel's public key (golang.org/x/mod/sumdb/note does).

  size @1 :UInt64;
  # Number of entries (leaves) in the tree; the same as in the note.

  rootHash @2 :Data;
  # The RFC 6962 root hash (32 bytes); the same as in the note.

  time @3 :Int64;
  # When it was signed, logical nanoseconds.
}

enum Decision {
  none @0;
  # Not an admission (grants, logins, checkpoints, ...).

  allowed @1;
  # The call was admitted.

  denied @2;
  # The call was refused; `reason` says why.
}

struct LedgerEntry {
  # A summary of one ledger envelope, for the live tail and traces. The
  # envelope itself (Auditor.entry) is what the tree commits to.

  seq @0 :UInt64;
  # The entry's sequence number: its position in the ledger's total order.

  cid @1 :Data;
  # The envelope's CID.

  kind @2 :Text;
  # "genesis", "login", "grant", "delegate", "revoke", "release", "call",
  # "return", "presence", "key-epoch", "redaction", ...

  actor @3 :Text;
  # The principal id that caused it (persons by pseudonym).

  grant @4 :Text;
  # The grant it concerns; empty if none.

  target @5 :Text;
  # The device or place path it concerns; empty if none.

  interfaceId @6 :UInt64;
  # For calls: the interface's type id; 0 otherwise.

  methodId @7 :UInt16;
  # For calls: the method's ordinal in that interface.

  method @8 :Text;
  # For calls: the method's name; empty otherwise.

  decision @9 :Decision;

  reason @10 :Text;
  # For denials: the error message the caller got ("permission: ...").

  time @11 :Int64;
  # The entry's logical time, nanoseconds.

  redacted @12 :Bool;
  # Its bodies have been erased (by Operator.forget).
}

interface EntryListener {
  # Implemented by a program that watches the ledger tail.

  entries @0 (entries :List(LedgerEntry), skipped :UInt64) -> ();
  # The next entries, in seq order. The kernel has at most one call
  # outstanding per watch; entries committed meanwhile go into the next
  # call. If the listener falls too far behind, the kernel skips entries and
  # `skipped` says how many were left out before this batch (read them with
  # Auditor.entry).
}

struct Body {
  # One body block of an envelope: the canonical Cap'n Proto bytes of a
  # call's params or results.

  cid @0 :Data;
  # The block's CID, as linked from the envelope.

  data @1 :Data;
  # The block's bytes; empty if redacted.

  redacted @2 :Bool;
  # The block was erased; the envelope's redaction entry lists it.
}

struct Envelope {
  # One ledger entry as committed.

  seq @0 :UInt64;

  cid @1 :Data;
  # The envelope's CID (CIDv1, dag-cbor, sha2-256).

  data @2 :Data;
  # The dag-cbor envelope bytes; they hash to `cid`.

  leafIndex @3 :UInt64;
  # The entry's leaf index in the RFC 6962 tree.

  bodies @4 :List(Body);
  # The body blocks it links to, in link order.
}

struct TraceQuery {
  # Which entries to trace, and a window of them.

  by :union {
    device @0 :Text;
    # Every entry on this device path.

    principal @1 :Text;
    # Every entry this principal acted in, or received a grant by.

    grant @2 :Text;
    # Every entry on this grant, and the grant/delegate entries of all its
    # ancestors, so the chain of who gave the power is included.
  }

  afterSeq @3 :UInt64;
  # Only entries with a greater seq; 0 = from the beginning. Pass the last
  # seq of one page to get the next.

  untilTime @4 :Int64;
  # Only entries up to this logical time; 0 = no bound.

  sinceTime @5 :Int64;
  # Only entries from this logical time on; 0 = no bound.

  limit @6 :UInt32;
  # At most this many entries; 0 = the kernel's page size (1000).
}

struct ForgetReport {
  # The outcome of erasing one data subject.

  seq @0 :UInt64;
  # The redaction entry's seq.

  bodies @1 :UInt64;
  # Number of body blocks erased.

  entries @2 :UInt64;
  # Number of envelopes whose bodies were erased; the envelopes stay.
}

interface Operator {
  # The operator's shell: the whole building, every grant, the ledger tail.
  # Reached by Session.operator; every call is itself on the ledger.

  places @0 (under :Text) -> (places :List(Place));
  # The places at or under place path `under` (empty = the whole topology),
  # outermost first.

  devices @1 (under :Text, classes :List(Devices.DeviceClass)) -> (devices :List(Device));
  # The devices at or under `under` (empty = everywhere), of the given
  # classes (empty = all), ordered by path.

  principals @2 (kinds :List(Grants.PrincipalKind)) -> (principals :List(Grants.Principal));
  # The principals of the given kinds (empty = all), ordered by id.

  grants @3 (holder :Text, target :Text) -> (grants :List(Grants.Grant));
  # Live grants, filtered by holder principal id and by target path (a
  # device path or a place to match every device under it); empty filters
  # match everything.

  grant @4 (to :Text, target :Text, classes :List(Devices.DeviceClass), caveats :Grants.Caveats)
        -> (grants :List(Grants.Grant));
  # Makes root grants to principal `to`: one on the device at `target`, or,
  # if `target` is a place, one on every device at or under it of the given
  # classes (empty = all). Errors: "not-exist" for an unknown principal or
  # path, "invalid" for caveats that do not fit the interface.

  revoke @5 (grant :Text) -> ();
  # Revokes any grant, with every grant delegated from it. Revoking a
  # revoked grant succeeds. Error "not-exist" for an unknown id.

  watch @6 (listener :EntryListener, backlog :UInt32) -> (subscription :Devices.Subscription);
  # Streams the ledger tail to `listener`: first the last `backlog` entries
  # (0 = none), then each entry as it is committed, until the subscription
  # is cancelled or released. The caller keeps ownership of `listener`.

  deviceState @7 (path :Text) -> (state :DeviceState);
  # The current state of one device. Error "not-exist" for an unknown path.

  forget @8 (subject :Text) -> (report :ForgetReport);
  # Erases a data subject (GDPR Art. 17): a person's pseudonym. Records a
  # signed redaction entry listing the removed bodies, deletes the bodies
  # and the subject's secrets, and revokes the subject's grants. Envelopes,
  # the tree and all checkpoints stay byte-identical. Error "not-exist" for
  # an unknown subject.

  setPolicy @9 (files :List(PolicyFile)) -> (summary :Text, revoked :List(Text));
  # Replaces the Cedar policy that decides what open and delegate grant.
  # Every file is parsed and type-checked first: on any error nothing
  # changes and the error ("invalid: ...") names each file, line and
  # reason. Then every standing grant is re-checked against the new policy
  # and those it would no longer give are revoked, with their subtrees
  # (`revoked`, grant ids). The change (the files' text), or its refusal,
  # is a "policy" entry on the ledger; the revocations a "revoke" entry.

  presence @10 (person :Text, place :Text, present :Bool) -> (revoked :List(Text));
  # Reports that a person (their principal id, a pseudonym) entered
  # (`present`) or left a place: the input of badge readers and presence
  # bridges. Leaving revokes every grant bound to the person's presence in
  # that place (`revoked`). The report is a "presence" entry whose bodies
  # are the person's data (erased with them); revocations are a separate
  # "revoke" entry. Error "not-exist" for a place or person the topology
  # does not have.
}

struct PolicyFile {
  # One Cedar policy file.

  name @0 :Text;
  # Where the text came from (a file name), for error messages.

  text @1 :Text;
}

interface Auditor {
  # Read-only access to the ledger, for verification and provenance. An
  # auditor needs nothing else but the kernel's public key.

  checkpoint @0 () -> (checkpoint :Checkpoint);
  # The latest signed checkpoint.

  inclusionProof @1 (seq :UInt64, size :UInt64)
                 -> (leafIndex :UInt64, leafHash :Data, hashes :List(Data));
  # Proves that entry `seq` is in the tree of `size` leaves (0 = the latest
  # checkpoint's size): the RFC 6962 audit path for its leaf, in the order
  # golang.org/x/mod/sumdb/tlog.CheckRecord expects. Error "not-exist" if
  # the entry is not in a tree of that size, "invalid" if `size` exceeds the
  # latest checkpoint.

  consistencyProof @2 (oldSize :UInt64, newSize :UInt64) -> (hashes :List(Data));
  # Proves that the tree of `oldSize` leaves is a prefix of the tree of
  # `newSize` (0 = the latest checkpoint's size): the RFC 6962 consistency
  # proof, as tlog.CheckTree expects. Error "invalid" unless
  # 0 < oldSize <= newSize <= the latest size.

  entry @3 (seq :UInt64) -> (envelope :Envelope);
  # The committed envelope with sequence number `seq`, its CID and bodies.
  # Error "not-exist" past the end of the ledger.

  trace @4 (query :TraceQuery) -> (entries :List(LedgerEntry));
  # The entries that concern a device, a principal or a grant, in seq
  # order, one page at a time.
}
