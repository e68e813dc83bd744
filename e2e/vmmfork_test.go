//go:build e2e

package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/boxd-dev/boxd/vmm/control"
)

// tickScript counts in the guest: one console line "TICK n unix-seconds"
// every 200 ms, forever. The counter lives in the shell's memory, so a
// restored VM that prints n+1 after n continued the very process.
const tickScript = `i=0
while true; do
  i=$((i+1))
  echo "TICK $i $(date +%s)"
  sleep 0.2
done`

// memDir returns a fresh folder on a tmpfs (guest RAM files must be on one
// so forks can hard-link them).
func memDir(t testing.TB) string {
	t.Helper()
	base := "/dev/shm"
	if _, err := os.Stat(base); err != nil {
		base = ""
	}
	d, err := os.MkdirTemp(base, "boxd-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// tick parses a TICK line.
func tick(t testing.TB, line string) (n int, unix int64) {
	t.Helper()
	f := strings.Fields(line[strings.Index(line, "TICK "):])
	if len(f) < 3 {
		t.Fatalf("bad tick line %q", line)
	}
	n, err1 := strconv.Atoi(f[1])
	unix, err2 := strconv.ParseInt(f[2], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("bad tick line %q", line)
	}
	return n, unix
}

// nextTick waits for the VM's next TICK line.
func (v *liveVMM) nextTick(t testing.TB) (int, int64) {
	t.Helper()
	return tick(t, v.waitLine(t, "TICK ", 2*time.Minute))
}

// checkClock fails unless a guest's clock reading is within a few seconds
// of the host's (the guest prints whole seconds; the console adds latency).
func checkClock(t testing.TB, who string, guest int64) {
	t.Helper()
	if d := time.Now().Unix() - guest; d < -3 || d > 10 {
		t.Errorf("%s: guest clock %d is %d s off the host's", who, guest, d)
	}
}

func dialControl(t testing.TB, sock string) *control.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := control.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dialControlWhenUp dials a monitor's control socket once it exists: the
// monitor creates it during its setup, so a refused dial is retried while
// the monitor runs (each attempt waits for the monitor's next console line
// or exit, never a fixed time).
func dialControlWhenUp(t testing.TB, sock string, v *liveVMM) *control.Client {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := control.Dial(ctx, sock)
		cancel()
		if err == nil {
			t.Cleanup(func() { c.Close() })
			return c
		}
		select {
		case <-v.done:
			t.Fatalf("monitor exited before its control socket was up\nstderr:\n%s", v.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("control socket %s: %v", sock, err)
		}
		watchCreate(t, filepath.Dir(sock), time.Second)
	}
}

func ctl(t testing.TB, c *control.Client, req control.Request) control.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	resp, err := c.Do(ctx, req)
	if err != nil {
		t.Fatalf("%s: %v", req.Op, err)
	}
	t.Logf("%s: monitor %d µs, state %s", req.Op, resp.MonitorUs, resp.State)
	return resp
}

// TestVMMForkSuspendRestore drives one monitor through its control socket:
// a running guest process survives a fork into a child, a fork of that
// child, a suspend to disk and a restore, counting on without restarting,
// with the guest clock right; a corrupted snapshot is refused.
func TestVMMForkSuspendRestore(t *testing.T) {
	needKVM(t)
	kern := guestKernel(t)
	rd := initramfs(t, guestScript(tickScript))
	shm := memDir(t)
	sock := filepath.Join(t.TempDir(), "parent.sock")

	parent := startVMM(t, nil, "--kernel", kern, "--initrd", rd, "--mem-mib", "256",
		"--mem-dir", filepath.Join(shm), "--control", sock)
	parent.waitLine(t, "TICK 3 ", 3*time.Minute)
	pc := dialControl(t, sock)

	// Fork: pause, write the snapshot, resume the parent.
	ctl(t, pc, control.Request{Op: control.OpPause})
	snap1 := filepath.Join(shm, "snap1")
	os.Mkdir(snap1, 0o755)
	resp := ctl(t, pc, control.Request{Op: control.OpFork, Dir: snap1})
	if resp.Snapshot == nil || resp.Snapshot.MemBytes != 256<<20 {
		t.Errorf("fork answered %+v, want a snapshot of 256 MiB", resp.Snapshot)
	}
	ctl(t, pc, control.Request{Op: control.OpResume})
	atFork, _ := parent.nextTick(t)

	childMem := filepath.Join(shm, "child")
	os.Mkdir(childMem, 0o755)
	childSock := filepath.Join(t.TempDir(), "child.sock")
	child := startVMM(t, nil, "--restore", snap1, "--mem-dir", childMem, "--control", childSock)
	n, secs := child.nextTick(t)
	if n < 3 || n > atFork+50 {
		t.Errorf("child's first tick is %d; the parent was at %d when forked: the process did not continue", n, atFork)
	}
	checkClock(t, "child", secs)
	// Both keep counting on their own.
	if m, _ := parent.nextTick(t); m <= atFork {
		t.Errorf("parent went from %d to %d after the fork", atFork, m)
	}
	if m, _ := child.nextTick(t); m != n+1 {
		t.Errorf("child went from %d to %d", n, m)
	}
	// The fork directory is not needed once the child runs.
	if err := os.RemoveAll(snap1); err != nil {
		t.Fatal(err)
	}

	// A fork of the fork (its memory is private now: a delta of dirty
	// pages), into a standby monitor built before the child pauses.
	gcSock := filepath.Join(t.TempDir(), "grandchild.sock")
	gc := startVMM(t, nil, "--standby", "--cpus", "1", "--mem-mib", "256", "--mem-dir", memDir(t), "--control", gcSock)
	gcc := dialControlWhenUp(t, gcSock, gc)
	if resp := ctl(t, gcc, control.Request{Op: control.OpStatus}); resp.State != "standby" {
		t.Errorf("standby monitor reports state %q", resp.State)
	}
	cc := dialControl(t, childSock)
	ctl(t, cc, control.Request{Op: control.OpPause})
	snap2 := filepath.Join(shm, "snap2")
	os.Mkdir(snap2, 0o755)
	resp = ctl(t, cc, control.Request{Op: control.OpFork, Dir: snap2})
	if resp.Snapshot == nil || resp.Snapshot.DirtyPages == 0 {
		t.Errorf("fork of a fork answered %+v, want some dirty pages copied", resp.Snapshot)
	}
	ctl(t, cc, control.Request{Op: control.OpResume})
	if resp := ctl(t, gcc, control.Request{Op: control.OpRestore, Dir: snap2}); resp.State != "running" {
		t.Errorf("standby after restore reports state %q", resp.State)
	}
	lastChild, _ := child.nextTick(t)
	if g, _ := gc.nextTick(t); g < n || g > lastChild+50 {
		t.Errorf("grandchild's first tick is %d, child was at %d..%d", g, n, lastChild)
	}

	// Suspend the child to disk: the monitor answers, then exits 5.
	disk := filepath.Join(t.TempDir(), "suspended")
	os.Mkdir(disk, 0o755)
	resp = ctl(t, cc, control.Request{Op: control.OpSuspend, Dir: disk})
	if resp.Snapshot == nil || resp.Snapshot.WrittenBytes == 0 {
		t.Errorf("suspend answered %+v", resp.Snapshot)
	}
	if st := child.wait(t, time.Minute); st != 5 {
		t.Fatalf("suspended monitor exited %d, want 5\nstderr:\n%s", st, child.stderr.String())
	}
	ticks := marks(child.console(), "TICK ")
	lastTick, _ := tick(t, "TICK "+ticks[len(ticks)-2]) // the last line may have been cut by the pause

	// A corrupted copy is refused with a clear error, exit 1.
	bad := filepath.Join(t.TempDir(), "bad")
	copyDir(t, disk, bad)
	flipByte(t, filepath.Join(bad, "state"), 100)
	r := runVMM(t, time.Minute, "--restore", bad)
	if r.Status != 1 || !strings.Contains(r.Stderr, "snapshot") {
		t.Errorf("corrupt snapshot: status %d, stderr %q; want 1 and an error naming the snapshot", r.Status, r.Stderr)
	}

	// Restore from disk: it counts on from where it stopped, with the
	// clock corrected for the time it spent suspended.
	restored := startVMM(t, nil, "--restore", disk, "--mem-dir", memDir(t))
	m, secs := restored.nextTick(t)
	if m <= lastTick || m > lastTick+2 {
		t.Errorf("restored VM printed tick %d after %d", m, lastTick)
	}
	checkClock(t, "restored", secs)
}

func copyDir(t testing.TB, from, to string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o755); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() != "state" { // memory files are shared, not copied
			if err := os.Link(filepath.Join(from, e.Name()), filepath.Join(to, e.Name())); err != nil {
				t.Fatal(err)
			}
			continue
		}
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func flipByte(t testing.TB, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// watchCreate waits until something is created in dir, or timeout (the
// caller re-checks what it waits for either way: a file created before the
// watch began is not missed, only found on the next round).
func watchCreate(t testing.TB, dir string, timeout time.Duration) {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE); err != nil {
		t.Fatal(err)
	}
	unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(timeout.Milliseconds()))
}
