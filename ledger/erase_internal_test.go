package ledger

import (
	"context"
	"math/rand/v2"
	"testing"

	ds "github.com/ipfs/go-datastore"
)

// Hooks for the external tests (erase_test.go): the bytes of a subject
// that must leave the disk with it.

// SubjectSecretForTest returns the salt secret of pseudonym p.
func SubjectSecretForTest(ctx context.Context, l *Ledger, p string) []byte {
	v, err := l.store.Get(ctx, ds.RawKey(subjectPrefix(p)+"k"))
	if err != nil {
		return nil
	}
	return v[:subjectSecretLen]
}

// IDHashForTest returns the HMAC of a subject id the mapping stores.
func IDHashForTest(l *Ledger, id string) []byte { return l.idHash(id) }

// TestEnvelopeRefs: the scanner erasure uses reads the same seq, subject
// and links as DecodeEnvelope, over random envelopes.
func TestEnvelopeRefs(t *testing.T) {
	r := rand.New(rand.NewPCG(6, 6))
	for i := 0; i < 2000; i++ {
		env := randomEnvelope(r)
		block := appendEnvelope(nil, env)
		seq, subj, params, result, err := envelopeRefs(block)
		if err != nil || seq != env.Seq || subj != env.Subject || params != env.Params || result != env.Result {
			t.Fatalf("envelope %+v: scanned seq %d, subject %q, params %s, result %s, %v", env, seq, subj, params, result, err)
		}
		for cut := 0; cut < len(block); cut += 1 + r.IntN(7) {
			if _, _, _, _, err := envelopeRefs(block[:cut]); err == nil {
				t.Fatalf("a truncated envelope (%d of %d bytes) scanned", cut, len(block))
			}
		}
	}
}
