package ledger

import "syscall"

// The write-ahead log's open flags: each write is on the disk when it
// returns, and bypasses the page cache.
const (
	oDSync  = syscall.O_DSYNC
	oDirect = syscall.O_DIRECT
)
