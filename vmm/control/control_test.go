package control

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fakeVM is a Handler that records what it was asked.
type fakeVM struct {
	mu     sync.Mutex
	paused bool
	ops    []Request
}

func (f *fakeVM) Do(req Request, resp *Response) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ops = append(f.ops, req)
	switch req.Op {
	case OpPause:
		if f.paused {
			return errors.New("already paused")
		}
		f.paused = true
	case OpResume:
		f.paused = false
	case OpFork:
		if !f.paused {
			return errors.New("pause first")
		}
		resp.Snapshot = &SnapshotInfo{Dir: req.Dir, MemBytes: 1 << 28}
	}
	resp.State = map[bool]string{true: "paused", false: "running"}[f.paused]
	return nil
}

func serve(t *testing.T, h Handler) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "control.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	s := Serve(ln, h)
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return path
}

func TestClientServer(t *testing.T) {
	vm := &fakeVM{}
	ctx := context.Background()
	c, err := Dial(ctx, serve(t, vm))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	if _, err := c.Fork(ctx, "/tmp/snap"); err == nil || !strings.Contains(err.Error(), "pause first") {
		t.Errorf("fork of a running VM: %v, want the handler's refusal", err)
	}
	var e *Error
	if _, err := c.Fork(ctx, "/tmp/snap"); !errors.As(err, &e) || e.Op != OpFork {
		t.Errorf("refusal is %T %v, want *Error for fork", err, err)
	}
	resp, err := c.Pause(ctx)
	if err != nil || resp.State != "paused" {
		t.Fatalf("pause: %+v, %v", resp, err)
	}
	resp, err = c.Fork(ctx, "/tmp/snap")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(&SnapshotInfo{Dir: "/tmp/snap", MemBytes: 1 << 28}, resp.Snapshot); d != "" {
		t.Errorf("fork snapshot (-want +got):\n%s", d)
	}
	if resp, err = c.Resume(ctx); err != nil || resp.State != "running" {
		t.Errorf("resume: %+v, %v", resp, err)
	}
	if resp, err = c.Status(ctx); err != nil || resp.State != "running" || resp.MonitorUs < 0 {
		t.Errorf("status: %+v, %v", resp, err)
	}
	want := []string{OpFork, OpFork, OpPause, OpFork, OpResume, OpStatus}
	var got []string
	for _, r := range vm.ops {
		got = append(got, r.Op)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("ops reaching the handler (-want +got):\n%s", d)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		req  Request
		want string // "" valid
	}{
		{Request{Op: OpStatus}, ""},
		{Request{Op: OpPause}, ""},
		{Request{Op: OpFork, Dir: "/var/lib/boxd/snap"}, ""},
		{Request{Op: OpSuspend, Dir: "/x"}, ""},
		{Request{Op: OpRestore, Dir: "/x/snap"}, ""},
		{Request{Op: OpRestore}, "absolute"},
		{Request{}, "without an op"},
		{Request{Op: "reboot"}, "unknown op"},
		{Request{Op: OpPause, Dir: "/x"}, "takes no dir"},
		{Request{Op: OpFork}, "absolute"},
		{Request{Op: OpFork, Dir: "snap"}, "absolute"},
		{Request{Op: OpSuspend, Dir: "/a/../b"}, "clean"},
	} {
		err := tc.req.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Validate(%+v) = %v, want %q", tc.req, err, tc.want)
		}
	}
}

// Bad lines get an error response and leave the connection usable; none
// reaches the handler.
func TestServerRefusesBadLines(t *testing.T) {
	vm := &fakeVM{}
	conn, err := net.Dial("unix", serve(t, vm))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := &Client{conn: conn}
	c.r = newReader(conn)
	for _, line := range []string{"not json", `{"op":"explode"}`, `{"op":"fork","dir":"rel"}`, `[1,2]`} {
		if _, err := conn.Write([]byte(line + "\n")); err != nil {
			t.Fatal(err)
		}
		got, err := c.r.ReadString('\n')
		if err != nil || !strings.Contains(got, `"ok":false`) {
			t.Errorf("line %q: response %q, %v; want a refusal", line, got, err)
		}
	}
	if resp, err := c.Status(context.Background()); err != nil || !resp.OK {
		t.Errorf("status after bad lines: %+v, %v", resp, err)
	}
	if len(vm.ops) != 1 {
		t.Errorf("handler saw %d requests, want only the status", len(vm.ops))
	}
}

func TestServerLineTooLong(t *testing.T) {
	conn, err := net.Dial("unix", serve(t, &fakeVM{}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go conn.Write([]byte(strings.Repeat("x", MaxLine+10) + "\n"))
	got, err := newReader(conn).ReadString('\n')
	if err != nil || !strings.Contains(got, "too long") {
		t.Errorf("response %q, %v; want a too-long refusal", got, err)
	}
}

func TestClientContextCancel(t *testing.T) {
	block := make(chan struct{})
	h := HandlerFunc(func(Request, *Response) error { <-block; return nil })
	path := serve(t, h)
	defer close(block)
	c, err := Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := c.Pause(ctx); done <- err }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("pause with a cancelled context: %v, want context.Canceled", err)
	}
}

func FuzzServerLine(f *testing.F) {
	for _, s := range []string{`{"op":"pause"}`, `{"op":"fork","dir":"/s"}`, `{"op":"suspend","dir":"/a/../b"}`, `{"op":1}`, `{}`, "\x00"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		var seen []Request
		s := &Server{h: HandlerFunc(func(r Request, _ *Response) error { seen = append(seen, r); return nil })}
		resp := s.do(line)
		for _, r := range seen {
			if err := r.Validate(); err != nil {
				t.Fatalf("handler got invalid request %+v: %v", r, err)
			}
		}
		if resp.OK != (len(seen) == 1) {
			t.Fatalf("OK=%v after %d handler calls", resp.OK, len(seen))
		}
	})
}

// A handler that ends the monitor (suspend) is still answered when the
// monitor closes the server right after.
func TestCloseAnswersInFlight(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	handled := make(chan struct{})
	release := make(chan struct{})
	s := Serve(ln, HandlerFunc(func(Request, *Response) error {
		close(handled)
		<-release
		return nil
	}))
	c, err := Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan error, 1)
	go func() { _, err := c.Suspend(context.Background(), "/snap"); done <- err }()
	<-handled
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	close(release)
	if err := <-done; err != nil {
		t.Errorf("suspend answered with %v, want success", err)
	}
	if err := <-closed; err != nil {
		t.Errorf("close: %v", err)
	}
}
