// Package ledger is osmose's IPLD Merkle ledger: the total order of every
// grant and every call in a building, in a form an auditor can check with
// nothing but the kernel's public key.
//
// # What it holds
//
// Each entry is an envelope, a dag-cbor IPLD node (CIDv1, sha2-256) that is
// permanent, plus up to two body blocks (params and result) that are not.
// Envelopes are chained by their prev link and are the leaves of an RFC 6962
// Merkle tree; the tree's size and root are signed as C2SP checkpoints.
// Bodies are linked from the envelope by CID; each body block carries a
// salt, so the CID in a permanent envelope reveals nothing of a body that has
// been erased. A body that carries a person's data is stored under that data
// subject's own key prefix and salted from the subject's own secret, so
// forgetting the subject removes all of it at once.
//
// # Envelope format, version 1
//
// An envelope is a dag-cbor map. Keys whose value is zero or empty are
// omitted, except v, seq, kind and t. Keys are in dag-cbor's canonical
// order; the ledger refuses non-canonical envelopes.
//
//	v       int     format version, 1
//	seq     int     position in the log, from 0 (the genesis entry)
//	prev    link    CID of the envelope at seq-1 (absent at seq 0)
//	kind    string  genesis, start, login, grant, delegate, revoke, release,
//	                call, return, presence, key-epoch, policy, redaction, ...
//	t       int     logical time of the event, ns since the Unix epoch
//	actor   string  principal that acted (device, app, operator, or a
//	                person's pseudonym)
//	grant   int     grant id the event happened under
//	dev     string  target device or place path
//	subj    string  pseudonym of the data subject whose data the bodies carry
//	iface   string  Cap'n Proto interface id, "0x" and 16 hex digits (as the
//	                schema language writes it; JSON-based tools lose 64-bit
//	                integers)
//	meth    int     method ordinal within iface
//	dec     string  "admit" or "deny" for a call
//	why     string  reason of a denial or a short note (never personal data)
//	ref     int     seq of a related entry
//	params  link    CID of the params body block
//	result  link    CID of the result body block
//
// A body block is the dag-cbor map {"d": bytes, "s": bytes}: d is the
// canonical Cap'n Proto encoding of the params or results, s a 16-byte salt
// (HMAC-SHA256 of the seq under a secret key: the kernel's for ordinary
// bodies, the subject's for personal ones). The genesis entry's params body
// is the ledger's metadata in JSON: format, origin and the checkpoint
// verifier key.
//
// The tree's leaf for entry seq is RecordHash(binary CID of its envelope),
// i.e. SHA-256(0x00 || CID bytes), and interior nodes are RFC 6962's, as
// golang.org/x/mod/sumdb/tlog computes them. A checkpoint is the signed note
//
//	<origin>
//	<tree size>
//	<base64 root hash>
//
//	— <origin> <base64 signature>
//
// signed by the kernel's ed25519 key (note.NewEd25519VerifierKey gives the
// verifier an auditor needs).
//
// # Storage
//
// The ledger sits on a go-datastore (Store) that can commit a set of writes
// atomically: Badger (OpenBadger) on disk, or MemStore in memory. Keys:
//
//	/l/meta              ledger metadata (JSON)
//	/l/head              durable size, root and last CID
//	/l/indexed           seq below which the stored index postings are complete
//	/l/erasure           the job record of an erasure under way (see Erasure)
//	/e/<first>/<n>       records of seqs first..first+n-1 (n a power of two ≤ 64,
//	                     first a multiple of n); a record is the envelope
//	                     block, then the entry's non-personal body blocks
//	/c/<byte>/<first seq>           envelope CID digest prefix -> seq, sorted runs
//	/t/<L>/<N>           tree hash tile N of tile level L (tlog tiles, height 8),
//	                     once full; before, its pieces /t/<L>/<N>/<first hash>,
//	                     each holding the hashes one batch added
//	/k/<size>            stored signed checkpoint
//	/i/<index>/<value>/<first seq>   index posting list (uvarint deltas)
//	/p/<pseudonym>/b/<seq>           a data subject's body blocks (both
//	                                 frames, zero-padded to 64 bytes)
//	/p/<pseudonym>/k                 the subject's 32-byte salt secret
//	/m/<byte>/<r>                    the mapping from the subject's id:
//	                                 HMAC-SHA256 of the id under a key
//	                                 derived from the kernel's, then the
//	                                 pseudonym; <byte> is the HMAC's first
//	                                 byte in hex, <r> 8 random bytes in hex
//	/p/<pseudonym>/m                 the key of the subject's mapping
//
// Every value stored for a subject is zero-padded to at least 64 bytes, so
// that Badger keeps it in its value log behind a pointer erasure can find
// (shorter values are stored inline in the LSM tree, and their copy in the
// log could not be found). No key names a subject's id or its HMAC.
//
// Indexes (by grant, principal, device, subject and kind) are derived from
// the envelopes: postings are buffered in memory and written every
// Options.IndexEvery entries, and the entries after the last write are
// re-indexed when the ledger opens.
//
// # Erasure
//
// Forget erases a data subject so that no byte of its bodies, its secret
// or its mapping is left in the store's files, while every envelope, the
// tree and every checkpoint stay byte-identical. Its steps (ForgetStep):
//
//  1. Locate: stop the subject's appends (ErrForgotten), wait for those
//     already queued, list the subject's keys, check each body against
//     the link its envelope holds, and ask the store (Badger) where each
//     stored version of those keys lies in its value log.
//  2. Job: in one synced transaction, write the job record under
//     /l/erasure (the pseudonym, the keys, the (seq, CID) of every body,
//     the value-log places; never the subject's id) and delete the
//     subject's secret and mapping. From here the erasure completes: a
//     later Forget, whatever subject it names, first finishes it.
//  3. Redact: append redaction entries (kind "redaction", no subject)
//     whose params body is {"removed": [{"seq": .., "cid": ".."}, ..]},
//     4096 bodies each, skipping bodies a redaction after the job's start
//     already lists.
//  4. Delete the subject's keys, in transactions of 256, and sync.
//  5. Scrub: overwrite the key and value of every located value-log record
//     with zeros in place, fix its CRC, and sync each file.
//  6. Done: delete the job record.
//
// The redaction entries are durable before any body is deleted, so Verify
// passes at every point of an erasure: a missing body is always listed.
// Verify also checks that every listed body is one its envelope links, and
// counts listed bodies still present (an interrupted erasure) as Unerased.
// The cost of each step grows with the subject's entries, not with the
// ledger: keys are deleted one by one (Badger's DropPrefix would rewrite
// the whole LSM tree), and value-log GC, whose cost follows the ledger, is
// never used. docs/erasure.md has the evidence and the measurements.
//
// # Group commit
//
// The lifecycle a caller follows:
//
//  1. Open the ledger on a store with the kernel's key (Open). A new store
//     gets its genesis entry; an existing one recovers to its last durable
//     batch: whatever a crash left half-written was never one transaction
//     and is not there.
//  2. Append entries from any number of goroutines. Append assigns the seq
//     at once, in call order, and queues the entry; it blocks only when
//     MaxPending entries are waiting (backpressure, never unbounded memory).
//     A caller that appends under a lock of its own takes the room first
//     (Reserve or TryReserve, then AppendReserved), or waits for room
//     before taking the lock (WaitRoom) and appends inside without waiting
//     (AppendNow, which goes beyond MaxPending rather than wait).
//  3. One encoder goroutine takes what is queued (at most MaxBatch entries),
//     builds envelopes, bodies, tree hashes and index postings in seq order,
//     and commits the batch as one store transaction. One sync goroutine
//     then makes every batch committed before its sync starts durable with
//     one sync of the store: on Badger, one fdatasync of its value log,
//     after whose end the store keeps zeros written so that a sync writes
//     the new data and nothing else (vlogTail). While a sync runs, the
//     next batches form, are encoded and are committed. The goroutine in
//     the sync keeps its P (GOMAXPROCS) for the whole sync, so a process
//     serving a busy ledger gives itself one P more (SyncProcs).
//  4. When its batch is durable, an entry's Pending is done: Wait returns
//     and the caller may answer whoever was waiting for the entry. With
//     Options.MeterProvider, each sync records its duration, and each
//     batch its size and its lag (from the append of its first entry
//     until it is durable); a gauge reports the entries pending. A
//     kernel's call waits for its return entry, so the lag is the part of
//     a call's latency that the ledger adds.
//  5. Read entries (Read, Lookup), prove inclusion and consistency
//     (ProveInclusion, ProveConsistency), sign a checkpoint of the durable
//     tree (Checkpoint), and Verify everything. List the data subjects
//     (Subjects) and forget one (Forget; see Erasure).
//  6. Close waits for every appended entry, writes the indexes and a final
//     checkpoint. Close the store after the ledger.
//
// The Merkle logic (treeBuilder) and the envelope encoding are pure; all
// effects (the store, goroutines) are in ledger.go.
package ledger
