package mqtt_test

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// testBroker is a real MQTT broker on a loopback port that a test can stop
// and start again on the same address.
type testBroker interface {
	addr() string
	stop()
	start(t *testing.T)
}

// embedded is the mochi-mqtt broker, in process.
type embedded struct {
	address string
	ln      net.Listener
	srv     *mochi.Server
}

// startEmbedded starts a mochi-mqtt broker on a free loopback port.
func startEmbedded(t *testing.T) *embedded {
	b := &embedded{address: "127.0.0.1:0"}
	b.start(t)
	t.Cleanup(b.stop)
	return b
}

func (b *embedded) addr() string { return b.address }

func (b *embedded) start(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", b.address)
	if err != nil {
		t.Fatalf("embedded broker: %v", err)
	}
	b.address = ln.Addr().String()
	srv := mochi.New(&mochi.Options{Logger: slog.New(slog.DiscardHandler)})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddListener(listeners.NewNet("loopback", ln)); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	b.ln, b.srv = ln, srv
}

// stop closes the listener before the server: mochi-mqtt disconnects its
// clients first and closes the listener after, and a client reconnecting
// in between is accepted and then neither served nor closed.
func (b *embedded) stop() {
	if b.srv != nil {
		b.ln.Close()
		b.srv.Close()
		b.srv = nil
	}
}

// mosquitto is Debian's mosquitto, run by the test.
type mosquitto struct {
	bin, conf, address string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan error // receives the running process's exit
	log    strings.Builder
}

// requireMosquitto is the environment variable that turns a missing
// mosquitto into a failure (.ci/run sets it).
const requireMosquitto = "OSMOSE_REQUIRE_MOSQUITTO"

// startMosquitto starts mosquitto on a free loopback port, or skips the
// test when it is not installed (fails when OSMOSE_REQUIRE_MOSQUITTO=1).
func startMosquitto(t *testing.T) *mosquitto {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/mosquitto"); serr == nil {
			bin, err = "/usr/sbin/mosquitto", nil
		}
	}
	if err != nil {
		if os.Getenv(requireMosquitto) == "1" {
			t.Fatalf("mosquitto not found (%v) and %s=1: install it (apt-get install mosquitto)", err, requireMosquitto)
		}
		t.Skipf("mosquitto not installed (apt-get install mosquitto to run these tests; %s=1 makes this a failure)", requireMosquitto)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // mosquitto binds it next; another process taking it first would fail start below
	_, port, _ := net.SplitHostPort(addr)
	conf := filepath.Join(t.TempDir(), "mosquitto.conf")
	text := fmt.Sprintf("listener %s 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\npersistence false\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n", port)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	m := &mosquitto{bin: bin, conf: conf, address: addr}
	m.start(t)
	t.Cleanup(m.stop)
	return m
}

func (m *mosquitto) addr() string { return m.address }

// start runs mosquitto and returns once it says it is running.
func (m *mosquitto) start(t *testing.T) {
	t.Helper()
	cmd := exec.Command(m.bin, "-c", m.conf)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("mosquitto: %v", err)
	}
	running := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			m.mu.Lock()
			m.log.WriteString(sc.Text() + "\n")
			m.mu.Unlock()
			if strings.Contains(sc.Text(), " running") {
				once.Do(func() { close(running) })
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case <-running:
	case err := <-exited:
		m.mu.Lock()
		defer m.mu.Unlock()
		t.Fatalf("mosquitto exited (%v):\n%s", err, m.log.String())
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("mosquitto not running after 10 s:\n%s", m.log.String())
	}
	m.mu.Lock()
	m.cmd, m.exited = cmd, exited
	m.mu.Unlock()
}

func (m *mosquitto) stop() {
	m.mu.Lock()
	cmd, exited := m.cmd, m.exited
	m.cmd = nil
	m.mu.Unlock()
	if cmd != nil {
		cmd.Process.Kill()
		<-exited
	}
}
