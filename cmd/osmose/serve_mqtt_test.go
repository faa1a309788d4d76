package main

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/osmose-os/osmose/kernel/kerneltest"
	"github.com/osmose-os/osmose/schema"
)

// TestServeMQTT: `osmose serve --drivers mqtt` bridges the building to a
// real MQTT broker (embedded here): a device program's call reaches the
// device's Zigbee2MQTT /set topic, and the device's state message answers
// it. The devices are played by the broker's inline client, which echoes
// every command as the device's new state.
func TestServeMQTT(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	broker := mochi.New(&mochi.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	if err := broker.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	if err := broker.AddListener(listeners.NewNet("loopback", ln)); err != nil {
		t.Fatal(err)
	}
	if err := broker.Serve(); err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	var mu sync.Mutex
	var commands []string
	err = broker.Subscribe("zigbee2mqtt/#", 1, func(_ *mochi.Client, _ packets.Subscription, pk packets.Packet) {
		dev, ok := strings.CutSuffix(pk.TopicName, "/set")
		if !ok {
			return
		}
		mu.Lock()
		commands = append(commands, pk.TopicName+" "+string(pk.Payload))
		mu.Unlock()
		go broker.Publish(dev, pk.Payload, false, 0)
	})
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	top := kerneltest.Building("serve", 1)
	var tb bytes.Buffer
	if err := top.Write(&tb); err != nil {
		t.Fatal(err)
	}
	topo, policy, data := filepath.Join(dir, "b.yaml"), filepath.Join(dir, "p.cedar"), filepath.Join(dir, "data")
	os.WriteFile(topo, tb.Bytes(), 0o644)
	os.WriteFile(policy, []byte(kerneltest.Policy), 0o644)
	sock := filepath.Join(dir, "k.sock")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stderr := &serveLog{wrot: make(chan struct{}, 1)}
	code := make(chan int, 1)
	go func() {
		code <- runMain(ctx, &env{stdout: &bytes.Buffer{}, stderr: stderr},
			[]string{"serve", "--data", data, "--listen", sock, "--topology", topo, "--policy", policy, "--origin", "osmose/serve-test",
				"--drivers", "mqtt", "--broker", ln.Addr().String(), "--mqtt-timeout", "2s"})
	}()
	for !strings.Contains(stderr.String(), "serving on") {
		select {
		case <-stderr.wrot:
		case c := <-code:
			t.Fatalf("serve exited %d: %s", c, stderr.String())
		}
	}
	if !strings.Contains(stderr.String(), "bridged over MQTT") {
		t.Errorf("serve log: %s", stderr.String())
	}
	c, err := kerneltest.Dial(ctx, "unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	id := "cam/pem/f1/r1/light-1"
	s, err := kerneltest.Login(ctx, c.Gateway, "osmose/serve-test", id, kerneltest.Key("serve", id))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	cs, _, err := kerneltest.Open(ctx, s, "cam/pem/f1/r1/light-2")
	if err != nil {
		t.Fatal(err)
	}
	defer cs[0].Release()
	if err := kerneltest.Call(ctx, schema.Light(cs[0]), 50); err != nil {
		t.Fatalf("setLevel through MQTT: %v", err)
	}
	mu.Lock()
	got := strings.Join(commands, "\n")
	mu.Unlock()
	if !strings.Contains(got, "zigbee2mqtt/cam/pem/f1/r1/light-2/set {") || !strings.Contains(got, `"brightness":127`) {
		t.Errorf("commands the broker saw:\n%s", got)
	}
	cancel()
	if c := <-code; c != 0 {
		t.Fatalf("serve exited %d: %s", c, stderr.String())
	}
}
