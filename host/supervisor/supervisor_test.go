package supervisor

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/boxd-dev/boxd/agent"
	"github.com/boxd-dev/boxd/internal/fakevmm"
)

func TestMain(m *testing.M) {
	fakevmm.Run()
	os.Exit(m.Run())
}

// exits collects OnExit reports.
type exits chan struct {
	id string
	e  Exit
}

func newSupervisor(t *testing.T) (*Supervisor, exits) {
	t.Helper()
	ch := make(exits, 16)
	s, err := New(Config{
		Exe: os.Args[0],
		Env: []string{fakevmm.Env + "=1"},
		OnExit: func(id string, e Exit) {
			ch <- struct {
				id string
				e  Exit
			}{id, e}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, ch
}

func (c exits) next(t *testing.T) (string, Exit) {
	t.Helper()
	select {
	case x := <-c:
		return x.id, x.e
	case <-time.After(30 * time.Second):
		t.Fatal("no monitor exit reported within 30s")
		return "", Exit{}
	}
}

// testSpec returns a spec whose files live in a fresh short directory (Unix
// socket paths are limited to 108 bytes).
func testSpec(t *testing.T, id string) Spec {
	t.Helper()
	dir, err := os.MkdirTemp("", "sup")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	kernel := filepath.Join(dir, "vmlinux")
	if err := os.WriteFile(kernel, []byte("fake"), 0o644); err != nil {
		t.Fatal(err)
	}
	return Spec{
		ID: id, Kernel: kernel, CPUs: 1, MemMiB: 128,
		CID: 3, VsockPath: filepath.Join(dir, "v.sock"),
		ConsolePath: filepath.Join(dir, "console.log"),
		LogPath:     filepath.Join(dir, "monitor.log"),
		ResultPath:  filepath.Join(dir, "result.json"),
	}
}

// ping dials the guest agent through the monitor's vsock socket, retrying
// with backoff until it answers or the monitor ends.
func ping(t *testing.T, s *Supervisor, spec Spec) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := s.Done(spec.ID)
	for wait := time.Millisecond; ; wait = min(2*wait, 100*time.Millisecond) {
		c, err := agent.Dial(ctx, spec.VsockPath)
		if err == nil {
			defer c.Close()
			if err := c.Ping(ctx); err != nil {
				t.Fatal(err)
			}
			return
		}
		select {
		case <-done:
			t.Fatalf("monitor ended before its agent answered: %v", err)
		case <-ctx.Done():
			t.Fatalf("agent did not answer: %v", err)
		case <-time.After(wait):
		}
	}
}

func kill(t *testing.T, pid int) {
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
}

func TestStartStop(t *testing.T) {
	s, ch := newSupervisor(t)
	spec := testSpec(t, "aaaaaaaaaaaa")
	id, err := s.Start(spec)
	if err != nil {
		t.Fatal(err)
	}
	kill(t, id.PID)
	ping(t, s, spec)
	if _, err := s.Start(spec); err == nil {
		t.Error("a second Start of the same VM succeeded")
	}
	e, err := s.Stop(context.Background(), spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := Exit{Status: 0, Result: "host-stop", Detail: "fake monitor", Requested: true}
	if diff := cmp.Diff(want, e, cmpExit); diff != "" {
		t.Errorf("Stop (-want +got):\n%s", diff)
	}
	gotID, reported := ch.next(t)
	if gotID != spec.ID || !reported.Requested {
		t.Errorf("OnExit(%q, %+v), want the requested stop of %s", gotID, reported, spec.ID)
	}
	if s.Running(spec.ID) {
		t.Error("still running after Stop")
	}
	if _, err := s.Stop(context.Background(), spec.ID); !errors.Is(err, ErrGone) {
		t.Errorf("Stop of a stopped monitor = %v, want ErrGone", err)
	}
	log, _ := os.ReadFile(spec.LogPath)
	if !strings.Contains(string(log), "boxd: starting monitor") || !strings.Contains(string(log), "host-stop") {
		t.Errorf("monitor log lacks the start line or the monitor's output:\n%s", log)
	}
}

var cmpExit = cmp.FilterPath(func(p cmp.Path) bool {
	return p.Last().String() == ".At" || p.Last().String() == ".Monitor"
}, cmp.Ignore())

func TestExitStatuses(t *testing.T) {
	tests := []struct {
		name string
		sig  syscall.Signal
		want Exit
	}{
		{"reboot", syscall.SIGUSR1, Exit{Status: 3, Result: "reboot", Detail: "fake monitor"}},
		{"crash", syscall.SIGUSR2, Exit{Status: 4, Result: "crash", Detail: "fake monitor"}},
		{"killed", syscall.SIGKILL, Exit{Status: -1, Signal: "SIGKILL"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, ch := newSupervisor(t)
			spec := testSpec(t, "bbbbbbbbbbbb")
			id, err := s.Start(spec)
			if err != nil {
				t.Fatal(err)
			}
			kill(t, id.PID)
			ping(t, s, spec) // the fake handles signals once it serves
			syscall.Kill(id.PID, tt.sig)
			_, e := ch.next(t)
			if diff := cmp.Diff(tt.want, e, cmpExit); diff != "" {
				t.Errorf("exit (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMonitorFailsAtOnce(t *testing.T) {
	s, ch := newSupervisor(t)
	spec := testSpec(t, "cccccccccccc")
	spec.Cmdline = "fake.exit=1"
	if _, err := s.Start(spec); err != nil {
		t.Fatal(err)
	}
	_, e := ch.next(t)
	if e.Status != 1 || e.Result != "fake-exit" {
		t.Errorf("exit %+v, want status 1 from the fake's result", e)
	}
}

func TestAdoptAfterRestart(t *testing.T) {
	first, _ := newSupervisor(t)
	spec := testSpec(t, "dddddddddddd")
	id, err := first.Start(spec)
	if err != nil {
		t.Fatal(err)
	}
	kill(t, id.PID)
	ping(t, first, spec)
	first.Close() // as a daemon that goes away: the monitor keeps running

	second, ch := newSupervisor(t)
	stale := id
	stale.StartTime++
	if err := second.Adopt(spec, stale); !errors.Is(err, ErrGone) {
		t.Fatalf("Adopt with the wrong start time = %v, want ErrGone", err)
	}
	if err := second.Adopt(spec, id); err != nil {
		t.Fatal(err)
	}
	ping(t, second, spec)
	syscall.Kill(id.PID, syscall.SIGUSR2)
	_, e := ch.next(t)
	want := Exit{Status: 4, Result: "crash", Detail: "fake monitor"}
	if diff := cmp.Diff(want, e, cmpExit); diff != "" {
		t.Errorf("adopted exit (-want +got):\n%s", diff)
	}
}

func TestAdoptThenStopAndKill(t *testing.T) {
	first, _ := newSupervisor(t)
	a, b := testSpec(t, "eeeeeeeeeeee"), testSpec(t, "ffffffffffff")
	ida, err := first.Start(a)
	if err != nil {
		t.Fatal(err)
	}
	kill(t, ida.PID)
	idb, err := first.Start(b)
	if err != nil {
		t.Fatal(err)
	}
	kill(t, idb.PID)
	ping(t, first, a)
	ping(t, first, b)
	first.Close()

	second, ch := newSupervisor(t)
	for _, x := range []struct {
		s  Spec
		id Identity
	}{{a, ida}, {b, idb}} {
		if err := second.Adopt(x.s, x.id); err != nil {
			t.Fatal(err)
		}
	}
	e, err := second.Stop(context.Background(), a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if e.Status != 0 || e.Result != "host-stop" || !e.Requested {
		t.Errorf("Stop of an adopted monitor = %+v", e)
	}
	ch.next(t)
	syscall.Kill(idb.PID, syscall.SIGKILL)
	_, e = ch.next(t)
	if e.Status != -1 || !strings.Contains(e.Detail, "without a result file") {
		t.Errorf("adopted monitor killed: %+v, want status -1 and no result", e)
	}
}

func TestIdentify(t *testing.T) {
	id, err := Identify(os.Getpid())
	if err != nil || id.PID != os.Getpid() || id.StartTime == 0 || id.BootID == "" {
		t.Fatalf("Identify(self) = %+v, %v", id, err)
	}
	if err := check(id); err != nil {
		t.Errorf("check(self) = %v", err)
	}
	if _, err := Identify(1 << 30); !errors.Is(err, ErrGone) {
		t.Errorf("Identify(no such pid) = %v, want ErrGone", err)
	}
}

func TestParseStat(t *testing.T) {
	tail := " S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 777 20 21"
	tests := []struct {
		in        string
		state     string
		start     uint64
		wantError bool
	}{
		{in: "42 (boxd)" + tail, state: "S", start: 777},
		{in: "42 (a b) (c))" + tail, state: "S", start: 777},
		{in: "42 (x) Z 1 2", wantError: true},
		{in: "no parens", wantError: true},
		{in: "42 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 notanumber", wantError: true},
	}
	for _, tt := range tests {
		state, start, err := parseStat(tt.in)
		if (err != nil) != tt.wantError || state != tt.state || start != tt.start {
			t.Errorf("parseStat(%q) = %q, %d, %v", tt.in, state, start, err)
		}
	}
}

func TestSpecArgs(t *testing.T) {
	s := Spec{
		ID: "x", Kernel: "/k", Initrd: "/i", Cmdline: "boxd.ip=10.0.0.2/24 quiet", CPUs: 2, MemMiB: 512,
		Disks: []Disk{{Path: "/d.img"}, {Path: "/ro.img", ReadOnly: true, Serial: "s1"}},
		TAP:   "bx0123", MAC: "52:54:00:00:00:01", CID: 7, VsockPath: "/run/v.sock",
		ConsolePath: "/c.log", LogPath: "/m.log", ResultPath: "/r.json",
	}
	want := []string{
		"--kernel", "/k", "--cpus", "2", "--mem-mib", "512", "--console", "/c.log", "--result-json", "/r.json",
		"--initrd", "/i", "--cmdline", "boxd.ip=10.0.0.2/24 quiet",
		"--disk", "/d.img", "--disk", "/ro.img,ro,id=s1",
		"--net", "tap=bx0123,mac=52:54:00:00:00:01", "--vsock", "cid=7,path=/run/v.sock",
	}
	if diff := cmp.Diff(want, s.Args()); diff != "" {
		t.Errorf("Args (-want +got):\n%s", diff)
	}
	if err := s.validate(); err != nil {
		t.Errorf("validate = %v", err)
	}
	s.Disks[0].Path = "/a,b"
	if err := s.validate(); err == nil {
		t.Error("a disk path with a comma was accepted")
	}
}

func TestSpecArgsRestore(t *testing.T) {
	s := Spec{
		ID: "x", Kernel: "/k", Initrd: "/i", Cmdline: "quiet", CPUs: 2, MemMiB: 512,
		Restore: "/dev/shm/boxd/forks/s1", MemDir: "/dev/shm/boxd/x", LayerDir: "/v/layers", ControlPath: "/v/control.sock",
		Disks: []Disk{{Path: "cow:/d.cow"}}, TAP: "bx1", MAC: "52:54:00:00:00:02", CID: 9, VsockPath: "/v/vsock.sock",
		ConsolePath: "/c.log", LogPath: "/m.log", ResultPath: "/r.json",
	}
	// The snapshot decides kernel, command line, vCPUs and memory.
	want := []string{
		"--restore", "/dev/shm/boxd/forks/s1", "--console", "/c.log", "--result-json", "/r.json",
		"--mem-dir", "/dev/shm/boxd/x", "--layer-dir", "/v/layers", "--control", "/v/control.sock",
		"--disk", "cow:/d.cow", "--net", "tap=bx1,mac=52:54:00:00:00:02", "--vsock", "cid=9,path=/v/vsock.sock",
	}
	if diff := cmp.Diff(want, s.Args()); diff != "" {
		t.Errorf("Args (-want +got):\n%s", diff)
	}
	s.Kernel, s.CPUs, s.MemMiB = "", 0, 0
	if err := s.validate(); err != nil {
		t.Errorf("a restore without kernel or sizes: validate = %v", err)
	}
	s.Restore = ""
	if err := s.validate(); err == nil {
		t.Error("a spec with neither kernel nor snapshot was accepted")
	}
}
