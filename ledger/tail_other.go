//go:build !linux

package ledger

import "os"

// datasync syncs f (fsync: the system has no fdatasync the ledger uses).
func datasync(f *os.File) error { return f.Sync() }

// startWriteback does nothing where there is no sync_file_range(2).
func startWriteback(f *os.File, off, n int64) {}
