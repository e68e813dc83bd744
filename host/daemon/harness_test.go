package daemon_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/boxd-dev/boxd/host/api"
	"github.com/boxd-dev/boxd/host/client"
	"github.com/boxd-dev/boxd/host/daemon"
	"github.com/boxd-dev/boxd/host/quota"
	"github.com/boxd-dev/boxd/host/supervisor"
	"github.com/boxd-dev/boxd/internal/fakevmm"
	goldenfile "github.com/boxd-dev/boxd/internal/golden"
)

func TestMain(m *testing.M) {
	fakevmm.Run()
	os.Exit(m.Run())
}

// harness runs a daemon over fake monitors, network and storage, and can
// restart it on the same state directory.
type harness struct {
	t        testing.TB
	dir      string // short: socket paths must stay under 108 bytes
	net      *fakeNetwork
	stor     *fakeStorage
	cfg      daemon.Config
	d        *daemon.Daemon
	c        *client.Client
	stopServ context.CancelFunc
	served   chan error

	mu   sync.Mutex
	pids map[int]bool // every monitor seen, killed at the end
}

type option func(*daemon.Config)

func withLimits(f func(*quota.Limits)) option {
	return func(c *daemon.Config) {
		c.Limits = func(l quota.Limits) quota.Limits { f(&l); return l }
	}
}

func withCmdline(s string) option { return func(c *daemon.Config) { c.Cmdline = s } }

func withBootTimeout(d time.Duration) option { return func(c *daemon.Config) { c.BootTimeout = d } }

func newHarness(t testing.TB, opts ...option) *harness {
	t.Helper()
	dir, err := os.MkdirTemp("", "bxd")
	if err != nil {
		t.Fatal(err)
	}
	kernel := filepath.Join(dir, "vmlinux")
	if err := os.WriteFile(kernel, []byte("fake kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	disks := filepath.Join(dir, "disks")
	os.Mkdir(disks, 0o700)
	h := &harness{t: t, dir: dir, net: newFakeNetwork(), stor: &fakeStorage{dir: disks}, pids: map[int]bool{}}
	h.cfg = daemon.Config{
		StateDir: filepath.Join(dir, "state"),
		MemDir:   filepath.Join(dir, "mem"),
		Kernel:   kernel,
		Network:  h.net,
		Storage:  h.stor,
		Monitor:  supervisor.Config{Exe: os.Args[0], Env: []string{fakevmm.Env + "=1"}},
		// Generous: the fake boots in milliseconds, but a loaded machine
		// must not fail the test; nothing waits for this unless it fails.
		BootTimeout: 30 * time.Second,
		Version:     api.VersionInfo{Version: "test", GoVersion: "go"},
		Probe:       fakeProbe,
		Logf:        t.Logf,
	}
	for _, o := range opts {
		o(&h.cfg)
	}
	t.Cleanup(h.cleanup)
	h.start()
	return h
}

func (h *harness) start() {
	h.t.Helper()
	d, err := daemon.Open(context.Background(), h.cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	sock := filepath.Join(h.dir, "boxd.sock")
	ln, err := daemon.Listen(sock)
	if err != nil {
		d.Close()
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.d, h.c, h.stopServ, h.served = d, client.New(sock), cancel, make(chan error, 1)
	go func() { h.served <- d.Serve(ctx, ln) }()
}

// stop stops the daemon as a restart would: monitors keep running.
func (h *harness) stop() {
	h.t.Helper()
	if h.d == nil {
		return
	}
	h.c.Close()
	h.stopServ()
	if err := <-h.served; err != nil {
		h.t.Errorf("Serve: %v", err)
	}
	if err := h.d.Close(); err != nil {
		h.t.Errorf("Close: %v", err)
	}
	h.d = nil
}

func (h *harness) restart() {
	h.t.Helper()
	h.stop()
	h.start()
}

func (h *harness) cleanup() {
	h.stop()
	h.mu.Lock()
	for pid := range h.pids {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	h.mu.Unlock()
	os.RemoveAll(h.dir)
}

func (h *harness) track(vm api.VM) api.VM {
	if vm.PID != 0 {
		h.mu.Lock()
		h.pids[vm.PID] = true
		h.mu.Unlock()
	}
	return vm
}

func (h *harness) create(req api.CreateRequest) api.VM {
	h.t.Helper()
	vm, err := h.c.Create(context.Background(), req)
	if err != nil {
		h.t.Fatalf("create %+v: %v", req, err)
	}
	return h.track(vm)
}

func (h *harness) get(name string) api.VM {
	h.t.Helper()
	vm, err := h.c.Get(context.Background(), name)
	if err != nil {
		h.t.Fatal(err)
	}
	return h.track(vm)
}

// waitFor polls the VM until cond holds, with backoff, for at most 30 s:
// monitors end asynchronously and the API is how a client learns of it.
func (h *harness) waitFor(name, what string, cond func(api.VM) bool) api.VM {
	h.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		vm, err := h.c.Get(context.Background(), name)
		if err == nil {
			h.track(vm)
			if cond(vm) {
				return vm
			}
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("VM %s: not %s within 30s (last: %+v, %v)", name, what, vm, err)
		}
		time.Sleep(wait)
	}
}

func (h *harness) exec(name string, req api.ExecRequest) api.ExecResult {
	h.t.Helper()
	res, err := h.c.Exec(context.Background(), name, req)
	if err != nil {
		h.t.Fatalf("exec %+v: %v", req, err)
	}
	return res
}

// waitGone waits until process pid has ended, through a pidfd (no polling).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	deadline := time.Now().Add(30 * time.Second)
	var n int
	for {
		n, err = unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(time.Until(deadline).Milliseconds()))
		if !errors.Is(err, unix.EINTR) || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || n != 1 {
		t.Fatalf("pid %d still runs after 30s (%v)", pid, err)
	}
}

// alive reports whether pid runs (a zombie does not).
func alive(pid int) bool {
	_, err := supervisor.Identify(pid)
	return err == nil
}

func apiCode(err error) string {
	var e *api.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// golden checks v's JSON against testdata/name.
func golden(t *testing.T, name string, v any) {
	t.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	goldenfile.Check(t, name, b.Bytes())
}

func openDaemon(cfg daemon.Config) (*daemon.Daemon, error) {
	return daemon.Open(context.Background(), cfg)
}
