package ledger

// Data subjects: pseudonyms, their secrets and the mapping from a subject's
// own id. The erasure that destroys them is in erase.go.

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	ds "github.com/ipfs/go-datastore"
)

// Errors about data subjects that callers branch on.
var (
	// ErrUnknownSubject: the ledger never issued the pseudonym, or knows
	// no subject by that id (a forgotten subject's id is not kept).
	ErrUnknownSubject = errors.New("unknown data subject")
	// ErrForgotten: the subject has been forgotten (or is being forgotten):
	// its bodies are gone, its secret and mapping destroyed.
	ErrForgotten = errors.New("data subject forgotten")
)

// minSubjectValue is the least size of every value stored for a data
// subject (secret, mapping): as with personal bodies (minPersonalValue),
// a value at least this long lives in Badger's value log behind a pointer
// erasure can find, never inline in the LSM tree with an unfindable copy in
// the log. Shorter values are padded with zeros.
const minSubjectValue = 64

func padValue(v []byte) []byte {
	for len(v) < minSubjectValue {
		v = append(v, 0)
	}
	return v
}

// subjectSecretLen is the length of a subject's salt secret.
const subjectSecretLen = 32

// idHash is the HMAC of a subject's id under the ledger's salt key: the
// only form in which the ledger ever holds the id.
func (l *Ledger) idHash(subjectID string) []byte {
	m := hmac.New(sha256.New, l.salt)
	m.Write([]byte("subject id\x00"))
	m.Write([]byte(subjectID))
	return m.Sum(nil)
}

// The mapping from a subject's id to its pseudonym is one key per subject,
//
//	/m/<bucket>/<r> -> idHash (32 bytes) || pseudonym, zero-padded to 64
//
// where bucket is the first byte of idHash in hex and r is 8 random bytes
// in hex. The key names neither the id's hash nor the pseudonym, so the
// tombstone an erasure leaves behind (in the LSM tree until compaction)
// says only that some subject of one 256th of all ids was forgotten.
// Finding an id's pseudonym reads the bucket's values.
func mappingPrefix(h []byte) string { return "/m/" + hex.EncodeToString(h[:1]) }

// legacyMappingKey is where ledgers written before the bucketed mapping
// kept it: /m/<idHash in hex> -> pseudonym (unpadded, so inline in
// Badger's LSM tree: erasure reports such values as unlocated).
func legacyMappingKey(h []byte) string { return "/m/" + hex.EncodeToString(h) }

// findMapping returns the pseudonym and mapping key of an id hash, or "".
func (l *Ledger) findMapping(ctx context.Context, h []byte) (pseudonym, key string, err error) {
	switch v, err := l.store.Get(ctx, ds.RawKey(legacyMappingKey(h))); {
	case err == nil && validPseudonym(string(v)):
		return string(v), legacyMappingKey(h), nil
	case err != nil && !errors.Is(err, ds.ErrNotFound):
		return "", "", err
	}
	err = queryPrefix(ctx, l.store, mappingPrefix(h), false, func(k string, v []byte) (bool, error) {
		if len(v) < sha256.Size || !hmac.Equal(v[:sha256.Size], h) {
			return true, nil
		}
		p := string(bytes.TrimRight(v[sha256.Size:], "\x00"))
		if !validPseudonym(p) {
			return false, fmt.Errorf("%w: mapping %s holds no pseudonym", ErrCorrupt, k)
		}
		pseudonym, key = p, k
		return false, nil
	})
	return pseudonym, key, err
}

// Pseudonym returns the pseudonym of a data subject, creating it (with the
// subject's secret) on first use. The subject's own identifier is never
// stored: only an HMAC of it under the ledger's key, in a value erasure
// overwrites. Creating a pseudonym is one synced store transaction.
func (l *Ledger) Pseudonym(ctx context.Context, subjectID string) (string, error) {
	if l.signer == nil {
		return "", ErrReadOnly
	}
	if subjectID == "" {
		return "", errors.New("pseudonym: empty subject id")
	}
	h := l.idHash(subjectID)
	if p, ok := l.idCache.Load(string(h)); ok {
		return p.(string), nil
	}
	l.pmu.Lock()
	defer l.pmu.Unlock()
	p, _, err := l.findMapping(ctx, h)
	if err != nil {
		return "", fmt.Errorf("pseudonym: %w", err)
	}
	if p != "" {
		l.idCache.Store(string(h), p)
		return p, nil
	}
	// The pseudonym and secret are drawn first, as they always were, so a
	// seeded Rand gives the same pseudonyms as before the mapping's key
	// was random too.
	var rnd [8 + subjectSecretLen + 8]byte
	if _, err := io.ReadFull(l.opts.Rand, rnd[:]); err != nil {
		return "", fmt.Errorf("pseudonym: %w", err)
	}
	p = "p-" + hex.EncodeToString(rnd[:8])
	secret := rnd[8 : 8+subjectSecretLen]
	mkey := mappingPrefix(h) + "/" + hex.EncodeToString(rnd[8+subjectSecretLen:])
	txn, err := l.store.NewTransaction(ctx, false)
	if err != nil {
		return "", err
	}
	defer txn.Discard(ctx)
	for _, w := range []kv{
		{ds.RawKey(mkey), padValue(append(append([]byte(nil), h...), p...))},
		{ds.RawKey(subjectPrefix(p) + "k"), padValue(append([]byte(nil), secret...))},
		{ds.RawKey(subjectPrefix(p) + "m"), padValue([]byte(mkey))},
	} {
		if err := txn.Put(ctx, w.key, w.value); err != nil {
			return "", fmt.Errorf("pseudonym: %w", err)
		}
	}
	if err := txn.Commit(ctx); err != nil {
		return "", fmt.Errorf("pseudonym: %w", err)
	}
	if err := l.store.Sync(ctx, ds.RawKey("/")); err != nil {
		return "", fmt.Errorf("pseudonym: %w", err)
	}
	l.subjects.Store(p, append([]byte(nil), secret...))
	l.idCache.Store(string(h), p)
	return p, nil
}

// dropSubject forgets what memory holds of pseudonym p: its secret and
// the id hash that maps to it. Call it with pmu held, once the mapping is
// deleted, so that no Pseudonym caches the mapping again.
func (l *Ledger) dropSubject(p string) {
	l.subjects.Delete(p)
	l.idCache.Range(func(h, q any) bool {
		if q == p {
			l.idCache.Delete(h)
		}
		return true
	})
	l.forgets.Add(1) // and the encoder its salter
}

// loadSubject caches the secret of pseudonym p.
func (l *Ledger) loadSubject(ctx context.Context, p string) error {
	v, err := l.store.Get(ctx, ds.RawKey(subjectPrefix(p)+"k"))
	if errors.Is(err, ds.ErrNotFound) {
		return fmt.Errorf("%w: %s", ErrUnknownSubject, p)
	}
	if err != nil {
		return err
	}
	if len(v) < subjectSecretLen {
		return fmt.Errorf("%w: the secret of %s is %d bytes", ErrCorrupt, p, len(v))
	}
	// An erasure that began meanwhile has dropped, or will drop, the
	// secret from memory: it must not come back.
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.forgetting[p] {
		return fmt.Errorf("%w: %s", ErrForgotten, p)
	}
	l.subjects.Store(p, v[:subjectSecretLen])
	return nil
}

// hasSecret reports whether pseudonym p's secret is stored.
func (l *Ledger) hasSecret(ctx context.Context, p string) (bool, error) {
	return l.store.Has(ctx, ds.RawKey(subjectPrefix(p)+"k"))
}

// ResolveSubject returns the pseudonym of subject, a pseudonym the ledger
// issued or a subject's own id, without creating one: ErrUnknownSubject
// for a subject the ledger does not know, ErrForgotten for one it forgot.
func (l *Ledger) ResolveSubject(ctx context.Context, subject string) (string, error) {
	return l.resolveSubject(ctx, subject)
}

// resolveSubject returns the pseudonym of subject, which is either a
// pseudonym the ledger issued or a subject's own id.
func (l *Ledger) resolveSubject(ctx context.Context, subject string) (string, error) {
	if subject == "" {
		return "", fmt.Errorf("%w: empty subject", ErrUnknownSubject)
	}
	if validPseudonym(subject) {
		ok, err := l.hasSecret(ctx, subject)
		if err != nil {
			return "", err
		}
		if ok {
			return subject, nil
		}
	}
	if l.salt != nil {
		p, _, err := l.findMapping(ctx, l.idHash(subject))
		if err != nil {
			return "", err
		}
		if p != "" {
			return p, nil
		}
	}
	if validPseudonym(subject) {
		named := false
		if err := l.Lookup(ctx, BySubject, subject, 0, uint64(l.Size()), func(uint64) bool { named = true; return false }); err != nil {
			return "", err
		}
		if named {
			return "", fmt.Errorf("%w: %s already was (its entries stay, their bodies are gone, its secret and mapping are destroyed)", ErrForgotten, subject)
		}
		return "", fmt.Errorf("%w: the ledger never issued the pseudonym %s", ErrUnknownSubject, subject)
	}
	return "", fmt.Errorf("%w: no subject has the id %q (the ledger keeps no forgotten subject's id; `osmose people` lists the pseudonyms)", ErrUnknownSubject, subject)
}

// Subject is one data subject as Subjects lists them.
type Subject struct {
	Pseudonym string `json:"pseudonym"`
	// Entries is the number of durable entries whose envelope names the
	// subject (Envelope.Subject).
	Entries int `json:"entries"`
	// State is "live", "forgotten" (bodies removed, secret and mapping
	// destroyed; the envelopes stay), or "erasing" (an erasure was
	// interrupted: re-run Forget to complete it).
	State string `json:"state"`
}

// Subject states.
const (
	SubjectLive      = "live"
	SubjectForgotten = "forgotten"
	SubjectErasing   = "erasing"
)

// Subjects lists the ledger's data subjects by pseudonym, with their entry
// counts: every subject with a mapping, and every pseudonym an envelope
// names. It reads the subject index and the mapping, so it needs no key;
// its cost grows with the number of personal entries, not with the ledger.
func (l *Ledger) Subjects(ctx context.Context) ([]Subject, error) {
	counts, err := l.IndexValues(ctx, BySubject)
	if err != nil {
		return nil, fmt.Errorf("list subjects: %w", err)
	}
	all := map[string]bool{}
	for p := range counts {
		all[p] = true
	}
	err = queryPrefix(ctx, l.store, "/m", false, func(k string, v []byte) (bool, error) {
		if validPseudonym(string(v)) { // the legacy mapping
			all[string(v)] = true
			return true, nil
		}
		if len(v) < sha256.Size {
			return false, fmt.Errorf("%w: mapping %s", ErrCorrupt, k)
		}
		p := string(bytes.TrimRight(v[sha256.Size:], "\x00"))
		if !validPseudonym(p) {
			return false, fmt.Errorf("%w: mapping %s holds no pseudonym", ErrCorrupt, k)
		}
		all[p] = true
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("list subjects: %w", err)
	}
	erasing := ""
	if job, err := l.loadJob(ctx); err != nil {
		return nil, fmt.Errorf("list subjects: %w", err)
	} else if job != nil {
		erasing = job.subject
		all[erasing] = true
	}
	out := make([]Subject, 0, len(all))
	for p := range all {
		s := Subject{Pseudonym: p, Entries: counts[p], State: SubjectLive}
		switch ok, err := l.hasSecret(ctx, p); {
		case err != nil:
			return nil, fmt.Errorf("list subjects: %w", err)
		case p == erasing:
			s.State = SubjectErasing
		case !ok:
			s.State = SubjectForgotten
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return strings.Compare(out[i].Pseudonym, out[j].Pseudonym) < 0 })
	return out, nil
}
