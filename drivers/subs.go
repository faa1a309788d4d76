package drivers

import (
	"context"
	"sync"

	"capnproto.org/go/capnp/v3"

	"github.com/osmose-os/osmose/internal/idleserver"
	"github.com/osmose-os/osmose/schema"
)

// subscribers is an ordered set of listener capabilities (ReadingListener,
// SwitchListener, AudioSink): delivery goes in subscription order, so a
// simulated building is deterministic.
type subscribers[T interface {
	AddRef() T
	Release()
}] struct {
	mu   sync.Mutex
	next uint64
	subs []sub[T]
}

type sub[T any] struct {
	id uint64
	l  T
}

// add stores listener (the caller keeps its own reference) and returns a
// Subscription that removes it; onEnd runs with the listener's reference
// when it is removed, and owns it.
func (s *subscribers[T]) add(listener T, onEnd func(T)) schema.Subscription {
	s.mu.Lock()
	s.next++
	id := s.next
	s.subs = append(s.subs, sub[T]{id: id, l: listener.AddRef()})
	s.mu.Unlock()
	sc := &subscription{cancel: func() {
		s.mu.Lock()
		var l T
		found := false
		for i, x := range s.subs {
			if x.id == id {
				l, found = x.l, true
				s.subs = append(s.subs[:i], s.subs[i+1:]...)
				break
			}
		}
		s.mu.Unlock()
		if found {
			onEnd(l)
		}
	}}
	return schema.Subscription(idleserver.Of[schema.Subscription_Server](schema.Subscription_Methods, sc))
}

// snapshot returns a new reference to every listener, in order; the caller
// releases them.
func (s *subscribers[T]) snapshot() []T {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]T, len(s.subs))
	for i, x := range s.subs {
		out[i] = x.l.AddRef()
	}
	return out
}

// count returns the number of live subscriptions.
func (s *subscribers[T]) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.subs)
}

func release[T interface{ Release() }](l T) { l.Release() }

// subscription is a running subscription: cancelling it or releasing its
// last reference stops deliveries. A delivery already under way completes.
type subscription struct {
	once   sync.Once
	cancel func()
}

func (s *subscription) Cancel(ctx context.Context, call schema.Subscription_cancel) error {
	s.once.Do(s.cancel)
	return nil
}

func (s *subscription) Shutdown() { s.once.Do(s.cancel) }

// client is what every driver returns.
type client interface{ Client() capnp.Client }
