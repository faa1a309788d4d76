// Package idleserver serves a Cap'n Proto interface as go-capnp's
// server.Server does, but holds no goroutine while no call is pending
// (beyond the WarmServers most recently used).
//
// A server.Server starts a goroutine when it is made and keeps it, parked
// on its call queue, for as long as a client holds it. A building has tens
// of thousands of capabilities that are called a few times an hour (a
// sensor's listener, a driver, a gate, a session), and their parked
// goroutines were most of the memory of a large building. A Server here
// makes a server.Server when a call arrives and keeps it while calls come;
// once idle it stays warm among the WarmServers most recently used, and
// is retired after. Calls keep server.Server's order (one at a time, in
// arrival order, unless a method calls server.Call.Go), since a new
// server.Server is made only when the previous one has no call left.
package idleserver

import (
	"context"
	"sync"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/exc"
	"capnproto.org/go/capnp/v3/server"
)

// Server is a capnp.ClientHook that serves a set of methods.
type Server struct {
	methods  func() []server.Method // made anew for each server.Server
	brand    any
	shutdown server.Shutdowner

	// HandleUnknownMethod, if set before the first call, is asked for the
	// implementation of a method the set does not have (as
	// server.Server.HandleUnknownMethod is).
	HandleUnknownMethod func(m capnp.Method) *server.Method

	mu      sync.Mutex
	cur     *server.Server // serving the pending calls; nil when idle and cold
	pending int            // calls started and not yet returned
	down    bool           // Shutdown was called

	// guarded by warm.mu
	warm       bool // on the warm list
	prev, next *Server
}

// New returns a server of the methods that methods returns, as server.New
// does: brand is what IsServer reports, and shutdown (if not nil) runs,
// on a goroutine of its own, once the last client is gone and every call
// has returned (never on the goroutine that released the last client,
// which may be a connection's receive loop or hold its caller's locks).
// methods is
// called whenever a call finds the server idle, so that an idle server
// holds no method table either.
func New(methods func() []server.Method, brand any, shutdown server.Shutdowner) *Server {
	return &Server{methods: methods, brand: brand, shutdown: shutdown}
}

// Of returns a client of a new Server of impl, given the generated
// X_Methods function of its interface, as X_ServerToClient would:
// idleserver.Of[schema.Light_Server](schema.Light_Methods, l). impl is the
// brand, and its Shutdown method, if it has one, runs when the last client
// is gone.
func Of[T any](methods func([]server.Method, T) []server.Method, impl T) capnp.Client {
	sd, _ := any(impl).(server.Shutdowner)
	return capnp.NewClient(New(func() []server.Method { return methods(nil, impl) }, impl, sd))
}

// IsServer reports whether a brand came from a Server's Brand, and returns
// the brand passed to New.
func IsServer(b capnp.Brand) (any, bool) {
	v, ok := b.Value.(brand)
	return v.x, ok
}

type brand struct{ x any }

// Brand implements capnp.ClientHook.
func (s *Server) Brand() capnp.Brand { return capnp.Brand{Value: brand{s.brand}} }

func (s *Server) String() string { return "idleserver.Server" }

// acquire returns the server.Server to start a call on, making one if the
// server is idle.
func (s *Server) acquire() *server.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil {
		s.cur = server.New(s.methods(), nil, nil)
		s.cur.HandleUnknownMethod = s.HandleUnknownMethod
	} else {
		warm.remove(s)
	}
	s.pending++
	return s.cur
}

// returned notes that a call has returned. The last one leaves the
// server.Server warm (see warm) and, after Shutdown, retires it and runs
// the shutdown.
func (s *Server) returned() {
	s.mu.Lock()
	s.pending--
	var finish bool
	if s.pending == 0 {
		if s.down {
			s.retire()
			finish = true
		} else if s.cur != nil {
			warm.add(s)
		}
	}
	s.mu.Unlock()
	if finish && s.shutdown != nil {
		go s.shutdown.Shutdown()
	}
}

// retire ends the server.Server (its goroutine ends once it has finished
// its call). The caller holds s.mu and s has no call pending.
func (s *Server) retire() {
	warm.remove(s)
	if s.cur != nil {
		s.cur.Shutdown()
		s.cur = nil
	}
}

// WarmServers is how many idle Servers keep their server.Server (and its
// goroutine, whose stack has grown to what the methods need) for the next
// call; the least recently used beyond it are retired. A busy capability
// then costs no new goroutine, and no stack growth, per call, while an idle
// building holds at most this many goroutines for its capabilities.
const WarmServers = 1024

// warm is the list of idle Servers that keep their server.Server, least
// recently used first. Lock order: Server.mu, then warmList.mu.
var warm = &warmList{}

type warmList struct {
	mu         sync.Mutex
	head, tail *Server // head is the least recently used
	n          int
}

// add puts s, idle, at the end of the list, retiring the least recently
// used beyond WarmServers. The caller holds s.mu.
func (w *warmList) add(s *Server) {
	w.mu.Lock()
	if !s.warm {
		s.warm = true
		s.prev, s.next = w.tail, nil
		if w.tail != nil {
			w.tail.next = s
		} else {
			w.head = s
		}
		w.tail = s
		w.n++
	}
	var old *Server
	if w.n > WarmServers {
		old = w.head
		w.unlink(old)
	}
	w.mu.Unlock()
	if old != nil {
		// Not under s.mu's order: retire it on its own goroutine, which
		// takes old.mu first.
		go old.cool()
	}
}

// remove takes s off the list. The caller holds s.mu.
func (w *warmList) remove(s *Server) {
	w.mu.Lock()
	if s.warm {
		w.unlink(s)
	}
	w.mu.Unlock()
}

func (w *warmList) unlink(s *Server) {
	if s.prev != nil {
		s.prev.next = s.next
	} else {
		w.head = s.next
	}
	if s.next != nil {
		s.next.prev = s.prev
	} else {
		w.tail = s.prev
	}
	s.prev, s.next, s.warm = nil, nil, false
	w.n--
}

// cool retires s's server.Server if s is still idle and has not been made
// warm again since it left the list.
func (s *Server) cool() {
	s.mu.Lock()
	defer s.mu.Unlock()
	warm.mu.Lock()
	again := s.warm
	warm.mu.Unlock()
	if s.pending == 0 && !again && s.cur != nil {
		s.cur.Shutdown()
		s.cur = nil
	}
}

// Recv implements capnp.ClientHook.
func (s *Server) Recv(ctx context.Context, r capnp.Recv) capnp.PipelineCaller {
	r.Returner = &returner{Returner: r.Returner, s: s}
	return s.acquire().Recv(ctx, r)
}

// Send implements capnp.ClientHook.
func (s *Server) Send(ctx context.Context, snd capnp.Send) (*capnp.Answer, capnp.ReleaseFunc) {
	var args capnp.Struct
	if snd.PlaceArgs != nil {
		msg, seg, err := capnp.NewMessage(capnp.MultiSegment(nil))
		if err != nil {
			return capnp.ErrorAnswer(snd.Method, err), func() {}
		}
		args, err = capnp.NewRootStruct(seg, snd.ArgsSize)
		if err != nil {
			msg.Release()
			return capnp.ErrorAnswer(snd.Method, err), func() {}
		}
		if err := snd.PlaceArgs(args); err != nil {
			args.Message().Release()
			return capnp.ErrorAnswer(snd.Method, exc.WrapError("place args", err)), func() {}
		}
	}
	sr := new(capnp.StructReturner)
	pcall := s.acquire().Recv(ctx, capnp.Recv{
		Method: snd.Method,
		Args:   args,
		ReleaseArgs: func() {
			if msg := args.Message(); msg != nil {
				msg.Release()
				args = capnp.Struct{}
			}
		},
		Returner: &returner{Returner: sr, s: s},
	})
	return sr.Answer(snd.Method, pcall)
}

// Shutdown implements capnp.ClientHook: the last client is gone.
func (s *Server) Shutdown() {
	s.mu.Lock()
	s.down = true
	idle := s.pending == 0
	if idle {
		s.retire()
	}
	s.mu.Unlock()
	if idle && s.shutdown != nil {
		go s.shutdown.Shutdown()
	}
}

// returner tells the Server when a call has returned.
type returner struct {
	capnp.Returner
	s *Server
}

func (r *returner) Return() {
	r.Returner.Return()
	r.s.returned()
}

var _ capnp.ClientHook = (*Server)(nil)
