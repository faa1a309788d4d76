package schema

// loginDomain is the prefix of every login message; it equals the schema's
// LoginDomain constant (gateway.capnp), kept here as a string so that it
// cannot be modified.
const loginDomain = "osmose-login-v1\x00"

// LoginMessage returns the bytes a principal signs with its ed25519 key to
// log in to the kernel kernelID with the nonce from Gateway.challenge:
//
//	"osmose-login-v1\x00" || kernelID || 0x00 || principal || 0x00 || nonce
//
// kernelID and principal must not contain zero bytes (the kernel refuses
// such ids); LoginMessage does not check. The caller signs the result with
// crypto/ed25519.Sign, and the kernel verifies with ed25519.Verify on the
// same bytes. The result is a new slice; nonce is copied.
func LoginMessage(kernelID, principal string, nonce []byte) []byte {
	m := make([]byte, 0, len(loginDomain)+len(kernelID)+1+len(principal)+1+len(nonce))
	m = append(m, loginDomain...)
	m = append(m, kernelID...)
	m = append(m, 0)
	m = append(m, principal...)
	m = append(m, 0)
	m = append(m, nonce...)
	return m
}
