package mqtt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/osmose-os/osmose/drivers"
	"github.com/osmose-os/osmose/schema"
)

// Errors a command can wrap; callers branch on them with errors.Is.
var (
	// ErrUnconfirmed: the device did not confirm a command within
	// Config.CommandTimeout.
	ErrUnconfirmed = errors.New("command not confirmed")
	// ErrOffline: the device has announced on its availability topic that
	// it is offline.
	ErrOffline = errors.New("device offline")
	// ErrNotConnected: the bridge has no connection to the broker now.
	ErrNotConnected = errors.New("not connected")
	// ErrClosed: the bridge has been closed.
	ErrClosed = errors.New("bridge closed")
)

// Config configures a Bridge. Broker and Devices are required; every other
// field has a working zero value.
type Config struct {
	// Broker is the broker's address: a URL (mqtt://host:1883, tls://...,
	// ws://...) or host:port, taken as mqtt://host:port.
	Broker string
	// Username and Password log in to the broker; empty for none.
	Username string
	Password string
	// ClientID is the bridge's MQTT client id; "" means "osmose-bridge".
	// Two clients with one id push each other off the broker.
	ClientID string
	// BaseTopic is the root of the device topics; "" means "zigbee2mqtt",
	// Zigbee2MQTT's default.
	BaseTopic string
	// Devices are the devices to drive. Classes without a driver (other)
	// are skipped.
	Devices []drivers.Device
	// Names maps a device path to its friendly name where that is not
	// FriendlyName(path).
	Names map[string]string
	// Buttons maps a switch's path to the names of its buttons as its
	// actions spell them, button 0 first (see the package doc).
	Buttons map[string][]string
	// CommandTimeout bounds the wait for a device to confirm a command; 0
	// means 5 s.
	CommandTimeout time.Duration
	// ConnectTimeout bounds Dial; 0 means 10 s.
	ConnectTimeout time.Duration
	// RetryDelay is the wait between connection attempts; 0 means 2 s.
	RetryDelay time.Duration
	// Logger receives what the bridge cannot return: malformed messages,
	// dropped events, lost connections. nil discards.
	Logger *slog.Logger
}

// queueLimit is the most events a device's queue holds.
const queueLimit = 256

// validate fills in defaults and checks the configuration.
func (c *Config) validate() (*url.URL, error) {
	if c.Broker == "" {
		return nil, errors.New("mqtt: config: no broker")
	}
	raw := c.Broker
	if !strings.Contains(raw, "://") {
		raw = "mqtt://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("mqtt: config: broker %q: %w", c.Broker, err)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("mqtt: config: broker %q has no host", c.Broker)
	}
	switch strings.ToLower(u.Scheme) {
	case "mqtt", "tcp", "ssl", "tls", "mqtts", "mqtt+ssl", "tcps", "ws", "wss":
	default:
		return nil, fmt.Errorf("mqtt: config: broker %q: scheme %q is none of mqtt, tcp, tls, mqtts, ssl, ws, wss", c.Broker, u.Scheme)
	}
	if c.ClientID == "" {
		c.ClientID = "osmose-bridge"
	}
	if c.BaseTopic == "" {
		c.BaseTopic = "zigbee2mqtt"
	}
	if err := validTopicPart(c.BaseTopic); err != nil {
		return nil, fmt.Errorf("mqtt: config: base topic %q: %w", c.BaseTopic, err)
	}
	if strings.HasPrefix(c.BaseTopic, "$") {
		return nil, fmt.Errorf("mqtt: config: base topic %q: starts with $, reserved by the broker", c.BaseTopic)
	}
	if strings.ContainsAny(c.ClientID, "+#/") {
		return nil, fmt.Errorf("mqtt: config: client id %q: contains + # or /", c.ClientID)
	}
	if c.CommandTimeout <= 0 {
		c.CommandTimeout = 5 * time.Second
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.RetryDelay <= 0 {
		c.RetryDelay = 2 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return u, nil
}

// Bridge is a connection to a broker and the hardware of the devices
// behind it.
type Bridge struct {
	cfg     Config
	broker  string // the broker's URL, for errors
	log     *slog.Logger
	cm      *autopaho.ConnectionManager
	ctx     context.Context // cancelled by Close; bounds event delivery
	cancel  context.CancelFunc
	devices map[string]*device // by path; fixed after Dial
	routes  map[string]route   // by topic; fixed after Dial
	subs    []paho.SubscribeOptions
	sync    string // the private topic of the subscription barrier
	tx      atomic.Uint64

	syncMu   sync.Mutex
	syncWant string        // payload of the barrier message awaited
	syncGot  chan struct{} // closed when it arrives

	gen       atomic.Uint64 // connections made so far
	connected atomic.Bool
	lastErr   atomic.Pointer[error] // the last connection attempt's error
	firstUp   chan error            // the first subscription's result

	mu      sync.Mutex // guards closed and workers' Add
	closed  bool
	workers sync.WaitGroup
}

// topicKind is what a subscribed topic carries.
type topicKind int

const (
	stateTopic topicKind = iota
	availabilityTopic
	audioTopic
	commandTopic // reserved, never subscribed
)

type route struct {
	dev  *device
	kind topicKind
}

// Dial connects to the broker, subscribes to the topics of cfg.Devices and
// returns when the broker has delivered their retained states (see the
// package doc). It fails with an error naming the broker when no
// connection is made within cfg.ConnectTimeout or ctx ends first. The
// caller closes the Bridge.
func Dial(ctx context.Context, cfg Config) (*Bridge, error) {
	u, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	b := &Bridge{
		cfg:     cfg,
		broker:  u.Redacted(),
		log:     cfg.Logger,
		devices: map[string]*device{},
		routes:  map[string]route{},
		sync:    "osmose/sync/" + cfg.ClientID,
		firstUp: make(chan error, 1),
	}
	if err := b.addDevices(); err != nil {
		return nil, err
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())

	ac := autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{u},
		KeepAlive:                     30,
		CleanStartOnInitialConnection: true,
		// The first attempt of the first connection goes at once; every
		// other waits RetryDelay, reconnections included: a broker needs a
		// moment to clean up after a connection it lost (mochi-mqtt can
		// drop a client that comes back under the same id too fast).
		ReconnectBackoff: func(attempt int) time.Duration {
			if attempt == 0 && b.gen.Load() == 0 {
				return 0
			}
			return cfg.RetryDelay
		},
		ConnectTimeout:  cfg.ConnectTimeout,
		ConnectUsername: cfg.Username,
		ConnectPassword: []byte(cfg.Password),
		OnConnectionUp:  b.connectionUp,
		OnConnectionDown: func() bool {
			b.connected.Store(false)
			b.log.Warn("mqtt: connection to broker lost; reconnecting", "broker", b.broker)
			for _, d := range b.devices {
				d.connectionLost()
			}
			return true
		},
		OnConnectError: func(err error) {
			b.lastErr.Store(&err)
			b.log.Debug("mqtt: connecting to broker failed", "broker", b.broker, "err", err)
		},
		ClientConfig: paho.ClientConfig{
			ClientID:          cfg.ClientID,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){b.receive},
		},
	}
	b.cm, err = autopaho.NewConnection(b.ctx, ac)
	if err != nil {
		b.cancel()
		return nil, fmt.Errorf("mqtt: broker %s: %w", b.broker, err)
	}
	timer := time.NewTimer(cfg.ConnectTimeout)
	defer timer.Stop()
	select {
	case err = <-b.firstUp:
	case <-timer.C:
		err = b.unreachable(fmt.Sprintf("within %v", cfg.ConnectTimeout))
	case <-ctx.Done():
		err = b.unreachable(fmt.Sprintf("when the caller gave up (%v)", ctx.Err()))
	}
	if err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// unreachable is Dial's error when it gave up waiting (why: when).
func (b *Bridge) unreachable(why string) error {
	if b.gen.Load() > 0 {
		return fmt.Errorf("mqtt: broker %s: connected but not subscribed %s", b.broker, why)
	}
	if last := b.lastErr.Load(); last != nil {
		return fmt.Errorf("mqtt: broker %s: not reachable %s: %w", b.broker, why, *last)
	}
	return fmt.Errorf("mqtt: broker %s: not reachable %s", b.broker, why)
}

// addDevices builds the devices of the configuration and their routes.
func (b *Bridge) addDevices() error {
	for _, d := range b.cfg.Devices {
		name := b.cfg.Names[d.Path]
		if name == "" {
			name = FriendlyName(d.Path)
		}
		if err := validName(name); err != nil {
			return fmt.Errorf("mqtt: config: device %s: friendly name %q: %w", d.Path, name, err)
		}
		if _, dup := b.devices[d.Path]; dup {
			return fmt.Errorf("mqtt: config: device %s listed twice", d.Path)
		}
		dev := newDevice(b, d, name, b.cfg.Buttons[d.Path])
		if dev == nil {
			continue // no driver for the class
		}
		b.devices[d.Path] = dev
		topics := map[string]topicKind{dev.stateTopic: stateTopic, dev.stateTopic + "/availability": availabilityTopic}
		if d.Class == schema.DeviceClass_microphone {
			topics[dev.stateTopic+"/audio"] = audioTopic
		}
		for _, t := range []string{dev.stateTopic, dev.stateTopic + "/availability", dev.stateTopic + "/audio", dev.setTopic} {
			if r, ok := b.routes[t]; ok {
				return fmt.Errorf("mqtt: config: devices %s and %s share topic %s", r.dev.path, d.Path, t)
			}
		}
		for t, k := range topics {
			b.routes[t] = route{dev: dev, kind: k}
			b.subs = append(b.subs, paho.SubscribeOptions{Topic: t, QoS: 1})
		}
		// The command topic is reserved too, so that no device's state
		// topic is another's command topic.
		b.routes[dev.setTopic] = route{dev: dev, kind: commandTopic}
	}
	return nil
}

// connectionUp runs on every new connection: it subscribes (again) off
// autopaho's goroutine, which must not block. A connection on which
// subscribing fails is dropped, after RetryDelay, so that a new one tries
// again: the broker may have lost the session (the first connection's
// failure goes to Dial instead).
func (b *Bridge) connectionUp(cm *autopaho.ConnectionManager, _ *paho.Connack) {
	gen := b.gen.Add(1)
	b.spawn(func() {
		err := b.subscribe(cm)
		if err == nil {
			b.connected.Store(true)
			b.log.Info("mqtt: connected and subscribed", "broker", b.broker, "devices", len(b.devices))
		}
		if gen == 1 {
			b.firstUp <- err
			return
		}
		if err == nil {
			return
		}
		b.log.Error("mqtt: subscribing failed; reconnecting", "broker", b.broker, "err", err)
		select {
		case <-time.After(b.cfg.RetryDelay):
		case <-b.ctx.Done():
			return
		}
		if b.gen.Load() == gen {
			// autopaho has no other way to drop a connection.
			cm.TerminateConnectionForTest()
		}
	})
}

// subscribe subscribes to every device topic, in packets of at most 64,
// and waits for the barrier message to come back.
func (b *Bridge) subscribe(cm *autopaho.ConnectionManager) error {
	ctx, cancel := context.WithTimeout(b.ctx, b.cfg.ConnectTimeout)
	defer cancel()
	subs := append([]paho.SubscribeOptions{{Topic: b.sync, QoS: 1}}, b.subs...)
	for len(subs) > 0 {
		n := min(len(subs), 64)
		ack, err := cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: subs[:n]})
		if err != nil {
			return fmt.Errorf("mqtt: broker %s: subscribe: %w", b.broker, err)
		}
		for i, code := range ack.Reasons {
			if code >= 0x80 && i < n {
				return fmt.Errorf("mqtt: broker %s: subscription to %s refused (reason %#x)", b.broker, subs[i].Topic, code)
			}
		}
		subs = subs[n:]
	}
	want := strconv.FormatUint(b.tx.Add(1), 10)
	got := make(chan struct{})
	b.syncMu.Lock()
	b.syncWant, b.syncGot = want, got
	b.syncMu.Unlock()
	if _, err := cm.Publish(ctx, &paho.Publish{Topic: b.sync, QoS: 1, Payload: []byte(want)}); err != nil {
		return fmt.Errorf("mqtt: broker %s: publish to %s: %w", b.broker, b.sync, err)
	}
	select {
	case <-got:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("mqtt: broker %s: own message on %s did not come back: %w", b.broker, b.sync, ctx.Err())
	}
}

// receive routes an incoming message; it runs on paho's goroutine and
// never blocks.
func (b *Bridge) receive(pr paho.PublishReceived) (bool, error) {
	p := pr.Packet
	if p.Topic == b.sync {
		b.syncMu.Lock()
		if b.syncGot != nil && string(p.Payload) == b.syncWant {
			close(b.syncGot)
			b.syncGot = nil
		}
		b.syncMu.Unlock()
		return true, nil
	}
	r, ok := b.routes[p.Topic]
	if !ok {
		return false, nil
	}
	switch r.kind {
	case stateTopic:
		r.dev.receiveState(p.Payload, p.Retain)
	case availabilityTopic:
		r.dev.receiveAvailability(p.Payload)
	case audioTopic:
		r.dev.receiveAudio(p.Payload, p.Retain)
	default:
		return false, nil
	}
	return true, nil
}

// publish sends a command at QoS 0 (see the package doc);
// ErrNotConnected when the connection is down.
func (b *Bridge) publish(ctx context.Context, topic string, payload []byte) error {
	if b.ctx.Err() != nil {
		return ErrClosed
	}
	_, err := b.cm.Publish(ctx, &paho.Publish{Topic: topic, QoS: 0, Payload: payload})
	if errors.Is(err, autopaho.ConnectionDownError) {
		return fmt.Errorf("broker %s: %w", b.broker, ErrNotConnected)
	}
	if err != nil {
		return fmt.Errorf("broker %s: publish to %s: %w", b.broker, topic, err)
	}
	return nil
}

// spawn runs f on a new goroutine that Close waits for; false once the
// bridge is closed.
func (b *Bridge) spawn(f func()) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.workers.Add(1)
	go func() {
		defer b.workers.Done()
		f()
	}()
	return true
}

// Hardware returns the hardware of a device given to Dial, for
// drivers.NewSet: a light's value implements drivers.LightHardware, a
// sensor's drivers.SensorHardware, and so on. It returns nil for a device
// the bridge does not drive.
func (b *Bridge) Hardware(d drivers.Device) any {
	dev, ok := b.devices[d.Path]
	if !ok || dev.class != d.Class {
		return nil
	}
	return dev.hw
}

// Broker returns the broker's address as the bridge names it in errors.
func (b *Bridge) Broker() string { return b.broker }

// Connected reports whether the bridge is connected to the broker and
// subscribed.
func (b *Bridge) Connected() bool { return b.connected.Load() }

// Close disconnects from the broker, fails the commands waiting for
// confirmation with ErrClosed, and waits for event deliveries under way.
func (b *Bridge) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	b.cancel()
	var err error
	if b.cm != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = b.cm.Disconnect(ctx)
		cancel()
	}
	b.workers.Wait()
	b.connected.Store(false)
	if err != nil {
		return fmt.Errorf("mqtt: broker %s: disconnect: %w", b.broker, err)
	}
	return nil
}
