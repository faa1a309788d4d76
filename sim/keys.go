package sim

import (
	"crypto/ed25519"
	"crypto/sha256"
	"strconv"
)

// KeyDomain begins the input of every simulated key (see Key).
const KeyDomain = "osmose-sim-v1"

// Key returns the private key of principal id (a device path, "op",
// "audit", ...) in a building simulated with seed: the ed25519 key whose
// 32-byte seed is
//
//	SHA-256("osmose-sim-v1" || 0x00 || decimal(seed) || 0x00 || id)
//
// (decimal(seed) as strconv.FormatInt writes it, e.g. "42" or "-7"). The
// topology file holds only the public keys; anyone who knows the seed can
// log in as any device of a generated building, which is what a simulator
// is for and why a real building's keys come from its devices.
func Key(seed int64, id string) ed25519.PrivateKey {
	s := sha256.Sum256([]byte(KeyDomain + "\x00" + strconv.FormatInt(seed, 10) + "\x00" + id))
	return ed25519.NewKeyFromSeed(s[:])
}

// PublicKey is Key(seed, id)'s public half.
func PublicKey(seed int64, id string) ed25519.PublicKey {
	return Key(seed, id).Public().(ed25519.PublicKey)
}
