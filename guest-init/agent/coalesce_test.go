package agent_test

import (
	"bufio"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/boxd-dev/boxd/agent"
	server "github.com/boxd-dev/boxd/guest-init/agent"
)

// heldProcess runs a shell script that waits for a file the test creates,
// so the test decides when the process ends. It returns the process and a
// function that lets it end.
func heldProcess(t *testing.T, c *agent.Client, script string) (*agent.Process, func()) {
	t.Helper()
	gate := filepath.Join(t.TempDir(), "go")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	p, err := c.Exec(ctx, agent.ExecRequest{Shell: script + `; while [ ! -e "$GATE" ]; do sleep 0.01; done`, Env: []string{"GATE=" + gate}})
	if err != nil {
		t.Fatal(err)
	}
	return p, func() {
		if err := os.WriteFile(gate, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// Exec returns (the Reply arrives) while the process still runs: the held
// Reply goes out after Options.Coalesce at the latest. The test would hang
// (and fail on its deadline) if the Reply waited for the exit.
func TestCoalesceReplyWhileRunning(t *testing.T) {
	c, _ := startServer(t, server.Options{Coalesce: time.Millisecond})
	p, release := heldProcess(t, c, "true")
	if p.Pid <= 0 {
		t.Errorf("pid %d", p.Pid)
	}
	release()
	if st, err := p.Wait(); err != nil || st.Code != 0 {
		t.Errorf("wait: %+v, %v", st, err)
	}
}

// Output is never held behind the Reply: a running process's first line is
// readable before it ends, even with a long Coalesce.
func TestCoalesceOutputNotHeld(t *testing.T) {
	c, _ := startServer(t, server.Options{Coalesce: time.Hour})
	p, release := heldProcess(t, c, "echo first")
	line, err := bufio.NewReader(p.Stdout).ReadString('\n')
	if err != nil || line != "first\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	release()
	go io.Copy(io.Discard, p.Stderr)
	rest, _ := io.ReadAll(p.Stdout)
	if st, err := p.Wait(); err != nil || st.Code != 0 || len(rest) != 0 {
		t.Errorf("wait: %+v, %v, rest %q", st, err, rest)
	}
}

// A process that closes its stdout and runs on gets EOF on it (after the
// Coalesce delay), not only at its exit.
func TestCoalesceEOFWhileRunning(t *testing.T) {
	c, _ := startServer(t, server.Options{Coalesce: time.Millisecond})
	p, release := heldProcess(t, c, "echo bye; exec >&- 2>&-")
	out, err := io.ReadAll(p.Stdout)
	if err != nil || string(out) != "bye\n" {
		t.Fatalf("stdout %q, %v", out, err)
	}
	if _, err := io.ReadAll(p.Stderr); err != nil {
		t.Fatal(err)
	}
	release()
	if st, err := p.Wait(); err != nil || st.Code != 0 {
		t.Errorf("wait: %+v, %v", st, err)
	}
}

// Short commands, whose whole answer leaves in one write, report exactly
// what eager sending reports.
func TestCoalesceSameResults(t *testing.T) {
	for _, d := range []time.Duration{-1, time.Hour} {
		c, _ := startServer(t, server.Options{Coalesce: d})
		for range 20 {
			out, errs, st := run(t, c, agent.ExecRequest{Shell: "echo out; echo err >&2; exit 7"})
			if out != "out\n" || errs != "err\n" || st.Code != 7 {
				t.Fatalf("coalesce %v: stdout %q stderr %q status %+v", d, out, errs, st)
			}
		}
	}
}
