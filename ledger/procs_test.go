package ledger

import (
	"os"
	"runtime"
	"testing"
)

func TestSyncProcs(t *testing.T) {
	t.Setenv("GOMAXPROCS", "")
	os.Unsetenv("GOMAXPROCS")
	before := runtime.GOMAXPROCS(0)
	restore := SyncProcs()
	if got := runtime.GOMAXPROCS(0); got != before+1 {
		t.Errorf("GOMAXPROCS %d after SyncProcs, want %d", got, before+1)
	}
	restore()
	if got := runtime.GOMAXPROCS(0); got != before {
		t.Errorf("GOMAXPROCS %d after restore, want %d", got, before)
	}

	// The operator's setting stands.
	t.Setenv("GOMAXPROCS", "1")
	restore = SyncProcs()
	if got := runtime.GOMAXPROCS(0); got != before {
		t.Errorf("GOMAXPROCS %d with the variable set, want it left at %d", got, before)
	}
	restore()
}
