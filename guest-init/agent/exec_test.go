package agent_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/boxd-dev/boxd/agent"
	server "github.com/boxd-dev/boxd/guest-init/agent"
)

// run executes req, collecting output through writers.
func run(t *testing.T, c *agent.Client, req agent.ExecRequest) (stdout, stderr string, st agent.ExitStatus) {
	t.Helper()
	var out, errb bytes.Buffer
	req.Stdout, req.Stderr = &out, &errb
	p, err := c.Exec(context.Background(), req)
	if err != nil {
		t.Fatalf("Exec(%q %q): %v", req.Argv, req.Shell, err)
	}
	st, err = p.Wait()
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	return out.String(), errb.String(), st
}

func TestExecStatus(t *testing.T) {
	c, _ := startServer(t, server.Options{})
	tests := []struct {
		name       string
		req        agent.ExecRequest
		wantOut    string
		wantErr    string
		wantStatus agent.ExitStatus
	}{
		{"true", agent.ExecRequest{Argv: []string{"true"}}, "", "", agent.ExitStatus{}},
		{"exit 3", agent.ExecRequest{Shell: "exit 3"}, "", "", agent.ExitStatus{Code: 3}},
		{"streams", agent.ExecRequest{Shell: "echo out; echo err >&2"}, "out\n", "err\n", agent.ExitStatus{}},
		{"killed", agent.ExecRequest{Shell: "kill -KILL $$"}, "", "", agent.ExitStatus{Code: -1, Signal: syscall.SIGKILL}},
		{"env and dir", agent.ExecRequest{Shell: `echo "$FOO $PWD"`, Env: []string{"FOO=bar"}, Dir: "/tmp"}, "bar /tmp\n", "", agent.ExitStatus{}},
		{"argv unsplit", agent.ExecRequest{Argv: []string{"printf", "%s|", "a b", "c"}}, "a b|c|", "", agent.ExitStatus{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errs, st := run(t, c, tt.req)
			if diff := cmp.Diff(tt.wantStatus, st); diff != "" {
				t.Errorf("status (-want +got):\n%s", diff)
			}
			if out != tt.wantOut || errs != tt.wantErr {
				t.Errorf("stdout %q stderr %q, want %q %q", out, errs, tt.wantOut, tt.wantErr)
			}
		})
	}
}

func TestExecUname(t *testing.T) {
	c, _ := startServer(t, server.Options{})
	out, _, st := run(t, c, agent.ExecRequest{Argv: []string{"uname", "-a"}})
	if st.Code != 0 || !strings.HasPrefix(out, "Linux ") {
		t.Errorf("uname -a: %v, %q", st, out)
	}
}

func TestExecStartErrors(t *testing.T) {
	c, _ := startServer(t, server.Options{})
	tests := []struct {
		name string
		req  agent.ExecRequest
		want error
	}{
		{"missing program", agent.ExecRequest{Argv: []string{"no-such-program-boxd"}}, fs.ErrNotExist},
		{"missing dir", agent.ExecRequest{Argv: []string{"true"}, Dir: "/no/such/dir"}, fs.ErrNotExist},
		{"unknown user", agent.ExecRequest{Argv: []string{"true"}, User: "no-such-user-boxd"}, fs.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Exec(context.Background(), tt.req)
			if !errors.Is(err, tt.want) {
				t.Errorf("Exec: %v, want %v", err, tt.want)
			}
		})
	}
	if _, err := c.Exec(context.Background(), agent.ExecRequest{}); err == nil {
		t.Error("Exec with neither Argv nor Shell succeeded")
	}
}

func TestExecUser(t *testing.T) {
	if syscall.Getuid() != 0 {
		t.Skip("switching users needs root")
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody here")
	}
	c, _ := startServer(t, server.Options{})
	for _, spec := range []string{"nobody", u.Uid, "4321:4322"} {
		out, _, st := run(t, c, agent.ExecRequest{Shell: "echo $(id -u):$(id -g)", User: spec})
		want := u.Uid + ":" + u.Gid + "\n"
		if spec == "4321:4322" {
			want = "4321:4322\n"
		}
		if st.Code != 0 || out != want {
			t.Errorf("user %q: %v, %q, want %q", spec, st, out, want)
		}
	}
}

func TestExecStdinEcho(t *testing.T) {
	c, _ := startServer(t, server.Options{})
	in := make([]byte, 3<<20+7)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range in {
		in[i] = byte(r.Uint32())
	}
	out, _, st := run(t, c, agent.ExecRequest{Argv: []string{"cat"}, Stdin: bytes.NewReader(in)})
	if st.Code != 0 || out != string(in) {
		t.Errorf("cat: %v, %d bytes back of %d, equal=%v", st, len(out), len(in), out == string(in))
	}

	// An open stdin: write, close, read everything back.
	p, err := c.Exec(context.Background(), agent.ExecRequest{Argv: []string{"cat"}, OpenStdin: true})
	if err != nil {
		t.Fatal(err)
	}
	tl := newTail(p.Stdout)
	go io.Copy(io.Discard, p.Stderr)
	if _, err := p.Stdin.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	tl.waitFor(t, 0, "hello\n") // echoed before stdin closes: truly streamed
	if err := p.CloseStdin(); err != nil {
		t.Fatal(err)
	}
	if st, err := p.Wait(); err != nil || st.Code != 0 {
		t.Errorf("Wait: %v %v", st, err)
	}
}

// TestExecLargeInterleaved writes 5 MiB to each of stdout and stderr
// concurrently and checks both byte for byte, reading through the readers
// (flow control back to the process) rather than writers.
func TestExecLargeInterleaved(t *testing.T) {
	c, _ := startServer(t, server.Options{})
	const n = 5 << 20
	p, err := c.Exec(context.Background(), agent.ExecRequest{
		Shell: "(yes stdout-line | head -c 5242880) & (yes stderr-line | head -c 5242880 >&2) & wait",
	})
	if err != nil {
		t.Fatal(err)
	}
	sum := func(r io.Reader, res chan<- [32]byte) {
		h := sha256.New()
		io.Copy(h, r)
		res <- [32]byte(h.Sum(nil))
	}
	outc, errc := make(chan [32]byte), make(chan [32]byte)
	go sum(p.Stdout, outc)
	go sum(p.Stderr, errc)
	gotOut, gotErr := <-outc, <-errc
	st, err := p.Wait()
	if err != nil || st.Code != 0 {
		t.Fatalf("Wait: %v %v", st, err)
	}
	want := func(line string) [32]byte {
		return sha256.Sum256([]byte(strings.Repeat(line+"\n", n/len(line+"\n")+1)[:n]))
	}
	if gotOut != want("stdout-line") {
		t.Error("stdout differs")
	}
	if gotErr != want("stderr-line") {
		t.Error("stderr differs")
	}
}

func TestExecTimeout(t *testing.T) {
	c, _ := startServer(t, server.Options{})
	tests := []struct {
		name  string
		req   agent.ExecRequest
		check func(agent.ExitStatus) bool
	}{
		{"kill", agent.ExecRequest{Shell: "echo $$ $$; exec sleep 100", Timeout: 300 * time.Millisecond},
			func(st agent.ExitStatus) bool { return st.TimedOut && st.Signal == syscall.SIGKILL && st.Code == -1 }},
		{"tree", agent.ExecRequest{Shell: "sleep 100 & echo $$ $!; wait", Timeout: 300 * time.Millisecond},
			func(st agent.ExitStatus) bool { return st.TimedOut && st.Signal == syscall.SIGKILL }},
		{"grace", agent.ExecRequest{Shell: "trap 'exit 7' TERM; sleep 100 & echo $$ $!; wait",
			Timeout: 300 * time.Millisecond, KillGrace: 30 * time.Second},
			func(st agent.ExitStatus) bool { return st.TimedOut && st.Code == 7 && st.Signal == 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := c.Exec(context.Background(), tt.req)
			if err != nil {
				t.Fatal(err)
			}
			go io.Copy(io.Discard, p.Stderr)
			pids := strings.Fields(readLine(t, p.Stdout))
			go io.Copy(io.Discard, p.Stdout)
			st, err := p.Wait()
			if err != nil || !tt.check(st) {
				t.Fatalf("Wait: %+v %v", st, err)
			}
			for _, s := range pids {
				pid, _ := strconv.Atoi(s)
				eventually(t, "pid "+s+" to be gone", func() bool { return gone(pid) })
			}
		})
	}
}

func TestExecPTY(t *testing.T) {
	c, _ := startServer(t, server.Options{})
	p, err := c.Exec(context.Background(), agent.ExecRequest{
		Argv:      []string{"sh"},
		OpenStdin: true,
		PTY:       &agent.PTY{Rows: 24, Cols: 80},
	})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := io.Copy(io.Discard, p.Stderr); n != 0 || err != nil {
		t.Errorf("stderr with a PTY: %d bytes, %v", n, err)
	}
	tl := newTail(p.Stdout)
	io.WriteString(p.Stdin, "echo $((6*7))\n")
	off := tl.waitFor(t, 0, "42")
	io.WriteString(p.Stdin, "stty size\n")
	off = tl.waitFor(t, off, "24 80")
	if err := p.Resize(33, 101); err != nil {
		t.Fatal(err)
	}
	io.WriteString(p.Stdin, "stty size; tty\n")
	off = tl.waitFor(t, off, "33 101")
	tl.waitFor(t, off, "/dev/pts/")
	io.WriteString(p.Stdin, "exit 5\n")
	if st, err := p.Wait(); err != nil || st.Code != 5 {
		t.Errorf("Wait: %v %v", st, err)
	}
}

func TestExecSignal(t *testing.T) {
	c, _ := startServer(t, server.Options{})
	p, err := c.Exec(context.Background(), agent.ExecRequest{Shell: "echo ready; exec sleep 100"})
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, p.Stderr)
	if got := readLine(t, p.Stdout); got != "ready" {
		t.Fatalf("got %q", got)
	}
	if err := p.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	st, err := p.Wait()
	if err != nil || st.Signal != syscall.SIGINT || st.TimedOut {
		t.Errorf("Wait: %+v %v", st, err)
	}
}

// TestDisconnectKillsForeground: a client that goes away mid-stream takes its
// foreground processes, and their children, with it.
func TestDisconnectKillsForeground(t *testing.T) {
	_, sock := startServer(t, server.Options{})
	c := dial(t, sock)
	p, err := c.Exec(context.Background(), agent.ExecRequest{Shell: "sleep 100 & echo $$ $!; while :; do echo tick; sleep 0.05; done"})
	if err != nil {
		t.Fatal(err)
	}
	pids := strings.Fields(readLine(t, p.Stdout))
	if len(pids) != 2 {
		t.Fatalf("pids %q", pids)
	}
	c.Close()
	for _, s := range pids {
		pid, _ := strconv.Atoi(s)
		eventually(t, "pid "+s+" to be gone", func() bool { return gone(pid) })
	}
	if _, err := p.Wait(); err == nil {
		t.Error("Wait after Close succeeded")
	}
}

func TestExecContextCancelKills(t *testing.T) {
	c, _ := startServer(t, server.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	p, err := c.Exec(ctx, agent.ExecRequest{Shell: "echo $$; exec sleep 100"})
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(readLine(t, p.Stdout))
	cancel()
	if _, err := p.Wait(); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait: %v, want context.Canceled", err)
	}
	eventually(t, "the process to be gone", func() bool { return gone(pid) })
	if err := c.Ping(context.Background()); err != nil {
		t.Errorf("connection unusable after a cancelled exec: %v", err)
	}
}

// TestExecBackpressure: output nobody reads stops the process in write(2),
// as a full pipe would, instead of piling up in the agent.
func TestExecBackpressure(t *testing.T) {
	c, _ := startServer(t, server.Options{})
	p, err := c.Exec(context.Background(), agent.ExecRequest{Shell: "echo $$ >&2; exec head -c 104857600 /dev/zero"})
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(readLine(t, p.Stderr))
	wchan := fmt.Sprintf("/proc/%d/wchan", pid)
	if _, err := os.ReadFile(wchan); err != nil {
		t.Skipf("no /proc/PID/wchan here: %v", err)
	}
	eventually(t, "the writer to block on its pipe", func() bool {
		b, _ := os.ReadFile(wchan)
		return strings.HasSuffix(string(b), "pipe_write")
	})
	n, err := io.Copy(io.Discard, p.Stdout) // now drain: everything arrives
	if err != nil || n != 100<<20 {
		t.Errorf("drained %d bytes, %v", n, err)
	}
	if st, err := p.Wait(); err != nil || st.Code != 0 {
		t.Errorf("Wait: %v %v", st, err)
	}
}
