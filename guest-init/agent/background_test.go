package agent_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/boxd-dev/boxd/agent"
	server "github.com/boxd-dev/boxd/guest-init/agent"
)

// TestBackground starts a process that outlives its connection, follows it,
// detaches mid-run, and re-attaches to see the whole output replayed.
func TestBackground(t *testing.T) {
	c, sock := startServer(t, server.Options{})
	ctx := context.Background()
	// The process waits for a file before finishing, so the test decides when
	// it ends without sleeping.
	gate := t.TempDir() + "/go"
	info, err := c.Spawn(ctx, agent.ExecRequest{
		Shell: "for i in 1 2 3; do echo $i; sleep 0.01; done; echo err >&2; " +
			"while [ ! -e " + gate + " ]; do sleep 0.01; done; echo 4; exit 9",
	})
	if err != nil {
		t.Fatal(err)
	}
	if info.ID == "" || info.Pid <= 0 {
		t.Fatalf("Spawn: %+v", info)
	}

	p, err := c.Attach(ctx, info.ID, agent.AttachOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tl := newTail(p.Stdout)
	tl.waitFor(t, 0, "1\n2\n3\n")
	p.Close() // detach
	if _, err := p.Wait(); err == nil {
		t.Error("Wait after detaching succeeded")
	}

	// The connection goes away; the process does not.
	c.Close()
	c2 := dial(t, sock)
	ps, err := c2.ListProcesses(ctx)
	if err != nil || len(ps) != 1 || ps[0].ID != info.ID || ps[0].Exit != nil {
		t.Fatalf("ListProcesses: %+v %v", ps, err)
	}
	if err := c2.WriteFile(ctx, gate, 0o644, strings.NewReader("")); err != nil {
		t.Fatal(err)
	}
	st, err := c2.WaitProcess(ctx, info.ID)
	if err != nil || st.Code != 9 {
		t.Fatalf("WaitProcess: %v %v", st, err)
	}

	var out, errs bytes.Buffer
	p, err = c2.Attach(ctx, info.ID, agent.AttachOptions{Stdout: &out, Stderr: &errs})
	if err != nil {
		t.Fatal(err)
	}
	st, err = p.Wait()
	if err != nil || st.Code != 9 {
		t.Fatalf("attached Wait: %v %v", st, err)
	}
	if out.String() != "1\n2\n3\n4\n" || errs.String() != "err\n" || p.Dropped() != 0 {
		t.Errorf("replay: stdout %q stderr %q dropped %d", out.String(), errs.String(), p.Dropped())
	}
	ps, _ = c2.ListProcesses(ctx)
	if len(ps) != 1 || ps[0].Exit == nil || ps[0].Exit.Code != 9 {
		t.Errorf("ListProcesses after exit: %+v", ps)
	}
	if err := c2.SignalProcess(ctx, info.ID, syscall.SIGTERM); err == nil {
		t.Error("signalling an ended process succeeded")
	}
	if _, err := c2.WaitProcess(ctx, "p999"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("WaitProcess(unknown): %v", err)
	}
}

// TestBackgroundRing: a process that writes more than the ring holds keeps
// running at full speed; a late attacher sees the newest bytes and a count of
// the dropped ones.
func TestBackgroundRing(t *testing.T) {
	c, _ := startServer(t, server.Options{RingSize: 64 << 10})
	ctx := context.Background()
	info, err := c.Spawn(ctx, agent.ExecRequest{Shell: "yes 0123456789abcde | head -c 1048576; echo end"})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := c.WaitProcess(ctx, info.ID); err != nil || st.Code != 0 {
		t.Fatalf("WaitProcess: %v %v", st, err)
	}
	var out bytes.Buffer
	p, err := c.Attach(ctx, info.ID, agent.AttachOptions{Stdout: &out, Stderr: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	total := int64(1<<20 + len("end\n"))
	if int64(out.Len())+p.Dropped() != total || out.Len() > 64<<10 || !strings.HasSuffix(out.String(), "end\n") {
		t.Errorf("got %d bytes + %d dropped, want %d in all, at most 64 KiB kept", out.Len(), p.Dropped(), total)
	}
}

func TestBackgroundSignal(t *testing.T) {
	c, _ := startServer(t, server.Options{})
	ctx := context.Background()
	info, err := c.Spawn(ctx, agent.ExecRequest{Shell: "sleep 100 & echo $!; wait"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Attach(ctx, info.ID, agent.AttachOptions{Stderr: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	child, _ := strconv.Atoi(readLine(t, p.Stdout))
	if err := c.SignalProcess(ctx, info.ID, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	st, err := c.WaitProcess(ctx, info.ID)
	if err != nil || st.Signal != syscall.SIGTERM {
		t.Fatalf("WaitProcess: %+v %v", st, err)
	}
	eventually(t, "the group's child to be gone", func() bool { return gone(child) })
}

func TestSpawnRejectsStreams(t *testing.T) {
	c, _ := startServer(t, server.Options{})
	if _, err := c.Spawn(context.Background(), agent.ExecRequest{Argv: []string{"true"}, OpenStdin: true}); err == nil {
		t.Error("Spawn with stdin succeeded")
	}
}

// TestDescendantHoldsOutput: a daemon left behind holding stdout, or the
// terminal, does not keep the exec from finishing.
func TestDescendantHoldsOutput(t *testing.T) {
	c, _ := startServer(t, server.Options{})
	for _, pty := range []*agent.PTY{nil, {Rows: 10, Cols: 10}} {
		out, _, st := run(t, c, agent.ExecRequest{Shell: "sleep 100 & echo $!", PTY: pty})
		if st.Code != 0 {
			t.Errorf("pty=%v: %v", pty != nil, st)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(out))
		if err != nil {
			t.Fatalf("pty=%v: output %q", pty != nil, out)
		}
		syscall.Kill(pid, syscall.SIGKILL)
	}
}
