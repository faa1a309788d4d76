package kernel

import (
	"errors"
	"fmt"
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
	persons  map[string]string       // the ledger's pseudonym of each person seen -> their principal id

	// flight holds the calls each grant has at its drivers, to cancel
	// them when the grant ends: a list through gcall.prev and next; each
	// session lists its own through gcall.sprev and snext (session.flight),
	// to cancel them when the session ends. Calls join under mu (at
	// admission) and leave under fmu alone; lock order mu, then fmu.
	fmu    sync.Mutex
	flight map[caps.GrantID]*gcall

	// Calls waiting to be admitted, in arrival order (see enqueue), and
	// the turn of the goroutine admitting them.
	qmu   sync.Mutex
	queue []*gcall
	spare []*gcall // the last queue taken, emptied, for reuse
	turn  sync.Mutex
}

// maxTurn bounds the calls one goroutine admits for others in one turn.
const maxTurn = 256

// enqueue admits c after the calls that arrived before it. The goroutine
// that delivered c does not wait for the sequencer: if another goroutine
// is admitting queued calls, that one admits c too, and only one goroutine
// at a time takes the sequencer's lock for calls. So the connections'
// goroutines, which deliver calls, never queue up on that lock and are
// never put to sleep by it; calls that arrive together are admitted by one
// goroutine in one go. The queue is bounded by the ledger's MaxPending:
// every call in it has taken room for its entry.
func (k *Kernel) enqueue(c *gcall) {
	s := &k.seq
	s.qmu.Lock()
	s.queue = append(s.queue, c)
	s.qmu.Unlock()
	k.admitQueued()
}

// admitQueued admits the queued calls unless another goroutine has the
// turn. It looks at the queue again after giving the turn up, so a call
// queued meanwhile is not left behind. A turn that has admitted maxTurn
// calls is handed to a goroutine of its own, so the connection whose
// goroutine admits for others is not kept from its own.
func (k *Kernel) admitQueued() {
	s := &k.seq
	for s.waiting() && s.turn.TryLock() {
		n := 0
		for n < maxTurn {
			s.qmu.Lock()
			if len(s.queue) == 0 {
				s.qmu.Unlock()
				break
			}
			batch := s.queue
			s.queue, s.spare = s.spare[:0], nil
			s.qmu.Unlock()
			for i, c := range batch {
				g, seqd := c.g, c.seqd
				k.admit(c)
				g.sequenced()
				if seqd != nil {
					close(seqd)
				}
				batch[i] = nil
			}
			n += len(batch)
			s.qmu.Lock()
			if s.spare == nil {
				s.spare = batch[:0]
			}
			s.qmu.Unlock()
		}
		s.turn.Unlock()
		if n >= maxTurn {
			if s.waiting() {
				go k.admitQueued()
			}
			return
		}
	}
}

// waiting reports whether calls are queued.
func (s *sequencer) waiting() bool {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	return len(s.queue) > 0
}

// fly registers an admitted call to be cancelled with its grant or its
// session. The caller holds mu.
func (s *sequencer) fly(c *gcall) {
	s.fmu.Lock()
	grant, ss := c.g.grant, c.g.s
	if head := s.flight[grant]; head != nil {
		c.next, head.prev = head, c
	}
	s.flight[grant] = c
	if head := ss.flight; head != nil {
		c.snext, head.sprev = head, c
	}
	ss.flight = c
	c.flying = true
	s.fmu.Unlock()
}

// unfly removes c from both lists. The caller holds fmu.
func (s *sequencer) unfly(c *gcall) {
	if !c.flying {
		return
	}
	grant, ss := c.g.grant, c.g.s
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
	if c.sprev != nil {
		c.sprev.snext = c.snext
	} else {
		ss.flight = c.snext
	}
	if c.snext != nil {
		c.snext.sprev = c.sprev
	}
	c.prev, c.next, c.sprev, c.snext, c.flying = nil, nil, nil, nil, false
}

// land removes a call from flight once it has its answer.
func (s *sequencer) land(c *gcall) {
	s.fmu.Lock()
	s.unfly(c)
	s.fmu.Unlock()
}

// ground cuts short every call in flight of the grants ids, which have
// ended. The caller holds mu.
func (s *sequencer) ground(ids []caps.GrantID) {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	for _, id := range ids {
		for c := s.flight[id]; c != nil; c = s.flight[id] {
			s.unfly(c)
			c.cut(fmt.Errorf("%w: %w (%s)", errEnded, ErrEndedInFlight, id))
		}
	}
}

// groundSession cuts short every call in flight of a session that has
// ended (its program disconnected, logged out or was forgotten): its
// drivers' contexts end, and go-capnp, which waits for every call of a
// closing connection to return, can let the connection go. The caller
// holds mu.
func (s *sequencer) groundSession(ss *session) {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	for c := ss.flight; c != nil; c = ss.flight {
		s.unfly(c)
		c.cut(fmt.Errorf("%w: %w", errSessionCut, ErrSessionEnded))
	}
}

// errSessionCut marks a cancellation by groundSession.
var errSessionCut = errors.New("revoked")

// errEnded marks a cancellation by ground.
var errEnded = errors.New("revoked")

// held returns a live grant that holder holds on target for the
// interface, or 0. The caller holds mu.
func (s *sequencer) held(holder caps.Principal, target string, iface uint64) caps.GrantID {
	return s.table.Held(holder, target, iface)
}

func (k *Kernel) unix(ns int64) time.Time { return time.Unix(0, ns) }
