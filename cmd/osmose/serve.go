package main

// osmose serve: run the kernel on a data directory.

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"capnproto.org/go/capnp/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/osmose-os/osmose/caps"
	osmdrivers "github.com/osmose-os/osmose/drivers"
	"github.com/osmose-os/osmose/drivers/mqtt"
	"github.com/osmose-os/osmose/internal/topology"
	"github.com/osmose-os/osmose/kernel"
	"github.com/osmose-os/osmose/kernel/kerneltest"
	"github.com/osmose-os/osmose/ledger"
)

const serveDoc = `
Serve runs the kernel: Cap'n Proto RPC on every --listen address (a Unix
socket path, "unix:PATH", or "tcp:HOST:PORT" / "HOST:PORT"), the ledger in
DIR/ledger (created on first start), the kernel's signing key in
DIR/kernel.key (created on first start, mode 0600; its verifier key is
printed), the building from --topology and the Cedar policy from --policy.

Drivers: --drivers fake (the default) serves every device of the
topology with an in-memory fake from kernel/kerneltest. --drivers mqtt
bridges every device to real hardware over the MQTT broker --broker URL
with Zigbee2MQTT's conventions (package drivers/mqtt: a device's friendly
name is its topology path under --mqtt-base; commands wait up to
--mqtt-timeout for the device's state to confirm them). Note that the
drivers set thermostats (20 °C, off), locks (locked) and speakers (50 %)
to a known state when they start.

On SIGHUP it reads the --policy files again and puts them in force (a
"policy" entry; standing grants the new policy would not give are revoked).
A policy with errors is refused, the errors printed, and the old one stays.
Operators can do the same over RPC (Operator.setPolicy).

With --metrics HOST:PORT it serves the kernel's and the ledger's metrics
over HTTP at /metrics, in the Prometheus text format: gated calls by
decision and their latency (osmose_kernel_*), logins, connections and
calls refused as overloaded; the ledger's lag to durability, sync
latency, entries per group commit and pending entries (osmose_ledger_*);
and the Go runtime's and the process's.

It stops on SIGINT or SIGTERM: connections end, the ledger is closed with a
final checkpoint.`

// listenFlag collects repeated --listen and --policy flags.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

func runServe(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "serve", "serve --data DIR --listen ADDR [--listen ADDR] --topology FILE [--policy FILE] [flags]")
	data := fs.String("data", "", "data `DIR`: ledger/ and kernel.key")
	var listens, policies listFlag
	fs.Var(&listens, "listen", "`ADDR` to serve: a Unix socket path, unix:PATH, tcp:HOST:PORT or HOST:PORT (repeatable)")
	topo := fs.String("topology", "", "topology `FILE` (YAML)")
	fs.Var(&policies, "policy", "Cedar policy `FILE` (repeatable)")
	origin := fs.String("origin", "osmose", "ledger origin and kernel id, for a new ledger")
	drivers := fs.String("drivers", "fake", "driver backend: fake or mqtt")
	broker := fs.String("broker", "", "MQTT broker `URL` (mqtt://host:1883, tls://..., host:port) for --drivers mqtt")
	mqttBase := fs.String("mqtt-base", "zigbee2mqtt", "base topic of the device topics, for --drivers mqtt")
	mqttUser := fs.String("mqtt-user", "", "MQTT user name, for --drivers mqtt")
	mqttPassFile := fs.String("mqtt-password-file", "", "`FILE` holding the MQTT password, for --drivers mqtt")
	mqttTimeout := fs.Duration("mqtt-timeout", 5*time.Second, "how long a command waits for the device to confirm it, for --drivers mqtt")
	maxMsg := fs.Uint64("max-message", 1<<20, "largest Cap'n Proto message accepted, in bytes")
	maxInFlight := fs.Int("max-inflight", 256, "calls in flight per connection before \"overloaded\"")
	metricsAddr := fs.String("metrics", "", "`HOST:PORT` to serve metrics on, at /metrics (Prometheus text format)")
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "usage: osmose serve --data DIR --listen ADDR --topology FILE --policy FILE\n\n%s\n\nFlags:\n", strings.TrimSpace(serveDoc))
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	// SIGHUP reloads the policy once the kernel runs; until then it waits
	// here rather than ending the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	switch {
	case fs.NArg() > 0:
		return usagef("unexpected argument %q", fs.Arg(0))
	case *data == "":
		return usagef("--data DIR is required")
	case len(listens) == 0:
		return usagef("at least one --listen ADDR is required")
	case *topo == "":
		return usagef("--topology FILE is required")
	case *drivers != "fake" && *drivers != "mqtt":
		return usagef("--drivers %q: want fake or mqtt", *drivers)
	case *drivers == "mqtt" && *broker == "":
		return usagef("--drivers mqtt needs --broker URL")
	case *drivers != "mqtt" && *broker != "":
		return usagef("--broker is for --drivers mqtt")
	}
	top, err := topology.Load(*topo)
	if err != nil {
		return failf("%v", err)
	}
	pf, err := readPolicies(policies)
	if err != nil {
		return failf("%v", err)
	}
	if err := os.MkdirAll(*data, 0o755); err != nil {
		return failf("data directory: %v", err)
	}
	key, err := loadOrCreateKey(filepath.Join(*data, "kernel.key"))
	if err != nil {
		return failf("%v", err)
	}
	var meters metric.MeterProvider
	if *metricsAddr != "" {
		mp, stop, err := serveMetrics(e, *metricsAddr)
		if err != nil {
			return failf("--metrics %s: %v", *metricsAddr, err)
		}
		defer stop()
		meters = mp
	}
	store, err := ledger.OpenBadger(filepath.Join(*data, "ledger"), ledger.BadgerOptions{})
	if err != nil {
		return failf("open ledger: %v", err)
	}
	defer store.Close()
	logger := slog.New(slog.NewTextHandler(e.stderr, nil))
	led, err := ledger.Open(ctx, store, ledger.Options{Key: key, Origin: *origin, GenesisTime: time.Now().UnixNano(), Logger: logger, MeterProvider: meters})
	if err != nil {
		return failf("open ledger: %v", err)
	}
	defer led.Close()

	var drv map[string]capnp.Client
	switch *drivers {
	case "fake":
		drv = kerneltest.NewFakes(top, time.Now).Drivers()
	case "mqtt":
		var pass string
		if *mqttPassFile != "" {
			b, err := os.ReadFile(*mqttPassFile)
			if err != nil {
				return failf("--mqtt-password-file: %v", err)
			}
			pass = strings.TrimRight(string(b), "\r\n")
		}
		devs := make([]osmdrivers.Device, len(top.Devices))
		for i, d := range top.Devices {
			devs[i] = osmdrivers.Device{Path: d.Path, Class: d.Class}
		}
		bridge, err := mqtt.Dial(ctx, mqtt.Config{
			Broker: *broker, Username: *mqttUser, Password: pass, BaseTopic: *mqttBase,
			Devices: devs, CommandTimeout: *mqttTimeout, Logger: logger,
		})
		if err != nil {
			return failf("%v", err)
		}
		defer bridge.Close()
		set, err := osmdrivers.NewSet(devs, bridge.Hardware, time.Now)
		if err != nil {
			return failf("drivers: %v", err)
		}
		drv = set.Clients()
		fmt.Fprintf(e.stderr, "drivers: %d devices bridged over MQTT at %s (base topic %s)\n", len(drv), *broker, *mqttBase)
	}
	k, err := kernel.New(kernel.Config{
		Ledger: led, Topology: top, Policy: pf, Drivers: drv,
		Now: time.Now, Rand: rand.Reader, Logger: logger,
		MaxMessageSize: *maxMsg, MaxInFlight: *maxInFlight, MeterProvider: meters,
	})
	if err != nil {
		for _, c := range drv {
			c.Release()
		}
		return failf("%v", err)
	}
	defer k.Close()

	var ls []net.Listener
	for _, a := range listens {
		network, addr := listenAddr(a)
		if network == "unix" {
			os.Remove(addr) // a stale socket of a previous run
		}
		l, err := net.Listen(network, addr)
		if err != nil {
			for _, l := range ls {
				l.Close()
			}
			return failf("listen %s: %v", a, err)
		}
		ls = append(ls, l)
	}
	fmt.Fprintf(e.stderr, "osmose kernel %q: %d places, %d devices, %d principals; ledger %s at size %d; verifier %s\n",
		k.ID(), len(top.Places), len(top.Devices), len(top.Principals), filepath.Join(*data, "ledger"), led.Size(), led.Meta().Verifier)
	// The reloader stops, and is waited for, before the kernel and the
	// ledger close (deferred calls run last first).
	rctx, stopReload := context.WithCancel(ctx)
	reloaded := make(chan struct{})
	go func() {
		defer close(reloaded)
		for {
			select {
			case <-rctx.Done():
				return
			case <-hup:
				reloadPolicy(rctx, e, k, policies)
			}
		}
	}()
	defer func() { stopReload(); <-reloaded }()
	errs := make(chan error, len(ls))
	for _, l := range ls {
		fmt.Fprintf(e.stderr, "serving on %s:%s\n", l.Addr().Network(), l.Addr())
		go func() { errs <- k.Serve(ctx, l) }()
	}
	var first error
	for range ls {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		return failf("serve: %v", first)
	}
	return nil
}

// serveMetrics serves, over HTTP on addr at /metrics, the instruments of
// the meter provider it returns, with the Go runtime's and the process's
// collectors. stop ends the server and the provider.
func serveMetrics(e *env, addr string) (mp metric.MeterProvider, stop func(), err error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, nil, err
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	fmt.Fprintf(e.stderr, "metrics on http://%s/metrics\n", l.Addr())
	return provider, func() {
		srv.Close()
		provider.Shutdown(context.Background())
	}, nil
}

// listenAddr splits a --listen value into network and address.
func listenAddr(a string) (network, addr string) {
	switch {
	case strings.HasPrefix(a, "unix:"):
		return "unix", strings.TrimPrefix(a, "unix:")
	case strings.HasPrefix(a, "tcp:"):
		return "tcp", strings.TrimPrefix(a, "tcp:")
	case strings.Contains(a, "/"):
		return "unix", a
	default:
		return "tcp", a
	}
}

// loadOrCreateKey reads the kernel's ed25519 seed, creating it on first use.
func loadOrCreateKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if len(b) != ed25519.SeedSize {
			return nil, fmt.Errorf("%s: %d bytes, want a %d-byte ed25519 seed", path, len(b), ed25519.SeedSize)
		}
		return ed25519.NewKeyFromSeed(b), nil
	case errors.Is(err, os.ErrNotExist):
		seed := make([]byte, ed25519.SeedSize)
		if _, err := rand.Read(seed); err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, seed, 0o600); err != nil {
			return nil, fmt.Errorf("write kernel key: %w", err)
		}
		return ed25519.NewKeyFromSeed(seed), nil
	default:
		return nil, fmt.Errorf("read kernel key: %w", err)
	}
}

// readPolicies reads the --policy files.
func readPolicies(paths []string) ([]caps.PolicyFile, error) {
	var pf []caps.PolicyFile
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("policy: %w", err)
		}
		pf = append(pf, caps.PolicyFile{Name: p, Text: string(b)})
	}
	return pf, nil
}

// reloadPolicy puts the --policy files in force again (on SIGHUP).
func reloadPolicy(ctx context.Context, e *env, k *kernel.Kernel, paths []string) {
	pf, err := readPolicies(paths)
	if err != nil {
		fmt.Fprintf(e.stderr, "SIGHUP: %v; the policy in force stays\n", err)
		return
	}
	ch, err := k.SetPolicy(ctx, "kernel", pf)
	if err != nil {
		fmt.Fprintf(e.stderr, "SIGHUP: policy refused, the policy in force stays: %v\n", err)
		return
	}
	fmt.Fprintf(e.stderr, "SIGHUP: %s (ledger seq %d); %d grants revoked %v\n", ch.Summary, ch.Seq, len(ch.Revoked), ch.Revoked)
}
