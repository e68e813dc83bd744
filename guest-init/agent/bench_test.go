package agent_test

import (
	"context"
	"os/exec"
	"testing"

	"github.com/boxd-dev/boxd/agent"
	server "github.com/boxd-dev/boxd/guest-init/agent"
)

func benchClient(b *testing.B) *agent.Client {
	a, s := socketPair(b)
	srv := server.New(server.Options{Kmsg: "-"})
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	go srv.ServeConn(ctx, s)
	c, err := agent.NewClient(ctx, a)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

// BenchmarkPing is the bare request/response round trip over a socketpair.
func BenchmarkPing(b *testing.B) {
	c := benchClient(b)
	ctx := context.Background()
	for b.Loop() {
		if err := c.Ping(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkExecTrue is the round trip of running `true`: open, fork/exec,
// reap, close. Compare with BenchmarkPing for the cost of the process.
func BenchmarkExecTrue(b *testing.B) {
	c := benchClient(b)
	ctx := context.Background()
	for b.Loop() {
		p, err := c.Exec(ctx, agent.ExecRequest{Argv: []string{"/bin/true"}})
		if err != nil {
			b.Fatal(err)
		}
		if st, err := p.Wait(); err != nil || st.Code != 0 {
			b.Fatal(st, err)
		}
	}
}

// BenchmarkPingParallel measures many concurrent calls sharing one connection.
func BenchmarkPingParallel(b *testing.B) {
	c := benchClient(b)
	ctx := context.Background()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := c.Ping(ctx); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkLocalExecTrue runs `true` with os/exec directly: the floor under
// BenchmarkExecTrue, so the difference is what the protocol adds.
func BenchmarkLocalExecTrue(b *testing.B) {
	for b.Loop() {
		if err := exec.Command("/bin/true").Run(); err != nil {
			b.Fatal(err)
		}
	}
}
