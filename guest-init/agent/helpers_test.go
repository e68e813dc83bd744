package agent_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/boxd-dev/boxd/agent"
	server "github.com/boxd-dev/boxd/guest-init/agent"
)

// startServer runs an agent on a Unix socket in a temporary directory and
// returns a client connected to it. Everything stops at the end of the test.
func startServer(t testing.TB, opts server.Options) (*agent.Client, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	if opts.Kmsg == "" {
		opts.Kmsg = "-"
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- server.Serve(ctx, ln, opts) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return dial(t, sock), sock
}

func dial(t testing.TB, sock string) *agent.Client {
	t.Helper()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	c, err := agent.NewClient(context.Background(), conn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// socketPair returns the two ends of a connected Unix stream socket pair.
func socketPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var conns [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	return conns[0], conns[1]
}

// gone reports whether pid no longer runs: no /proc entry, or a zombie that
// nothing has reaped yet (it runs no code).
func gone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	return b[i+2] == 'Z' || b[i+2] == 'X'
}

// eventually polls cond until it holds or the test's deadline nears. It is a
// readiness check for effects outside the protocol (a process dying), not a
// timing assertion.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	if d, ok := t.Deadline(); ok && d.Add(-5*time.Second).Before(deadline) {
		deadline = d.Add(-5 * time.Second)
	}
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// tail accumulates a stream in the background and lets a test wait for text.
type tail struct {
	mu   sync.Mutex
	cond sync.Cond
	buf  bytes.Buffer
	err  error
}

func newTail(r io.Reader) *tail {
	tl := &tail{}
	tl.cond.L = &tl.mu
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := r.Read(b)
			tl.mu.Lock()
			tl.buf.Write(b[:n])
			if err != nil {
				tl.err = err
			}
			tl.cond.Broadcast()
			tl.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return tl
}

// waitFor blocks until the stream holds s (after offset from), returning the
// offset after it, or fails when the stream ends first.
func (tl *tail) waitFor(t *testing.T, from int, s string) int {
	t.Helper()
	tl.mu.Lock()
	defer tl.mu.Unlock()
	for {
		if i := strings.Index(tl.buf.String()[from:], s); i >= 0 {
			return from + i + len(s)
		}
		if tl.err != nil {
			t.Fatalf("stream ended (%v) without %q; got %q", tl.err, s, tl.buf.String())
		}
		tl.cond.Wait()
	}
}

func readLine(t *testing.T, r io.Reader) string {
	t.Helper()
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil {
		t.Fatalf("read line: %v (got %q)", err, line)
	}
	return strings.TrimSpace(line)
}
