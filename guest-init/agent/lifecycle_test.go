package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/boxd-dev/boxd/agent"
	"github.com/boxd-dev/boxd/agent/wire"
	server "github.com/boxd-dev/boxd/guest-init/agent"
)

// fakeSystem records lifecycle calls instead of changing the host.
type fakeSystem struct {
	mu    sync.Mutex
	calls []string
}

func (f *fakeSystem) record(format string, v any) error {
	b, _ := json.Marshal(v)
	f.mu.Lock()
	f.calls = append(f.calls, format+" "+string(b))
	f.mu.Unlock()
	return nil
}

func (f *fakeSystem) Reseed(seed []byte) error { return f.record("reseed", seed) }
func (f *fakeSystem) SetNetwork(cfg wire.NetworkConfig) error {
	return f.record("network", cfg)
}
func (f *fakeSystem) SetClock(t time.Time) error { return f.record("clock", t.UnixNano()) }

func TestLifecycle(t *testing.T) {
	sys := &fakeSystem{}
	c, _ := startServer(t, server.Options{System: sys})
	ctx := context.Background()
	net := agent.NetworkConfig{MAC: "02:00:00:00:00:01", Address: "10.0.0.2/24", Gateway: "10.0.0.1",
		DNS: []string{"10.0.0.1"}, Hostname: "task-1"}
	for _, err := range []error{
		c.Reseed(ctx, []byte{1, 2, 3}),
		c.SetNetwork(ctx, net),
		c.SetClock(ctx, time.Unix(1700000000, 5)),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	want := []string{
		`reseed "AQID"`,
		`network {"mac":"02:00:00:00:00:01","address":"10.0.0.2/24","gateway":"10.0.0.1","dns":["10.0.0.1"],"hostname":"task-1"}`,
		`clock 1700000000000000005`,
	}
	if diff := cmp.Diff(want, sys.calls); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}

	bad := []agent.NetworkConfig{
		{Address: "10.0.0.2"},
		{Gateway: "gw"},
		{DNS: []string{"dns.example"}},
		{Hostname: "bad host"},
		{MAC: "zz"},
	}
	for _, cfg := range bad {
		if err := c.SetNetwork(ctx, cfg); !errors.Is(err, fs.ErrInvalid) {
			t.Errorf("SetNetwork(%+v): %v, want invalid", cfg, err)
		}
	}
	if err := c.Reseed(ctx, nil); err == nil {
		t.Error("empty reseed accepted")
	}
	if len(sys.calls) != len(want) {
		t.Errorf("invalid requests reached the system: %v", sys.calls[len(want):])
	}
}

// TestResetVsock: the agent drops connections and serves a new listener.
func TestResetVsock(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	listen := func() (net.Listener, error) { return net.Listen("unix", sock) }
	ln, err := listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- server.Serve(ctx, ln, server.Options{Listen: listen, Kmsg: "-"}) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	c := dial(t, sock)
	other := dial(t, sock)
	if err := c.ResetVsock(ctx); err != nil {
		t.Fatal(err)
	}
	for _, cl := range []*agent.Client{c, other} {
		<-cl.Done()
	}
	// The new listener may take a moment to appear after the old one closed.
	var c2 *agent.Client
	eventually(t, "the agent to listen again", func() bool {
		conn, err := net.Dial("unix", sock)
		if err != nil {
			return false
		}
		c2, err = agent.NewClient(ctx, conn)
		return err == nil
	})
	defer c2.Close()
	if err := c2.Ping(ctx); err != nil {
		t.Error(err)
	}
}

// TestServerRefusesOtherMajor speaks a future major to the server: the
// server answers with its own Hello, then closes.
func TestServerRefusesOtherMajor(t *testing.T) {
	a, b := socketPair(t)
	srv := server.New(server.Options{Kmsg: "-"})
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeConn(context.Background(), b) }()
	p, _ := json.Marshal(wire.Hello{Major: wire.Major + 1, Window: wire.DefaultWindow})
	frame, _ := wire.AppendFrame(nil, wire.Frame{Type: wire.TypeHello, Payload: p})
	if _, err := a.Write(frame); err != nil {
		t.Fatal(err)
	}
	r := wire.NewReader(a)
	f, err := r.Next()
	if err != nil || f.Type != wire.TypeHello {
		t.Fatalf("server's answer: %v %v", f.Type, err)
	}
	var h wire.Hello
	if err := json.Unmarshal(f.Payload, &h); err != nil || h.Major != wire.Major {
		t.Errorf("server hello %+v %v", h, err)
	}
	if _, err := r.Next(); !errors.Is(err, io.EOF) {
		t.Errorf("after hello: %v, want EOF", err)
	}
	if err := <-errc; !errors.Is(err, wire.ErrVersion) {
		t.Errorf("ServeConn: %v, want ErrVersion", err)
	}
}

func TestSocketPairPing(t *testing.T) {
	a, b := socketPair(t)
	srv := server.New(server.Options{Kmsg: "-"})
	go srv.ServeConn(context.Background(), b)
	c, err := agent.NewClient(context.Background(), a)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !c.Server().Has(wire.CapPTY) || c.Server().Major != wire.Major {
		t.Errorf("server hello %+v", c.Server())
	}
	if err := c.Ping(context.Background()); err != nil {
		t.Error(err)
	}
}
