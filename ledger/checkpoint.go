package ledger

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Checkpoint is a signed statement of the tree's size and root hash, in the
// C2SP tlog-checkpoint format (https://c2sp.org/tlog-checkpoint):
//
//	<origin>
//	<size>
//	<base64 root hash>
//
//	— <key name> <base64 key hash and ed25519 signature>
type Checkpoint struct {
	Origin string
	Size   int64
	Root   tlog.Hash
	Note   []byte // the signed note text
}

// ed25519Signer implements note.Signer over an ed25519 key.
type ed25519Signer struct {
	name string
	hash uint32
	key  ed25519.PrivateKey
}

func (s *ed25519Signer) Name() string                    { return s.name }
func (s *ed25519Signer) KeyHash() uint32                 { return s.hash }
func (s *ed25519Signer) Sign(msg []byte) ([]byte, error) { return ed25519.Sign(s.key, msg), nil }

func newSigner(name string, key ed25519.PrivateKey) (*ed25519Signer, note.Verifier, error) {
	pub, ok := key.Public().(ed25519.PublicKey)
	if !ok || len(key) != ed25519.PrivateKeySize {
		return nil, nil, errors.New("signing key is not an ed25519 private key")
	}
	v, err := NewVerifier(name, pub)
	if err != nil {
		return nil, nil, err
	}
	return &ed25519Signer{name: name, hash: v.KeyHash(), key: key}, v, nil
}

// NewVerifier returns the note verifier for a ledger's public key: all an
// auditor needs to check its checkpoints. name is the ledger's origin.
func NewVerifier(name string, pub ed25519.PublicKey) (note.Verifier, error) {
	vkey, err := note.NewEd25519VerifierKey(name, pub)
	if err != nil {
		return nil, fmt.Errorf("verifier key: %w", err)
	}
	return note.NewVerifier(vkey)
}

// VerifierKey returns the standard text form of a ledger's verifier key
// ("<name>+<hash>+<key>"), as the note tools take it.
func VerifierKey(name string, pub ed25519.PublicKey) (string, error) {
	return note.NewEd25519VerifierKey(name, pub)
}

func formatCheckpointText(origin string, size int64, root tlog.Hash) string {
	return fmt.Sprintf("%s\n%d\n%s\n", origin, size, base64.StdEncoding.EncodeToString(root[:]))
}

func signCheckpoint(s note.Signer, origin string, size int64, root tlog.Hash) (*Checkpoint, error) {
	msg, err := note.Sign(&note.Note{Text: formatCheckpointText(origin, size, root)}, s)
	if err != nil {
		return nil, fmt.Errorf("sign checkpoint: %w", err)
	}
	return &Checkpoint{Origin: origin, Size: size, Root: root, Note: msg}, nil
}

// OpenCheckpoint checks a signed checkpoint note against a verifier and
// parses it.
func OpenCheckpoint(msg []byte, v note.Verifier) (*Checkpoint, error) {
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		return nil, fmt.Errorf("open checkpoint: %w", err)
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 || lines[len(lines)-1] != "" {
		return nil, errors.New("open checkpoint: malformed text")
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 || lines[1] != strconv.FormatInt(size, 10) {
		return nil, fmt.Errorf("open checkpoint: bad size %q", lines[1])
	}
	rootBytes, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(rootBytes) != tlog.HashSize {
		return nil, fmt.Errorf("open checkpoint: bad root hash %q", lines[2])
	}
	c := &Checkpoint{Origin: lines[0], Size: size, Note: bytes.Clone(msg)}
	copy(c.Root[:], rootBytes)
	if c.Origin != v.Name() {
		return nil, fmt.Errorf("open checkpoint: origin %q, want %q", c.Origin, v.Name())
	}
	return c, nil
}
