// Package replay re-executes a building's ledger from genesis, entry by
// entry, and checks that every recorded decision and every result of a
// deterministic driver comes out the same: the auditor's `osmose replay`,
// and time travel (`osmose state`: the state after any entry).
//
// # What replay re-derives, and what it takes as input
//
// The kernel's state after entry N is a function of entries 0..N. Replay
// rebuilds it with the kernel's own pure parts (the caps table, the
// kernel's interface catalog and its reasons, exported by package kernel
// for this) and the drivers of package drivers:
//
//   - start: a new kernel run; its reason names the first grant id (one
//     past the highest the ledger held) and its drivers start afresh.
//   - topology, policy (at start): the building and the policy the run's
//     caps table is built from; the table must accept them.
//   - grant, delegate: the request recorded in the params body (who asked
//     for what, with which caveats) is asked again of the table at the
//     recorded time: the decision, reason, grant id, ref and the grant body
//     (by CID) must match. A ledger of a kernel that did not record
//     requests is asked with what the grant got; its refusals are inputs.
//   - revoke, release: asked again (by the actor, with its cascade); the
//     list of grants ended must match. A revoke entry that refers to a
//     policy or presence change must list what that change revoked; one
//     that ends a forgotten person's grants (the kernel's Forget) must list
//     every live grant of theirs, with its subtree.
//   - policy (at run time), presence: SetPolicy, Enter and Leave again. A
//     person's presence whose body was erased is known by pseudonym only:
//     replay learns who it was from their login (which names their
//     pseudonym) or, failing that, from the first grant that could only
//     have been made with it, and replays it as theirs from then on.
//   - call: admitted or denied again, with the arguments the gate extracts
//     from the recorded params, through the same chain of checks as the
//     gate (ended grant, derived capability, caveats), with the same
//     reason; a device call must come from its grant's holder.
//   - return: with drivers (Options.Drivers), the call is run on a fresh
//     driver of its device and its result must hash to the recorded CID
//     (devices.go says what of the world is taken from the record). The
//     drivers' clock reads each call's recorded time, which is exact when
//     the kernel and its drivers share a logical clock (the simulator); a
//     ledger of other drivers replays with Drivers off.
//
// Inputs, taken as recorded: logins (the signature and nonce are not on
// the ledger), session ends, calls refused because their session had
// ended (which session a call came by is not recorded), the results of
// callbacks and subscriptions, the world's values in results, hardware
// failures, calls interrupted by their grant's end. Opaque steps: entries
// whose bodies an erasure removed (a redaction entry lists them). The
// Report counts each, by kind and by why.
//
// # Lifecycle
//
//  1. Open the ledger read-only and call Open with its store (the fast
//     reader reads the store's documented layout; nil reads through
//     Ledger.Read). Open reads the redaction lists.
//  2. Advance to a seq: each entry is read, decoded and applied in order;
//     the first entry that differs stops the replay with a *Divergence
//     naming its seq, what was recorded and what replay produced.
//  3. Read the Report (what was checked), and State (grants live, presence,
//     sessions, devices); Advance further and Compare two states for what
//     changed between two points.
//  4. Close releases the drivers.
//
// # Speed
//
// Three things run at once: a reader goroutine reads the store a chunk
// (64 entries) at a time and decodes envelopes with a decoder of the
// documented envelope format (cbor.go; fuzzed against
// ledger.DecodeEnvelope), the engine applies entries in order, and the
// drivers answer on their own goroutines while a checker compares their
// answers in order. A divergence the checker finds is reported with its
// own seq, before any later one the engine finds. BenchmarkReplay and
// `osmose bench replay` measure entries/s (BENCHMARKS.md).
package replay
