package kernel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"capnproto.org/go/capnp/v3"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/osmose-os/osmose/caps"
	"github.com/osmose-os/osmose/internal/topology"
	"github.com/osmose-os/osmose/ledger"
	"github.com/osmose-os/osmose/schema"
)

// Config configures a Kernel. Ledger, Topology, Now and Rand are required;
// every other field has a working zero value.
type Config struct {
	// ID is the kernel id that login messages are signed for. Default: the
	// ledger's origin.
	ID string
	// Ledger records every login, grant and call. The kernel appends to it
	// but does not close it.
	Ledger *ledger.Ledger
	// Topology is the building: places, devices and who may log in.
	Topology *topology.Topology
	// Policy is the Cedar policy that decides what Session.open grants (see
	// package caps). Empty: nothing is granted.
	Policy []caps.PolicyFile
	// Location is where caveat time windows are reckoned; nil means UTC.
	Location *time.Location
	// Drivers maps a device path to the client of its driver, a capability
	// of the device class's schema interface (schema.Light for a light).
	// The kernel takes ownership of every client and releases it on Close.
	// A device without a driver cannot be opened.
	Drivers map[string]capnp.Client
	// Now is the kernel's clock: the logical time of every entry and of
	// caveat checks. cmd passes time.Now; tests pass a fake.
	Now func() time.Time
	// Rand supplies login nonces. cmd passes crypto/rand.Reader.
	Rand io.Reader
	// Logger receives rare operational messages. Default: discard.
	Logger *slog.Logger
	// TracerProvider and MeterProvider receive one span per gated call and
	// the kernel's metrics. Default: no-op.
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	// MaxMessageSize bounds one Cap'n Proto message on a connection, in
	// bytes; a larger frame ends the connection. Default 1 MiB.
	MaxMessageSize uint64
	// MaxInFlight bounds the calls in flight on one connection; calls beyond
	// it fail with "overloaded". Default 256.
	MaxInFlight int
	// MaxChallenges bounds the outstanding login nonces of one connection.
	// Default 16.
	MaxChallenges int
	// NonceTTL is how long a login nonce stays valid. Default 30 s.
	NonceTTL time.Duration
}

func (c *Config) validate() error {
	switch {
	case c.Ledger == nil:
		return errors.New("kernel: Config.Ledger is required")
	case c.Topology == nil:
		return errors.New("kernel: Config.Topology is required")
	case c.Now == nil:
		return errors.New("kernel: Config.Now is required")
	case c.Rand == nil:
		return errors.New("kernel: Config.Rand is required")
	}
	if c.ID == "" {
		c.ID = c.Ledger.Meta().Origin
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = 1 << 20
	}
	if c.MaxMessageSize < 1024 {
		return fmt.Errorf("kernel: MaxMessageSize %d is below 1024", c.MaxMessageSize)
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 256
	}
	if c.MaxChallenges <= 0 {
		c.MaxChallenges = 16
	}
	if c.NonceTTL <= 0 {
		c.NonceTTL = 30 * time.Second
	}
	for path := range c.Drivers {
		if _, ok := c.Topology.Device(path); !ok {
			return fmt.Errorf("kernel: driver for %q, which is not a device of the topology", path)
		}
	}
	return nil
}

// Kernel is the syscall gateway: it serves Cap'n Proto connections, logs
// principals in, hands out gates and records everything on the ledger.
// Its methods are safe for concurrent use.
type Kernel struct {
	cfg   Config
	led   *ledger.Ledger
	top   *topology.Topology
	cat   *catalog
	tel   *telemetry
	log   *slog.Logger
	seq   sequencer
	gates gateRegistry
	// answers answers gated calls once their entries are durable.
	answers *answerer

	randMu sync.Mutex

	mu     sync.Mutex
	conns  map[*conn]struct{}
	nconn  uint64
	closed bool
	wg     sync.WaitGroup
}

// New validates cfg, builds the grant table from the topology and the
// policy, and returns a kernel ready to serve.
func New(cfg Config) (*Kernel, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	k := &Kernel{
		cfg:   cfg,
		led:   cfg.Ledger,
		top:   cfg.Topology,
		cat:   newCatalog(),
		log:   cfg.Logger,
		conns: map[*conn]struct{}{},
	}
	tel, err := newTelemetry(cfg.TracerProvider, cfg.MeterProvider)
	if err != nil {
		return nil, err
	}
	k.tel = tel
	first, err := firstGrant(context.Background(), cfg.Ledger)
	if err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	table, err := caps.New(caps.Config{
		Interfaces: k.cat.capsInterfaces(),
		Topology:   capsTopology(cfg.Topology),
		Policy:     cfg.Policy,
		Location:   cfg.Location,
		FirstGrant: first,
	})
	if err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	if err := recordStart(context.Background(), cfg.Ledger, first, cfg.Now()); err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	if err := recordTopology(context.Background(), cfg.Ledger, cfg.Topology, cfg.Now().UnixNano()); err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	if err := recordPolicy(context.Background(), cfg.Ledger, cfg.Policy, cfg.Now().UnixNano()); err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	k.seq = sequencer{table: table, dead: map[caps.GrantID]bool{}, grantSeq: map[caps.GrantID]uint64{}, persons: map[string]string{}, flight: map[caps.GrantID]*gcall{}}
	k.gates.byGrant = map[caps.GrantID]map[*gate]struct{}{}
	k.answers = newAnswerer()
	return k, nil
}

// capsTopology converts the topology into the grant table's nodes.
func capsTopology(t *topology.Topology) []caps.Node {
	nodes := make([]caps.Node, 0, len(t.Places)+len(t.Devices))
	for _, p := range t.Places {
		nodes = append(nodes, caps.Node{Path: p.Path, Parent: topology.Parent(p.Path), Kind: p.Kind.String()})
	}
	for _, d := range t.Devices {
		nodes = append(nodes, caps.Node{Path: d.Path, Parent: d.Place(), Kind: caps.KindDevice, Class: d.Class.String()})
	}
	return nodes
}

// ID returns the kernel id that logins are signed for.
func (k *Kernel) ID() string { return k.cfg.ID }

// Serve accepts connections on l and serves each until it ends, until ctx
// is done or l fails. It closes l before returning.
func (k *Kernel) Serve(ctx context.Context, l net.Listener) error {
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	defer l.Close()
	for {
		nc, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("accept: %w", err)
		}
		if !k.start() {
			nc.Close()
			return nil
		}
		k.attach(ctx, nc, nil)
	}
}

// ServeConn serves one connection until it ends or ctx is done.
func (k *Kernel) ServeConn(ctx context.Context, nc net.Conn) {
	ended := make(chan struct{})
	k.Attach(ctx, nc, func() { close(ended) })
	<-ended
}

// Attach serves one connection in the background until it ends or ctx is
// done, and returns at once; done, if not nil, runs once the connection
// has ended and its sessions' ends are appended to the ledger (at once if the
// kernel is closed). A served connection holds no goroutine of the
// kernel's beyond those of its Cap'n Proto connection.
func (k *Kernel) Attach(ctx context.Context, nc net.Conn, done func()) {
	if !k.start() {
		nc.Close()
		if done != nil {
			done()
		}
		return
	}
	k.attach(ctx, nc, done)
}

func (k *Kernel) start() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return false
	}
	k.wg.Add(1)
	return true
}

// Close ends every connection, waits for their sessions to end, and
// releases the drivers. It does not close the ledger.
func (k *Kernel) Close() error {
	k.mu.Lock()
	if k.closed {
		k.mu.Unlock()
		return nil
	}
	k.closed = true
	conns := make([]*conn, 0, len(k.conns))
	for c := range k.conns {
		conns = append(conns, c)
	}
	k.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
	k.wg.Wait()
	k.answers.close()
	for _, d := range k.cfg.Drivers {
		d.Release()
	}
	return nil
}

// Conns returns the number of connections being served.
func (k *Kernel) Conns() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.conns)
}

// driver returns a new reference to the driver of a device, which the
// caller releases.
func (k *Kernel) driver(path string) (capnp.Client, bool) {
	d, ok := k.cfg.Drivers[path]
	if !ok {
		return capnp.Client{}, false
	}
	return d.AddRef(), true
}

// capsPrincipal maps a logged-in principal to a grant holder; auditors and
// unknown kinds hold nothing.
func capsPrincipal(p topology.Principal) (caps.Principal, bool) {
	var k caps.PrincipalKind
	switch p.Kind {
	case schema.PrincipalKind_device:
		k = caps.Device
	case schema.PrincipalKind_person:
		k = caps.Person
	case schema.PrincipalKind_app:
		k = caps.App
	case schema.PrincipalKind_operator:
		k = caps.Operator
	default:
		return caps.Principal{}, false
	}
	return caps.Principal{Kind: k, ID: p.ID}, true
}
