package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/osmose-os/osmose/kernel/kerneltest"
	"github.com/osmose-os/osmose/schema"
)

// serveLog is a log buffer safe for a writer and a reader.
type serveLog struct {
	mu   sync.Mutex
	b    bytes.Buffer
	wrot chan struct{}
}

func (s *serveLog) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := s.b.Write(p)
	select {
	case s.wrot <- struct{}{}:
	default:
	}
	return n, err
}

func (s *serveLog) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestServe(t *testing.T) {
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
	stderr := &serveLog{wrot: make(chan struct{}, 1)}
	code := make(chan int, 1)
	go func() {
		code <- runMain(ctx, &env{stdout: &bytes.Buffer{}, stderr: stderr},
			[]string{"serve", "--data", data, "--listen", sock, "--listen", "tcp:127.0.0.1:0", "--topology", topo, "--policy", policy, "--origin", "osmose/serve-test", "--metrics", "127.0.0.1:0"})
	}()
	tcp := regexp.MustCompile(`serving on tcp:(\S+)`)
	for tcp.FindStringSubmatch(stderr.String()) == nil {
		select {
		case <-stderr.wrot:
		case c := <-code:
			t.Fatalf("serve exited %d: %s", c, stderr.String())
		}
	}
	addr := tcp.FindStringSubmatch(stderr.String())[1]
	for _, target := range []struct{ network, addr string }{{"unix", sock}, {"tcp", addr}} {
		c, err := kerneltest.Dial(ctx, target.network, target.addr)
		if err != nil {
			t.Fatal(err)
		}
		id := "cam/pem/f1/r1/light-1"
		s, err := kerneltest.Login(ctx, c.Gateway, "osmose/serve-test", id, kerneltest.Key("serve", id))
		if err != nil {
			t.Fatalf("%s: %v", target.network, err)
		}
		cs, _, err := kerneltest.Open(ctx, s, "cam/pem/f1/r1/light-2")
		if err != nil {
			t.Fatal(err)
		}
		if err := kerneltest.Call(ctx, schema.Light(cs[0]), 30); err != nil {
			t.Fatal(err)
		}
		cs[0].Release()
		s.Release()
		c.Close()
	}

	// The metrics: the two calls, the logins, the ledger's syncs.
	metricsURL := regexp.MustCompile(`metrics on (http://\S+/metrics)`).FindStringSubmatch(stderr.String())
	if metricsURL == nil {
		t.Fatalf("no metrics address: %s", stderr.String())
	}
	resp, err := http.Get(metricsURL[1])
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d, %v", resp.StatusCode, err)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^osmose_kernel_calls_total\{[^}]*decision="admit"[^}]*\} 2$`),
		regexp.MustCompile(`(?m)^osmose_kernel_call_duration_seconds_count\{[^}]*decision="admit"[^}]*\} 2$`),
		regexp.MustCompile(`(?m)^osmose_kernel_call_duration_seconds_bucket\{[^}]*decision="admit"[^}]*le="0.0001"\} 0$`),
		regexp.MustCompile(`(?m)^osmose_kernel_logins_total\{[^}]*decision="admit"[^}]*\} 2$`),
		regexp.MustCompile(`(?m)^osmose_ledger_sync_duration_seconds_count\{[^}]*\} [1-9]`),
		regexp.MustCompile(`(?m)^go_goroutines `),
	} {
		if !want.Match(body) {
			t.Errorf("/metrics has no line matching %s:\n%s", want, body)
		}
	}

	// SIGHUP reloads the policy: a bad one is refused, a good one revokes
	// the grants it no longer gives.
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
	hup := func(want string) {
		t.Helper()
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		for !strings.Contains(stderr.String(), want) {
			select {
			case <-stderr.wrot:
			case <-time.After(10 * time.Second):
				t.Fatalf("no %q after SIGHUP: %s", want, stderr.String())
			}
		}
	}
	os.WriteFile(policy, []byte("permit (principal, action, resource) when { principal.nosuch };\n"), 0o644)
	hup("SIGHUP: policy refused")
	if err := kerneltest.Call(ctx, schema.Light(cs[0]), 40); err != nil {
		t.Fatalf("call after a refused policy: %v", err)
	}
	os.WriteFile(policy, []byte("permit (principal is Operator, action, resource);\n"), 0o644)
	hup("SIGHUP: loaded 1 policies")
	if err := kerneltest.Call(ctx, schema.Light(cs[0]), 50); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("call after the new policy: %v, want revoked", err)
	}

	cancel()
	if c := <-code; c != 0 {
		t.Fatalf("serve exited %d: %s", c, stderr.String())
	}
	// The ledger it leaves verifies.
	var out bytes.Buffer
	if c := runMain(context.Background(), &env{stdout: &out, stderr: &out}, []string{"ledger", "verify", "--data", data}); c != 0 {
		t.Fatalf("ledger verify exited %d: %s", c, out.String())
	}
}
