package daemon_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/boxd-dev/boxd/agent"
	"github.com/boxd-dev/boxd/host/api"
	"github.com/boxd-dev/boxd/internal/fakevmm"
)

// guestOf reads a VM's fake guest identity from its folder.
func (h *harness) guestOf(vm api.VM) fakevmm.Guest {
	h.t.Helper()
	data, err := os.ReadFile(filepath.Join(h.cfg.StateDir, "vms", vm.ID, fakevmm.GuestFile))
	if err != nil {
		h.t.Fatal(err)
	}
	var g fakevmm.Guest
	if err := json.Unmarshal(data, &g); err != nil {
		h.t.Fatal(err)
	}
	return g
}

// wantRefused checks that err is an API error of code whose message has all
// of parts.
func wantRefused(t *testing.T, what string, err error, code string, parts ...string) {
	t.Helper()
	if apiCode(err) != code {
		t.Errorf("%s: %v, want %s", what, err, code)
		return
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("%s: %q does not say %q", what, err, p)
		}
	}
}

func TestSuspendResumeInMemory(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	vm := h.create(api.CreateRequest{Name: "s", MemMiB: 64, DiskGiB: 1})
	// A guest clock an hour behind: resume must set it to the host's.
	ac, err := agent.Dial(ctx, filepath.Join(h.cfg.StateDir, "vms", vm.ID, "vsock.sock"))
	if err != nil {
		t.Fatal(err)
	}
	if err := ac.SetClock(ctx, time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	ac.Close()
	got, err := h.c.Suspend(ctx, "s", false)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != "suspended" || got.PID != vm.PID || !alive(vm.PID) || got.Timing == nil {
		t.Errorf("after suspend: %+v (timing %+v), want suspended with the same monitor running", got, got.Timing)
	}
	_, err = h.c.Exec(ctx, "s", api.ExecRequest{Shell: "true"})
	wantRefused(t, "exec on a suspended VM", err, api.CodeState, "suspended: boxd resume s")
	_, err = h.c.Reboot(ctx, "nope")
	wantRefused(t, "reboot of a missing VM", err, api.CodeNotFound)
	if again, err := h.c.Suspend(ctx, "s", false); err != nil || again.State != "suspended" {
		t.Errorf("second suspend: %+v, %v; want it suspended still", again, err)
	}

	got, err = h.c.Resume(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	if got.State != "running" || got.PID != vm.PID || got.Timing == nil {
		t.Errorf("after resume: %+v", got)
	}
	if off := time.Since(h.guestOf(vm).Time()); off > 5*time.Second || off < -5*time.Second {
		t.Errorf("guest clock after resume is %v off the host's, want it set", off)
	}
	if res := h.exec("s", api.ExecRequest{Shell: "echo back"}); res.Output != "back\n" {
		t.Errorf("exec after resume: %+v", res)
	}
	if again, err := h.c.Resume(ctx, "s"); err != nil || again.State != "running" {
		t.Errorf("resume of a running VM: %+v, %v; want it running, no error", again, err)
	}
}

func TestSuspendToDiskResume(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	vm := h.create(api.CreateRequest{Name: "d", MemMiB: 64, DiskGiB: 1})
	got, err := h.c.Suspend(ctx, "d", true)
	if err != nil {
		t.Fatal(err)
	}
	waitGone(t, vm.PID)
	if got.State != "suspended-to-disk" || got.PID != 0 || got.Snapshot == "" || got.IP != vm.IP {
		t.Errorf("after suspend --to-disk: %+v; want no monitor, a snapshot, the same address", got)
	}
	if got.LastExit == nil || got.LastExit.Status != 5 || got.LastExit.Result != "suspended" {
		t.Errorf("last exit %+v, want status 5, suspended", got.LastExit)
	}
	if _, err := os.Stat(filepath.Join(got.Snapshot, fakevmm.SnapshotFile)); err != nil {
		t.Errorf("snapshot: %v", err)
	}
	if !h.net.Held(vm.ID) || !h.stor.Exists(vm.ID) {
		t.Error("a VM suspended to disk lost its lease or disk")
	}
	if _, err := os.Stat(filepath.Join(h.cfg.MemDir, vm.ID)); !os.IsNotExist(err) {
		t.Errorf("memory folder of a suspended-to-disk VM: %v, want it gone", err)
	}
	_, err = h.c.Exec(ctx, "d", api.ExecRequest{Shell: "true"})
	wantRefused(t, "exec on a VM suspended to disk", err, api.CodeState, "suspended to disk: boxd resume d")

	// Suspended-to-disk VMs survive a daemon restart.
	h.restart()
	if g := h.get("d"); g.State != "suspended-to-disk" || g.Snapshot != got.Snapshot {
		t.Errorf("after a daemon restart: %+v", g)
	}

	r, err := h.c.Resume(ctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	h.track(r)
	if r.State != "running" || r.PID == 0 || r.PID == vm.PID || r.Snapshot != "" || r.IP != vm.IP || r.Timing == nil || r.Timing.RestoreMs <= 0 {
		t.Errorf("after resume: %+v (timing %+v)", r, r.Timing)
	}
	if _, err := os.Stat(got.Snapshot); !os.IsNotExist(err) {
		t.Errorf("snapshot after resume: %v, want it removed", err)
	}
	// The monitor holds its own link to the snapshot's memory, in its
	// layer folder: deleting the snapshot lost nothing.
	if files := h.layerFiles(r); len(files) != 1 {
		t.Errorf("layer folder of the resumed VM holds %q, want its link to the snapshot", files)
	}
	if g := h.guestOf(r); g.Hostname != "d" {
		t.Errorf("resumed guest: %+v", g)
	}
	if res := h.exec("d", api.ExecRequest{Shell: "echo up"}); res.Output != "up\n" {
		t.Errorf("exec after resume: %+v", res)
	}
	// A second suspend writes a new snapshot folder, never the old one.
	again, err := h.c.Suspend(ctx, "d", true)
	if err != nil {
		t.Fatal(err)
	}
	if again.Snapshot == got.Snapshot {
		t.Errorf("second suspend reused %s", again.Snapshot)
	}
	if _, err := os.Stat(filepath.Join(h.cfg.StateDir, "vms", vm.ID, "layers")); !os.IsNotExist(err) {
		t.Errorf("layer folder once no monitor runs: %v, want it gone", err)
	}
}

func TestResumeRefusesCorruptSnapshot(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	vm := h.create(api.CreateRequest{Name: "c", MemMiB: 64, DiskGiB: 1})
	s, err := h.c.Suspend(ctx, "c", true)
	if err != nil {
		t.Fatal(err)
	}
	waitGone(t, vm.PID)
	path := filepath.Join(s.Snapshot, fakevmm.SnapshotFile)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	bad := []byte(strings.Replace(string(good), `"hostname":"c"`, `"hostname":"x"`, 1))
	os.Chmod(path, 0o644)
	if err := os.WriteFile(path, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = h.c.Resume(ctx, "c")
	wantRefused(t, "resume of a corrupt snapshot", err, api.CodeUnavailable, "did not resume", "checksum mismatch")
	got := h.get("c")
	if got.State != "suspended-to-disk" || got.Snapshot != s.Snapshot || got.PID != 0 || !strings.Contains(got.Error, "checksum") {
		t.Errorf("after a refused resume: %+v; want still suspended with its snapshot and the reason", got)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("snapshot after a refused resume: %v", err)
	}
	// Repaired, it resumes.
	if err := os.WriteFile(path, good, 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := h.c.Resume(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	h.track(r)
	if r.State != "running" || r.Error != "" {
		t.Errorf("resume of the repaired snapshot: %+v", r)
	}
}

func TestSuspendRefusedStates(t *testing.T) {
	h := newHarness(t, withCmdline("fake.control=suspend"))
	ctx := context.Background()
	vm := h.create(api.CreateRequest{Name: "r", MemMiB: 64, DiskGiB: 1})
	_, err := h.c.Suspend(ctx, "r", true)
	wantRefused(t, "a suspend the monitor refuses", err, api.CodeInternal, "refused")
	got := h.get("r")
	if got.State != "running" || got.PID != vm.PID || got.Snapshot != "" {
		t.Errorf("after a failed suspend: %+v, want running as before", got)
	}
	ents, _ := os.ReadDir(filepath.Join(h.cfg.StateDir, "vms", vm.ID, "snapshots"))
	if len(ents) != 0 {
		t.Errorf("a failed suspend left %d snapshot folders", len(ents))
	}
	if res := h.exec("r", api.ExecRequest{Shell: "echo ok"}); res.Output != "ok\n" {
		t.Errorf("exec after a failed suspend: %+v", res)
	}
	_, err = h.c.Resume(ctx, "r")
	if err != nil {
		t.Errorf("resume of a running VM: %v", err)
	}
	_, err = h.c.Suspend(ctx, "nope", false)
	wantRefused(t, "suspend of a missing VM", err, api.CodeNotFound)
}

// TestRestartKeepsSuspended restarts the daemon under a VM suspended in
// memory: its monitor keeps running, paused, is adopted, and resumes.
func TestRestartKeepsSuspended(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	vm := h.create(api.CreateRequest{Name: "m", MemMiB: 64, DiskGiB: 1})
	if _, err := h.c.Suspend(ctx, "m", false); err != nil {
		t.Fatal(err)
	}
	h.restart()
	got := h.get("m")
	if got.State != "suspended" || got.PID != vm.PID || !alive(vm.PID) {
		t.Errorf("after restart: %+v", got)
	}
	if _, err := h.c.Resume(ctx, "m"); err != nil {
		t.Fatal(err)
	}
	if res := h.exec("m", api.ExecRequest{Shell: "echo adopted"}); res.Output != "adopted\n" {
		t.Errorf("exec: %+v", res)
	}
	// A suspended VM is destroyed like any other.
	if _, err := h.c.Suspend(ctx, "m", false); err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.Destroy(ctx, "m"); err != nil {
		t.Fatal(err)
	}
	waitGone(t, vm.PID)
	if h.net.Held(vm.ID) || h.stor.Exists(vm.ID) {
		t.Error("destroy of a suspended VM left its lease or disk")
	}
}
