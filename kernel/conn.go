package kernel

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/rpc"
	"capnproto.org/go/capnp/v3/rpc/transport"

	"github.com/osmose-os/osmose/internal/idleserver"
	"github.com/osmose-os/osmose/ledger"
	"github.com/osmose-os/osmose/schema"
)

// codec frames Cap'n Proto messages on a stream with a bound on the size of
// one incoming message, and remembers why decoding stopped.
type codec struct {
	dec *capnp.Decoder
	enc *capnp.Encoder
	nc  net.Conn

	mu  sync.Mutex
	err error // first decode error

	// closed runs once, when the rpc layer closes the connection: the
	// last step of its shutdown before Done.
	closed func()
	once   sync.Once
}

// readBuffer is the size of a connection's read buffer: larger than most
// calls' frames, small enough for 10,000 connections (20 MiB).
const readBuffer = 2048

func newCodec(nc net.Conn, max uint64) *codec {
	// Buffered: a frame's header and body (and any frames a busy client
	// queued behind it) arrive in one read rather than two or more.
	dec := capnp.NewDecoder(bufio.NewReaderSize(nc, readBuffer))
	dec.MaxMessageSize = max
	return &codec{dec: dec, enc: capnp.NewEncoder(nc), nc: nc}
}

func (c *codec) Encode(m *capnp.Message) error { return c.enc.Encode(m) }

func (c *codec) Decode() (*capnp.Message, error) {
	m, err := c.dec.Decode()
	if err != nil {
		c.mu.Lock()
		if c.err == nil {
			c.err = err
		}
		c.mu.Unlock()
	}
	return m, err
}

func (c *codec) Close() error {
	err := c.nc.Close()
	if c.closed != nil {
		c.once.Do(c.closed)
	}
	return err
}

// failure returns why the peer's byte stream was refused, or "" if it
// ended cleanly (end of file, closed, reset).
func (c *codec) failure() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.err
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return ""
	}
	return err.Error()
}

// conn is the kernel's state for one connection: its Cap'n Proto
// connection, the bound on calls in flight, login nonces and sessions.
type conn struct {
	k      *Kernel
	id     uint64
	remote string
	codec  *codec
	rc     *rpc.Conn

	inflight atomic.Int64

	mu       sync.Mutex
	nonces   map[string]nonce // by nonce bytes
	sessions []*session
	rpcErr   string // first error the rpc layer reported
}

type nonce struct {
	principal string
	expires   time.Time
}

// attach serves nc in the background, holding no goroutine of its own:
// done runs (on a goroutine of its own) once the connection has ended and
// its sessions' ends are recorded. The caller has counted the connection
// in k.wg (k.start), which done's caller releases.
func (k *Kernel) attach(ctx context.Context, nc net.Conn, done func()) {
	k.mu.Lock()
	k.nconn++
	c := &conn{k: k, id: k.nconn, remote: nc.RemoteAddr().String(), nonces: map[string]nonce{}}
	k.mu.Unlock()
	c.codec = newCodec(nc, k.cfg.MaxMessageSize)
	ready := make(chan struct{})
	var stop func() bool
	c.codec.closed = func() {
		go func() {
			<-ready
			<-c.rc.Done()
			stop()
			c.end()
			k.mu.Lock()
			delete(k.conns, c)
			k.mu.Unlock()
			k.tel.conns.Add(context.Background(), -1)
			k.wg.Done()
			if done != nil {
				done()
			}
		}()
	}
	c.rc = rpc.NewConn(transport.New(c.codec), &rpc.Options{
		BootstrapClient: idleserver.Of[schema.Gateway_Server](schema.Gateway_Methods, &gateway{c: c}),
		Logger:          rpcLogger{c},
		// Network stays nil: go-capnp's three-party handoff panics.
	})
	stop = context.AfterFunc(ctx, func() { c.rc.Close() })
	// Registered once c.rc is set, so that Close (which reads it under
	// k.mu) can close every registered connection.
	k.mu.Lock()
	closed := k.closed
	k.conns[c] = struct{}{}
	k.mu.Unlock()
	k.tel.conns.Add(ctx, 1)
	close(ready)
	if closed {
		c.rc.Close()
	}
}

func (c *conn) close() {
	if c.rc != nil {
		c.rc.Close()
	}
}

// end ends the connection's sessions and records why the connection
// ended when it was not a clean close.
func (c *conn) end() {
	_, reason := c.endReason()
	c.mu.Lock()
	sessions := c.sessions
	c.sessions = nil
	c.mu.Unlock()
	for _, s := range sessions {
		r := reason
		if r == "" {
			r = "connection closed"
		}
		s.hangUp(r, "disconnect")
	}
	if len(sessions) == 0 && reason != "" {
		// A connection that never logged in but broke the protocol is
		// evidence too; its actor is its address.
		k := c.k
		// Durable with the next batch; nobody waits for it. Room is
		// taken before the sequencer (see session.end).
		err := k.led.Reserve(context.Background())
		if err == nil {
			k.seq.mu.Lock()
			_, err = k.led.AppendReserved(ledger.Entry{
				Kind: "disconnect", Actor: "conn:" + c.remote, Reason: truncate(reason), Time: k.now().UnixNano(),
			})
			k.seq.mu.Unlock()
		}
		if err != nil {
			k.log.Warn("disconnect", "conn", c.remote, "err", err)
		}
	}
}

// endReason says whether the connection is ending and why: down is set
// once its byte stream ended or the rpc layer aborted it; reason is empty
// for a clean close.
func (c *conn) endReason() (down bool, reason string) {
	c.codec.mu.Lock()
	down = c.codec.err != nil
	c.codec.mu.Unlock()
	if f := c.codec.failure(); f != "" {
		return true, "invalid: frame: " + f
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rpcErr != "" {
		return true, c.rpcErr
	}
	return down, ""
}

// enter admits one more call in flight on the connection, or refuses when
// MaxInFlight are already running.
func (c *conn) enter() bool {
	if c.inflight.Add(1) > int64(c.k.cfg.MaxInFlight) {
		c.inflight.Add(-1)
		c.k.tel.overloaded.Add(context.Background(), 1)
		return false
	}
	return true
}

func (c *conn) leave() { c.inflight.Add(-1) }

func overloaded(op string) error {
	return toException(&Error{Op: op, Kind: Overloaded, Cause: ErrTooMany})
}

// rpcLogger receives the rpc layer's reports for one connection: the first
// error names why a connection was aborted (an unknown capability, a
// malformed message).
type rpcLogger struct{ c *conn }

func (l rpcLogger) Debug(string, ...any) {}
func (l rpcLogger) Info(string, ...any)  {}
func (l rpcLogger) Warn(string, ...any)  {}
func (l rpcLogger) Error(msg string, args ...any) {
	// Clean ends are reported too; they are not failures (a release or
	// finish still queued when the connection shuts down is cancelled).
	if strings.Contains(msg, "EOF") || strings.Contains(msg, "closed") || strings.Contains(msg, "connection reset") ||
		strings.Contains(msg, "context canceled") {
		return
	}
	l.c.mu.Lock()
	if l.c.rpcErr == "" {
		l.c.rpcErr = "invalid: rpc: " + msg
	}
	l.c.mu.Unlock()
	l.c.k.log.Debug("rpc error", "conn", l.c.remote, "err", msg)
}

// truncate bounds a reason recorded on the ledger.
func truncate(s string) string {
	const max = 512
	if len(s) > max {
		return s[:max]
	}
	return s
}

func (k *Kernel) now() time.Time { return k.cfg.Now() }
