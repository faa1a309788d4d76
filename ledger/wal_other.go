//go:build !linux

package ledger

import "os"

// The write-ahead log's open flags: each write is on the disk when it
// returns.
const (
	oDSync  = os.O_SYNC
	oDirect = 0
)
