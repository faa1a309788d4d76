package ledger

// Erasure: forgetting a data subject (see the package doc, "Erasure", and
// docs/erasure.md for the evidence behind the procedure).

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
)

// keyErasure holds the job record of an erasure under way.
var keyErasure = ds.RawKey("/l/erasure")

// ForgetOptions are the inputs of an erasure.
type ForgetOptions struct {
	// Time is the logical time of the redaction entries, ns since the
	// Unix epoch.
	Time int64
	// Actor is the principal that asked for the erasure (an operator);
	// it is written in the redaction entries. Default "ledger".
	Actor string
	// Progress, if not nil, is called as the erasure advances: after each
	// step, and within the delete and scrub steps as they go, with how
	// much of the step is done. It runs on the caller's goroutine.
	Progress func(step ForgetStep, done, total int)
}

// ForgetStep names a step of an erasure, in the order they run.
type ForgetStep string

// The steps of an erasure.
const (
	// StepLocate: the subject's bodies, their CIDs (checked against the
	// envelopes) and their value-log records are found; nothing is
	// written yet. done and total are the entries with bodies.
	StepLocate ForgetStep = "locate"
	// StepJob: the job record is durable, and the subject's secret and
	// mapping are deleted with it: from here the erasure completes, by a
	// re-run if this one is interrupted.
	StepJob ForgetStep = "job"
	// StepRedact: the redaction entries are durable.
	StepRedact ForgetStep = "redact"
	// StepDelete: done of total store keys are deleted.
	StepDelete ForgetStep = "delete"
	// StepScrub: done of total value-log records are overwritten.
	StepScrub ForgetStep = "scrub"
	// StepDone: the job record is deleted.
	StepDone ForgetStep = "done"
)

// Erasure reports what Forget removed.
type Erasure struct {
	// Pseudonym is the forgotten subject's pseudonym. The subject's id is
	// not known to the ledger.
	Pseudonym string `json:"pseudonym"`
	// Entries is the number of entries whose bodies were removed; their
	// envelopes stay.
	Entries int `json:"entries"`
	// Removed lists the body blocks removed, as the redaction entries do.
	Removed []RedactedBody `json:"removed"`
	// Redactions are the seqs of the redaction entries listing Removed
	// (one per 4096 bodies; none when the subject had no bodies).
	Redactions []uint64 `json:"redactions"`
	// Keys is the number of store keys deleted: the bodies, the secret
	// and the mapping.
	Keys int `json:"keys"`
	// ValueLog is true when the store keeps a value log (Badger), whose
	// records of the deleted keys were overwritten: Scrubbed records,
	// ScrubbedBytes bytes.
	ValueLog      bool  `json:"value_log"`
	Scrubbed      int   `json:"scrubbed"`
	ScrubbedBytes int64 `json:"scrubbed_bytes"`
	// Unlocated counts stored values erasure could not find in the value
	// log (values shorter than Badger's value threshold, written before
	// the ledger padded them): their keys are deleted, but a copy may
	// remain in the log.
	Unlocated int `json:"unlocated"`
	// Resumed is true when this erasure was the completion of one that an
	// earlier Forget began and could not finish (a crash, a kill).
	Resumed bool `json:"resumed"`
}

// redactionBatch bounds the bodies one redaction entry lists, so that its
// params body stays well under the ledger's body limit.
const redactionBatch = 4096

// Forget erases a data subject: every body that carries the subject's data
// is removed physically, the subject's salt secret and the mapping from
// its id are destroyed, and signed redaction entries list the removed
// bodies by (seq, CID) without naming the subject. The envelopes, the tree
// and every checkpoint stay byte-identical, so Verify still passes.
//
// subject is the pseudonym the ledger issued, or the subject's own id (as
// given to Pseudonym). An unknown subject is ErrUnknownSubject, a
// forgotten one ErrForgotten; neither changes anything.
//
// The subject's new entries are refused (ErrForgotten) from the moment
// Forget begins; entries appended before are made durable first. The
// erasure is crash-safe: once its job record is durable (StepJob), a
// later Forget, with any subject, first completes it, and Verify passes at
// every point in between. Its cost grows with the subject's entries, not
// with the ledger's size.
//
// On a Badger store the subject's keys are deleted and their value-log
// records are overwritten in place (docs/erasure.md); value-log GC must
// stay off. A store that wraps a BadgerStore hides its value log, and
// Erasure.ValueLog then reports that nothing was scrubbed.
func (l *Ledger) Forget(ctx context.Context, subject string, opts ForgetOptions) (*Erasure, error) {
	if l.signer == nil {
		return nil, fmt.Errorf("forget: %w", ErrReadOnly)
	}
	if opts.Actor == "" {
		opts.Actor = "ledger"
	}
	if opts.Progress == nil {
		opts.Progress = func(ForgetStep, int, int) {}
	}
	l.forgetMu.Lock()
	defer l.forgetMu.Unlock()
	job, err := l.loadJob(ctx)
	if err != nil {
		return nil, fmt.Errorf("forget: %w", err)
	}
	var resumed *Erasure
	if job != nil {
		l.mu.Lock()
		l.forgetting[job.subject] = true
		l.mu.Unlock()
		l.pmu.Lock()
		l.dropSubject(job.subject)
		l.pmu.Unlock()
		if resumed, err = l.runJob(ctx, job, opts); err != nil {
			return nil, fmt.Errorf("forget: complete the interrupted erasure of %s: %w", job.subject, err)
		}
		resumed.Resumed = true
	}
	p, err := l.resolveSubject(ctx, subject)
	if err != nil {
		// A subject whose erasure was just completed no longer resolves:
		// its pseudonym is forgotten and its id unknown.
		if resumed != nil && (subject == resumed.Pseudonym || !validPseudonym(subject) && errors.Is(err, ErrUnknownSubject)) {
			return resumed, nil
		}
		if resumed != nil {
			return nil, fmt.Errorf("forget: completed the interrupted erasure of %s, but %w", resumed.Pseudonym, err)
		}
		return nil, fmt.Errorf("forget: %w", err)
	}
	job, err = l.prepareJob(ctx, p, opts)
	if err != nil {
		return nil, fmt.Errorf("forget %s: %w", p, err)
	}
	opts.Progress(StepJob, 1, 1)
	rep, err := l.runJob(ctx, job, opts)
	if err != nil {
		return nil, fmt.Errorf("forget %s: %w (a later Forget completes it)", p, err)
	}
	return rep, nil
}

// eraseJob is an erasure's job record: everything a re-run needs to
// complete it once the subject's secret and mapping are gone. It names
// the pseudonym, never the subject's id.
type eraseJob struct {
	from    uint64 // ledger size when the job began: its redactions come after
	subject string // pseudonym
	mapping string // the mapping key, outside the subject's prefix ("" if none)
	keys    []string
	removed []redactedBlock
	records []vlogRecord
	inline  int // values that could not be located in the value log
}

type redactedBlock struct {
	seq uint64
	cid cid.Cid
}

// prepareJob stops the subject's appends, waits until those before are
// durable, locates everything to erase, and writes the job record with
// the deletion of the subject's secret and mapping. Once it has tried to
// write them, the subject stays refused and leaves memory, even if it
// fails.
func (l *Ledger) prepareJob(ctx context.Context, p string, opts ForgetOptions) (job *eraseJob, err error) {
	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		return nil, ErrClosed
	}
	l.forgetting[p] = true
	next := l.nextSeq
	l.mu.Unlock()
	committing := false
	defer func() {
		if err != nil && !committing { // nothing was written: the subject lives on
			l.mu.Lock()
			delete(l.forgetting, p)
			l.mu.Unlock()
		}
	}()
	for l.Size() < int64(next) {
		if _, err := l.WaitSize(ctx, int64(next)-1); err != nil {
			return nil, fmt.Errorf("wait for the subject's appended entries: %w", err)
		}
	}
	job = &eraseJob{from: uint64(l.Size()), subject: p}
	switch v, err := l.store.Get(ctx, ds.RawKey(subjectPrefix(p)+"m")); {
	case errors.Is(err, ds.ErrNotFound):
	case err != nil:
		return nil, err
	default:
		job.mapping = strings.TrimRight(string(v), "\x00")
		if !strings.HasPrefix(job.mapping, "/m/") {
			return nil, fmt.Errorf("%w: the mapping key of %s is %q", ErrCorrupt, p, job.mapping)
		}
	}
	if err := l.locateBodies(ctx, job); err != nil {
		return nil, err
	}
	if job.mapping != "" {
		job.keys = append(job.keys, job.mapping)
	}
	if vl, ok := l.store.(valueLog); ok {
		for _, loc := range []struct {
			prefix string
			exact  bool
		}{{subjectPrefix(p), false}, {job.mapping, true}} {
			if loc.prefix == "" {
				continue
			}
			recs, inline, err := vl.locateValues(loc.prefix, loc.exact)
			if err != nil {
				return nil, fmt.Errorf("locate value-log records: %w", err)
			}
			job.records = append(job.records, recs...)
			job.inline += inline
		}
	}
	entries := job.entries()
	opts.Progress(StepLocate, entries, entries)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// The job record, and the end of the subject as a writer knows it:
	// without its secret no entry can name it, without its mapping no id
	// finds it.
	l.pmu.Lock()
	defer l.pmu.Unlock()
	txn, err := l.store.NewTransaction(ctx, false)
	if err != nil {
		return nil, err
	}
	defer txn.Discard(ctx)
	if err := txn.Put(ctx, keyErasure, job.encode()); err != nil {
		return nil, fmt.Errorf("write the job record: %w", err)
	}
	for _, k := range []string{subjectPrefix(p) + "k", subjectPrefix(p) + "m", job.mapping} {
		if k == "" {
			continue
		}
		if err := txn.Delete(ctx, ds.RawKey(k)); err != nil {
			return nil, fmt.Errorf("delete %s: %w", k, err)
		}
	}
	// From here the job may be on disk: the subject stays refused, and
	// its secret leaves memory, whatever happens.
	committing = true
	defer l.dropSubject(p)
	if err := txn.Commit(ctx); err != nil {
		return nil, fmt.Errorf("write the job record: %w", err)
	}
	if err := l.store.Sync(ctx, ds.RawKey("/")); err != nil {
		return nil, fmt.Errorf("sync the job record: %w", err)
	}
	return job, nil
}

// locateBodies lists the subject's keys and, for each of its body values,
// the bodies' CIDs as the entry's envelope links them, checking that each
// stored body hashes to its link.
func (l *Ledger) locateBodies(ctx context.Context, job *eraseJob) error {
	p := job.subject
	bodyPrefix := subjectPrefix(p) + "b/"
	return queryPrefix(ctx, l.store, strings.TrimSuffix(subjectPrefix(p), "/"), false, func(key string, v []byte) (bool, error) {
		job.keys = append(job.keys, key)
		if !strings.HasPrefix(key, bodyPrefix) {
			return true, nil
		}
		seq, err := strconv.ParseUint(key[len(bodyPrefix):], 16, 64)
		if err != nil || len(key) != len(bodyPrefix)+16 || seq >= job.from {
			return false, fmt.Errorf("%w: personal body key %s", ErrCorrupt, key)
		}
		frames, err := splitPersonal(v)
		if err != nil {
			return false, fmt.Errorf("seq %d: %w", seq, err)
		}
		var envSeq uint64
		var subj string
		var params, result cid.Cid
		err = l.viewEnvelope(ctx, seq, func(block []byte) error {
			var err error
			if envSeq, subj, params, result, err = envelopeRefs(block); err != nil {
				env, derr := DecodeEnvelope(block)
				if derr != nil {
					return fmt.Errorf("%w: seq %d: %v", ErrCorrupt, seq, derr)
				}
				envSeq, subj, params, result = env.Seq, env.Subject, env.Params, env.Result
			}
			return nil
		})
		if err != nil {
			return false, err
		}
		if envSeq != seq {
			return false, fmt.Errorf("%w: seq %d holds the envelope of seq %d", ErrCorrupt, seq, envSeq)
		}
		if subj != p {
			return false, fmt.Errorf("%w: seq %d: a body is stored under %s, but the envelope names subject %q", ErrCorrupt, seq, p, subj)
		}
		for i, link := range [...]cid.Cid{params, result} {
			block := frames[i]
			switch {
			case !link.Defined() && len(block) == 0:
			case !link.Defined():
				return false, fmt.Errorf("%w: seq %d: a stored body the envelope does not link", ErrCorrupt, seq)
			case len(block) == 0:
				return false, fmt.Errorf("%w: seq %d: the envelope links a body %s that is not stored", ErrCorrupt, seq, link)
			case !blockCID(block).Equals(link):
				return false, fmt.Errorf("%w: seq %d: a stored body hashes to %s, the envelope links %s", ErrCorrupt, seq, blockCID(block), link)
			default:
				job.removed = append(job.removed, redactedBlock{seq, link})
			}
		}
		return true, nil
	})
}

// viewEnvelope calls fn with the envelope block of seq, valid only
// during fn: readRecord's way to the record, without copying the chunk or
// splitting all of it.
func (l *Ledger) viewEnvelope(ctx context.Context, seq uint64, fn func(block []byte) error) error {
	for n := maxChunk; n >= 1; n /= 2 {
		first := seq &^ uint64(n-1)
		err := viewValue(ctx, l.store, chunkKey(first, n), func(v []byte) error {
			for i := first; ; i++ {
				rl, k := binary.Uvarint(v)
				if k <= 0 || uint64(len(v)-k) < rl {
					return fmt.Errorf("%w: seq %d: chunk %d+%d: bad record framing", ErrCorrupt, seq, first, n)
				}
				rec := v[k : k+int(rl)]
				v = v[k+int(rl):]
				if i < seq {
					continue
				}
				el, k := binary.Uvarint(rec)
				if k <= 0 || uint64(len(rec)-k) < el {
					return fmt.Errorf("%w: seq %d: bad record", ErrCorrupt, seq)
				}
				return fn(rec[k : k+int(el)])
			}
		})
		if errors.Is(err, ds.ErrNotFound) {
			continue
		}
		return err
	}
	return fmt.Errorf("%w: seq %d: envelope missing", ErrCorrupt, seq)
}

func (j *eraseJob) entries() int {
	n := 0
	for i, b := range j.removed {
		if i == 0 || b.seq != j.removed[i-1].seq {
			n++
		}
	}
	return n
}

// runJob completes an erasure whose job record is durable: the redaction
// entries, the deletion of the subject's keys, the scrub of their
// value-log records, and the deletion of the job record. Each step is
// idempotent, so a re-run after a crash at any point completes the job.
func (l *Ledger) runJob(ctx context.Context, job *eraseJob, opts ForgetOptions) (*Erasure, error) {
	rep := &Erasure{Pseudonym: job.subject, Entries: job.entries(), Keys: len(job.keys), Unlocated: job.inline, Removed: make([]RedactedBody, len(job.removed))}
	for i, b := range job.removed {
		rep.Removed[i] = RedactedBody{Seq: b.seq, CID: b.cid.String()}
	}
	// 1. Redaction entries first: until they are durable every body is
	// still there, and from then on every missing body is listed, so the
	// ledger verifies at every point of the erasure.
	seqs, err := l.redact(ctx, job, opts)
	if err != nil {
		return nil, fmt.Errorf("append the redaction: %w", err)
	}
	rep.Redactions = append([]uint64{}, seqs...)
	opts.Progress(StepRedact, len(seqs), len(seqs))
	// 2. Delete the keys, durably, before any byte of their values is
	// overwritten.
	const perTxn = 256
	for i := 0; i < len(job.keys); i += perTxn {
		txn, err := l.store.NewTransaction(ctx, false)
		if err != nil {
			return nil, err
		}
		for _, k := range job.keys[i:min(i+perTxn, len(job.keys))] {
			if err := txn.Delete(ctx, ds.RawKey(k)); err != nil {
				txn.Discard(ctx)
				return nil, fmt.Errorf("delete %s: %w", k, err)
			}
		}
		if err := txn.Commit(ctx); err != nil {
			txn.Discard(ctx)
			return nil, fmt.Errorf("delete the subject's keys: %w", err)
		}
		txn.Discard(ctx)
		opts.Progress(StepDelete, min(i+perTxn, len(job.keys)), len(job.keys))
	}
	if err := l.store.Sync(ctx, ds.RawKey("/")); err != nil {
		return nil, fmt.Errorf("sync the deletion: %w", err)
	}
	// 3. Overwrite the value-log records.
	if vl, ok := l.store.(valueLog); ok {
		rep.ValueLog = true
		prefix := subjectPrefix(job.subject)
		accept := func(key []byte) bool {
			return strings.HasPrefix(string(key), prefix) || job.mapping != "" && string(key) == job.mapping
		}
		n, err := vl.scrubValues(job.records, accept, func(done int) { opts.Progress(StepScrub, done, len(job.records)) })
		if err != nil {
			return nil, fmt.Errorf("overwrite the value log: %w", err)
		}
		rep.Scrubbed, rep.ScrubbedBytes = len(job.records), n
	}
	// 4. Done.
	txn, err := l.store.NewTransaction(ctx, false)
	if err != nil {
		return nil, err
	}
	defer txn.Discard(ctx)
	if err := txn.Delete(ctx, keyErasure); err != nil {
		return nil, err
	}
	if err := txn.Commit(ctx); err != nil {
		return nil, fmt.Errorf("delete the job record: %w", err)
	}
	if err := l.store.Sync(ctx, ds.RawKey("/")); err != nil {
		return nil, fmt.Errorf("sync: %w", err)
	}
	opts.Progress(StepDone, 1, 1)
	return rep, nil
}

// redact appends the redaction entries of the job's bodies that no
// redaction entry after the job's start lists yet, and returns the seqs of
// every redaction entry listing them.
func (l *Ledger) redact(ctx context.Context, job *eraseJob, opts ForgetOptions) ([]uint64, error) {
	want := make(map[redactionKey]bool, len(job.removed))
	for _, b := range job.removed {
		want[redactionKey{b.seq, b.cid.KeyString()}] = true
	}
	listed := map[redactionKey]bool{}
	var seqs, earlier []uint64
	if err := l.Lookup(ctx, ByKind, string(KindRedaction), job.from, uint64(l.Size()), func(s uint64) bool {
		earlier = append(earlier, s)
		return true
	}); err != nil {
		return nil, err
	}
	for _, s := range earlier {
		r, err := l.readRecord(ctx, s)
		if err != nil {
			return nil, err
		}
		red, err := parseRedaction(r.Params())
		if err != nil {
			return nil, fmt.Errorf("seq %d: %w", s, err)
		}
		ours := false
		for _, b := range red.Removed {
			c, err := cid.Decode(b.CID)
			if err != nil {
				continue
			}
			if k := (redactionKey{b.Seq, c.KeyString()}); want[k] {
				listed[k], ours = true, true
			}
		}
		if ours {
			seqs = append(seqs, s)
		}
	}
	var pending []*Pending
	var batch []RedactedBody
	flush := func() error {
		body, err := json.Marshal(Redaction{Removed: batch})
		if err != nil {
			return err
		}
		p, err := l.Append(ctx, Entry{Kind: KindRedaction, Actor: opts.Actor, Time: opts.Time, Reason: "erasure", Params: body})
		if err != nil {
			return err
		}
		pending = append(pending, p)
		batch = nil
		return nil
	}
	for _, b := range job.removed {
		if listed[redactionKey{b.seq, b.cid.KeyString()}] {
			continue
		}
		batch = append(batch, RedactedBody{Seq: b.seq, CID: b.cid.String()})
		if len(batch) == redactionBatch {
			if err := flush(); err != nil {
				return nil, err
			}
		}
	}
	if len(batch) > 0 {
		if err := flush(); err != nil {
			return nil, err
		}
	}
	for _, p := range pending {
		if err := p.Wait(ctx); err != nil {
			return nil, err
		}
		seqs = append(seqs, p.Seq())
	}
	return seqs, nil
}

// loadJob returns the job record of an erasure under way, or nil.
func (l *Ledger) loadJob(ctx context.Context) (*eraseJob, error) {
	v, err := l.store.Get(ctx, keyErasure)
	if errors.Is(err, ds.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the erasure job record: %w", err)
	}
	job, err := decodeJob(v)
	if err != nil {
		return nil, fmt.Errorf("%w: erasure job record: %v", ErrCorrupt, err)
	}
	return job, nil
}

// PendingErasure returns the pseudonym of the subject whose erasure was
// interrupted and is not complete, or "". Forget completes it.
func (l *Ledger) PendingErasure(ctx context.Context) (string, error) {
	job, err := l.loadJob(ctx)
	if job == nil || err != nil {
		return "", err
	}
	return job.subject, nil
}

// The job record's encoding: a version byte (1), then uvarints and
// length-prefixed strings: from, subject, mapping, inline, the keys, the
// removed (seq, CID bytes), the records (fid, offset, length).
func (j *eraseJob) encode() []byte {
	b := []byte{1}
	str := func(s string) { b = binary.AppendUvarint(b, uint64(len(s))); b = append(b, s...) }
	b = binary.AppendUvarint(b, j.from)
	str(j.subject)
	str(j.mapping)
	b = binary.AppendUvarint(b, uint64(j.inline))
	b = binary.AppendUvarint(b, uint64(len(j.keys)))
	for _, k := range j.keys {
		str(k)
	}
	b = binary.AppendUvarint(b, uint64(len(j.removed)))
	for _, r := range j.removed {
		b = binary.AppendUvarint(b, r.seq)
		str(string(r.cid.Bytes()))
	}
	b = binary.AppendUvarint(b, uint64(len(j.records)))
	for _, r := range j.records {
		b = binary.AppendUvarint(b, uint64(r.Fid))
		b = binary.AppendUvarint(b, uint64(r.Offset))
		b = binary.AppendUvarint(b, uint64(r.Len))
	}
	return b
}

func decodeJob(b []byte) (*eraseJob, error) {
	if len(b) == 0 || b[0] != 1 {
		return nil, errors.New("unknown version")
	}
	b = b[1:]
	bad := false
	num := func() uint64 {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			bad = true
			return 0
		}
		b = b[n:]
		return v
	}
	str := func() string {
		n := num()
		if bad || n > uint64(len(b)) {
			bad = true
			return ""
		}
		s := string(b[:n])
		b = b[n:]
		return s
	}
	count := func() int { // a count is bounded by the bytes left
		n := num()
		if n > uint64(len(b)) {
			bad = true
			return 0
		}
		return int(n)
	}
	j := &eraseJob{from: num(), subject: str(), mapping: str(), inline: int(num())}
	for n := count(); n > 0 && !bad; n-- {
		j.keys = append(j.keys, str())
	}
	for n := count(); n > 0 && !bad; n-- {
		seq := num()
		c, err := cid.Cast([]byte(str()))
		if err != nil {
			bad = true
			break
		}
		j.removed = append(j.removed, redactedBlock{seq, c})
	}
	for n := count(); n > 0 && !bad; n-- {
		fid, off, ln := num(), num(), num()
		if fid > 1<<32-1 || off > 1<<32-1 || ln > 1<<32-1 {
			bad = true
		}
		j.records = append(j.records, vlogRecord{Fid: uint32(fid), Offset: uint32(off), Len: uint32(ln)})
	}
	if bad || len(b) != 0 || !validPseudonym(j.subject) {
		return nil, errors.New("malformed")
	}
	return j, nil
}

// envelopeRefs reads the seq, subject and body links of an envelope
// without building it, for the check erasure makes of each of the
// subject's entries. It accepts only the shapes appendEnvelope writes and
// checks neither version nor canonical form (Verify does); on anything
// else it fails, and the caller falls back to DecodeEnvelope.
func envelopeRefs(b []byte) (seq uint64, subj string, params, result cid.Cid, err error) {
	bad := errors.New("unexpected envelope shape")
	head := func() (major byte, arg uint64) {
		if len(b) == 0 {
			err = bad
			return 0, 0
		}
		major, info := b[0]>>5, b[0]&31
		b = b[1:]
		switch {
		case info < 24:
			return major, uint64(info)
		case info <= 27:
			n := 1 << (info - 24)
			if len(b) < n {
				err = bad
				return 0, 0
			}
			for _, c := range b[:n] {
				arg = arg<<8 | uint64(c)
			}
			b = b[n:]
			return major, arg
		}
		err = bad
		return 0, 0
	}
	bytesOf := func(n uint64) []byte {
		if err != nil || n > uint64(len(b)) {
			err = bad
			return nil
		}
		s := b[:n]
		b = b[n:]
		return s
	}
	major, n := head()
	if major != 5 {
		err = bad
	}
	for ; n > 0 && err == nil; n-- {
		km, kl := head()
		key := string(bytesOf(kl))
		if km != 3 {
			err = bad
		}
		vm, arg := head()
		switch vm {
		case 0, 1:
			if key == "seq" && vm == 0 {
				seq = arg
			}
		case 2:
			bytesOf(arg)
		case 3:
			if s := bytesOf(arg); key == "subj" {
				subj = string(s)
			}
		case 6:
			if arg != 42 {
				err = bad
			}
			lm, ll := head()
			raw := bytesOf(ll)
			if lm != 2 || len(raw) < 2 || raw[0] != 0 {
				err = bad
				break
			}
			c, cerr := cid.Cast(raw[1:])
			if cerr != nil {
				err = bad
			}
			switch key {
			case "params":
				params = c
			case "result":
				result = c
			}
		default:
			err = bad
		}
	}
	if err == nil && len(b) != 0 {
		err = bad
	}
	return seq, subj, params, result, err
}
