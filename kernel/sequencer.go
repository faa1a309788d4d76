package kernel

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"capnproto.org/go/capnp/v3"

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
	persons  map[string]string       // the ledger's pseudonym of each person seen -> their principal id

	// flight holds the calls each grant has at its drivers, to cancel
	// them when the grant ends: a list through gcall.prev and next. Calls
	// join under mu (at admission) and leave under fmu alone; lock order
	// mu, then fmu.
	fmu    sync.Mutex
	flight map[caps.GrantID]*gcall
}

// fly registers an admitted call of grant to be cancelled with the grant.
// The caller holds mu.
func (s *sequencer) fly(grant caps.GrantID, c *gcall) {
	s.fmu.Lock()
	if head := s.flight[grant]; head != nil {
		c.next, head.prev = head, c
	}
	s.flight[grant] = c
	c.flying = true
	s.fmu.Unlock()
}

// land removes a call from flight once it has its answer.
func (s *sequencer) land(grant caps.GrantID, c *gcall) {
	s.fmu.Lock()
	if c.flying {
		if c.prev != nil {
			c.prev.next = c.next
		} else if c.next != nil {
			s.flight[grant] = c.next
		} else {
			delete(s.flight, grant)
		}
		if c.next != nil {
			c.next.prev = c.prev
		}
		c.prev, c.next, c.flying = nil, nil, false
	}
	s.fmu.Unlock()
}

// ground cancels every call in flight of the grants ids, which have ended.
// The caller holds mu.
func (s *sequencer) ground(ids []caps.GrantID) {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	for _, id := range ids {
		for c := s.flight[id]; c != nil; {
			next := c.next
			cause := fmt.Errorf("%w: %w (%s)", errEnded, ErrEndedInFlight, id)
			c.cancel(cause)
			c.prev, c.next, c.flying = nil, nil, false
			// The call ends now, whatever its driver does: its return
			// entry is recorded off the sequencer's lock.
			go c.returned(capnp.Struct{}, cause)
			c = next
		}
		delete(s.flight, id)
	}
}

// errEnded marks a cancellation by ground.
var errEnded = errors.New("revoked")

// held returns a live grant that holder holds on target for the
// interface, or 0. The caller holds mu.
func (s *sequencer) held(holder caps.Principal, target string, iface uint64) caps.GrantID {
	return s.table.Held(holder, target, iface)
}

func (k *Kernel) unix(ns int64) time.Time { return time.Unix(0, ns) }
