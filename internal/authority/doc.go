// Package authority explains power from the ledger alone: it folds the
// kernel's grant, delegate, revoke and release entries, in seq order, into
// the history of every grant (who holds it, on what, with which methods and
// caveats, derived from which grant, made when and by whom, ended when, why
// and by whom), and answers two questions an auditor asks: who holds live
// power over a device or place at a given point of the ledger, and through
// which chain of grants back to the policy.
//
// # Who calls it
//
// cmd/osmose (`osmose caps who`, `osmose caps why`), with entries read from
// a ledger opened read-only; tests, with hand-made entries. The package is
// pure: no I/O, no clock, no goroutines. It imports ledger (for the
// envelope) and schema (to decode grant bodies).
//
// # Lifecycle
//
//  1. New returns an empty History.
//  2. For each seq of Kinds (ledger.Lookup with ByKind, merged in ascending
//     seq order, up to the point of interest), read the record and call
//     Apply with its envelope and body data. Apply refuses a seq that is not
//     after the last one applied. Entries of other kinds are ignored, so a
//     caller may also feed every entry.
//  3. Ask: Grant (one grant's record), Chain (a grant and its ancestors, to
//     the root), Holders (the grants live over a path at a point),
//     Touches (whether any grant ever targeted a path).
//
// # What the ledger says, and how it is read
//
// A "grant" entry (decision admit) makes a root grant: the policy decided
// it. Its envelope names the grant id, the target device, the interface and
// the actor who asked (the principal that opened it, or an operator who
// granted it to someone); its Reason is the policy's decision in words,
// "permitted by FILE:LINE, ..." (the ids of the Cedar policies that
// permitted it); its result body is the canonical Cap'n Proto schema.Grant
// (holder, grantor "policy", methods, effective caveats, expiry).
//
// A "delegate" entry makes a child: the actor is the delegator (the
// parent's holder), Ref is the seq of the parent's entry, the Reason is
// "delegated from gN[, permitted by ...]" and the result body is the
// child's schema.Grant, whose parent field names the parent.
//
// A "revoke" or "release" entry (decision admit) ends grants: its params
// body lists every grant it ended ("g2 g3": a revocation's cascade, root
// first; a release's one grant), its actor is who did it, its Reason why
// ("revoked by op"), its Grant the grant it was asked about. The same
// convention is honoured for "presence" and "policy" entries, should the
// kernel record revocations caused by a person leaving or a policy change.
// Denied entries change nothing.
//
// A grant whose effective caveats carry an expiry is not live from that
// logical time on: Holders takes the logical time of the point of interest
// for that.
//
// # Limits
//
// What the ledger does not record is not inferred:
//
//   - A restarted kernel honours no grant of its earlier run (holders open
//     again), but writes no entry that says so: grants made before a
//     restart and never ended on the ledger read as live.
//   - Uses and rate: a one-time grant whose use is spent still reads as
//     live (its later calls are denied on the ledger).
//   - Presence: a presence-bound grant reads as live until an entry ends
//     it; the kernel does not yet record people entering or leaving.
//   - The policy itself: entries name the policies that permitted a grant
//     (file and line) but not their text, nor the request context the
//     policy saw.
package authority
