package agent_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/boxd-dev/boxd/agent"
	server "github.com/boxd-dev/boxd/guest-init/agent"
)

// nextMatching reads events until one satisfies match.
func nextMatching(t *testing.T, sub *agent.Subscription, what string, match func(agent.Event) bool) agent.Event {
	t.Helper()
	for {
		ev, err := sub.Next()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if match(ev) {
			return ev
		}
	}
}

func TestEventsPorts(t *testing.T) {
	c, _ := startServer(t, server.Options{PortPollInterval: 10 * time.Millisecond})
	// A safety net, not a timing assertion: a missing event fails the test
	// instead of hanging it.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sub, err := c.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	want := agent.Port{Proto: "tcp", Addr: "127.0.0.1", Port: port}
	nextMatching(t, sub, "port_open", func(ev agent.Event) bool {
		return ev.Type == agent.EventPortOpen && ev.Port != nil && *ev.Port == want
	})
	// A second subscriber learns of the port from the snapshot at once.
	sub2, err := c.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	nextMatching(t, sub2, "port_open snapshot", func(ev agent.Event) bool {
		return ev.Type == agent.EventPortOpen && ev.Port != nil && *ev.Port == want
	})
	sub2.Close()
	ln.Close()
	nextMatching(t, sub, "port_close", func(ev agent.Event) bool {
		return ev.Type == agent.EventPortClose && ev.Port != nil && *ev.Port == want
	})
}

func TestEventsProcessExit(t *testing.T) {
	c, _ := startServer(t, server.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sub, err := c.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	info, err := c.Spawn(ctx, agent.ExecRequest{Shell: "exit 4"})
	if err != nil {
		t.Fatal(err)
	}
	ev := nextMatching(t, sub, "process_exit", func(ev agent.Event) bool {
		return ev.Type == agent.EventProcessExit && ev.Process != nil && ev.Process.ID == info.ID
	})
	if ev.Process.Exit.Code != 4 || ev.Process.Pid != info.Pid {
		t.Errorf("event %+v", ev.Process)
	}
}

func TestSubscribeCancel(t *testing.T) {
	c, _ := startServer(t, server.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	sub, err := c.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	for {
		if _, err := sub.Next(); err != nil {
			break
		}
	}
	if err := c.Ping(context.Background()); err != nil {
		t.Error(err)
	}
}
