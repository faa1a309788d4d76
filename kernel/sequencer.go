package kernel

import (
	"sync"
	"time"

	"github.com/osmose-os/osmose/caps"
)

// sequencer is the one critical section through which every admission,
// grant, delegation, revocation and release passes. Inside it the kernel
// asks the caps table, appends the ledger entry (which fixes its seq) and,
// for an admitted call, sends it to the driver. So ledger order is
// admission order is revocation order, and each driver receives its calls
// in admission order.
type sequencer struct {
	mu       sync.Mutex
	table    *caps.Table
	dead     map[caps.GrantID]bool   // grants revoked or released (for derived gates)
	grantSeq map[caps.GrantID]uint64 // ledger seq of the entry that made each grant
}

// held returns a live grant that holder holds on target for the
// interface, or 0. The caller holds mu.
func (s *sequencer) held(holder caps.Principal, target string, iface uint64) caps.GrantID {
	for g := range s.table.Grants() {
		if g.Holder == holder && g.Target == target && g.Interface == iface && !g.Revoked && !g.Released {
			return g.ID
		}
	}
	return 0
}

func (k *Kernel) unix(ns int64) time.Time { return time.Unix(0, ns) }
