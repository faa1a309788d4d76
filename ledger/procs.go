package ledger

import (
	"os"
	"runtime"
)

// SyncProcs gives the process one P (GOMAXPROCS) more than it has, for the
// goroutine a syncing ledger keeps in fsync, and returns a function that
// puts the previous value back. It does nothing when the GOMAXPROCS
// environment variable is set: the operator has chosen. Like any call to
// runtime.GOMAXPROCS, it ends the runtime's own updates of GOMAXPROCS when
// the process's CPU limit changes.
//
// Go's runtime lets a goroutine in a system call keep its P until sysmon
// takes the P back, and under steady load sysmon's ticks are too far apart
// to do so during an fsync. A trace of the kernel benchmark on two CPUs
// shows it: the ledger's fsyncs (median 0.18 ms, p90 1.7 ms, 40 % of wall
// time) each kept their P to the end, even those of 2-3 ms, while
// goroutines ready to run waited for the other P. A process that serves a
// ledger under load should call SyncProcs once at start; osmose's command
// does.
func SyncProcs() (restore func()) {
	if os.Getenv("GOMAXPROCS") != "" {
		return func() {}
	}
	prev := runtime.GOMAXPROCS(0)
	runtime.GOMAXPROCS(prev + 1)
	return func() { runtime.GOMAXPROCS(prev) }
}
