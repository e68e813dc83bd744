package daemon_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/boxd-dev/boxd/host/api"
	"github.com/boxd-dev/boxd/host/daemon"
	"github.com/boxd-dev/boxd/host/quota"
)

// wantOnly checks that exactly the VMs named exist and that nothing is left
// of any other: records, leases, disks, folders, memory folders, fork
// snapshots.
func (h *harness) wantOnly(names ...string) {
	h.t.Helper()
	list, err := h.c.List(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	var got, ids []string
	for _, vm := range list {
		got = append(got, vm.Name)
		ids = append(ids, vm.ID)
	}
	slices.Sort(names)
	if !slices.Equal(got, names) {
		h.t.Errorf("VMs %v, want %v", got, names)
	}
	h.net.mu.Lock()
	for _, l := range h.net.inUse {
		if !slices.Contains(ids, l.VMID) {
			h.t.Errorf("lease %s of a VM that does not exist", l.TAP)
		}
	}
	h.net.mu.Unlock()
	dirs := map[string]string{
		"disk":          h.stor.dir,
		"VM folder":     filepath.Join(h.cfg.StateDir, "vms"),
		"memory folder": h.cfg.MemDir,
	}
	for what, dir := range dirs {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			id := strings.TrimSuffix(e.Name(), ".img")
			if e.Name() == "forks" || slices.Contains(ids, id) {
				continue
			}
			h.t.Errorf("%s %s of a VM that does not exist", what, e.Name())
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(h.cfg.MemDir, "forks")); len(ents) > 0 {
		h.t.Errorf("fork snapshots left: %d", len(ents))
	}
}

func TestForkRunning(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	parent := h.create(api.CreateRequest{Name: "p", MemMiB: 64, DiskGiB: 1})
	res, err := h.c.Fork(ctx, "p", api.ForkRequest{Name: "c", Count: 3})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Errors) > 0 || len(res.VMs) != 3 || res.Kind != "fork" || res.Source != "p" {
		t.Fatalf("fork: %+v", res)
	}
	tm := res.Timing
	if tm.ParentPausedMs <= 0 || tm.TotalMs < tm.ParentPausedMs || tm.DiskClone != "copy" {
		t.Errorf("timing %+v", tm)
	}
	ips := map[string]bool{parent.IP: true}
	for i, vm := range res.VMs {
		h.track(vm)
		want := "c-" + string(rune('1'+i))
		if vm.Name != want || vm.State != "running" || vm.Origin == nil || vm.Origin.Kind != "fork" || vm.Origin.Parent != "p" || vm.Origin.ParentID != parent.ID {
			t.Errorf("copy %d: %+v (origin %+v)", i, vm, vm.Origin)
		}
		if ips[vm.IP] || vm.IP == "" || vm.PID == parent.PID {
			t.Errorf("copy %s: address %q or monitor %d not its own", vm.Name, vm.IP, vm.PID)
		}
		ips[vm.IP] = true
		if vm.Timing == nil || vm.Timing.RestoreMs <= 0 || vm.Timing.TotalMs <= 0 {
			t.Errorf("copy %s timing %+v", vm.Name, vm.Timing)
		}
		g := h.guestOf(vm)
		if g.Hostname != vm.Name || g.Address != strings.Replace(vm.IP, vm.IP, vm.IP+"/24", 1) || g.MAC != vm.MAC {
			t.Errorf("copy %s: guest identity %+v, want its own name, address and MAC", vm.Name, g)
		}
		if res := h.exec(vm.Name, api.ExecRequest{Shell: "echo child"}); res.Output != "child\n" {
			t.Errorf("exec in %s: %+v", vm.Name, res)
		}
	}
	if p := h.get("p"); p.State != "running" || p.PID != parent.PID {
		t.Errorf("parent after fork: %+v", p)
	}
	if res := h.exec("p", api.ExecRequest{Shell: "echo parent"}); res.Output != "parent\n" {
		t.Errorf("exec in the parent after fork: %+v", res)
	}
	h.wantOnly("p", "c-1", "c-2", "c-3")

	// A fork of a fork, with a generated name.
	res, err = h.c.Fork(ctx, "c-1", api.ForkRequest{})
	if err != nil || len(res.VMs) != 1 || !strings.HasPrefix(res.VMs[0].Name, "vm-") {
		t.Fatalf("fork of a fork: %+v, %v", res, err)
	}
	h.track(res.VMs[0])
}

func TestForkSuspendedSourceStaysSuspended(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	h.create(api.CreateRequest{Name: "p", MemMiB: 64, DiskGiB: 1})
	if _, err := h.c.Suspend(ctx, "p", false); err != nil {
		t.Fatal(err)
	}
	res, err := h.c.Fork(ctx, "p", api.ForkRequest{Name: "k"})
	if err != nil || len(res.VMs) != 1 || res.Timing.ParentPausedMs != 0 {
		t.Fatalf("fork of a suspended VM: %+v, %v", res, err)
	}
	h.track(res.VMs[0])
	if p := h.get("p"); p.State != "suspended" {
		t.Errorf("source after fork: %s, want suspended still", p.State)
	}
}

// TestForkFailsHalfway makes each step of a fork fail in turn: the parent
// runs on, and nothing of the copies is left.
func TestForkFailsHalfway(t *testing.T) {
	for _, tt := range []struct {
		name    string
		cmdline string
		clone   bool   // the disk clone fails
		wantErr string // "" : the fork answers, with every copy in Errors
	}{
		{name: "pause", cmdline: "fake.control=pause", wantErr: "refused"},
		{name: "snapshot", cmdline: "fake.control=fork", wantErr: "refused"},
		{name: "disk", clone: true, wantErr: "clone its disk"},
		{name: "restore", cmdline: "fake.child=restore"},
		{name: "agent", cmdline: "fake.child=noagent"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			opts := []option{withCmdline(tt.cmdline)}
			if tt.name == "agent" {
				opts = append(opts, withBootTimeout(300*1e6)) // 300 ms: the agent never answers
			}
			h := newHarness(t, opts...)
			ctx := context.Background()
			parent := h.create(api.CreateRequest{Name: "p", MemMiB: 64, DiskGiB: 1})
			if tt.clone {
				h.stor.setFailClone(os.ErrPermission)
			}
			res, err := h.c.Fork(ctx, "p", api.ForkRequest{Name: "c", Count: 2})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("fork: %+v, %v; want an error saying %q", res, err, tt.wantErr)
				}
			} else if err != nil || len(res.VMs) != 0 || len(res.Errors) != 2 {
				t.Errorf("fork: %+v, %v; want both copies in errors", res, err)
			}
			if p := h.get("p"); p.State != "running" || p.PID != parent.PID {
				t.Errorf("parent: %+v, want running as before", p)
			}
			if r := h.exec("p", api.ExecRequest{Shell: "echo on"}); r.Output != "on\n" {
				t.Errorf("exec in the parent: %+v", r)
			}
			h.wantOnly("p")
		})
	}
}

func TestForkChecks(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	h.create(api.CreateRequest{Name: "p", MemMiB: 64, DiskGiB: 1})
	setProbeHook(t, func(f *daemon.GuestFacts) {
		if f.Hostname == "c-2" {
			f.Hostname = "p" // as if SetNetwork had not reached it
		}
	})
	res, err := h.c.Fork(ctx, "p", api.ForkRequest{Name: "c", Count: 3})
	if err != nil {
		t.Fatal(err)
	}
	for _, vm := range res.VMs {
		h.track(vm)
	}
	if len(res.VMs) != 2 || len(res.Errors) != 1 || res.Errors[0].Name != "c-2" || !strings.Contains(res.Errors[0].Error.Message, `host name is "p"`) {
		t.Fatalf("fork with one bad copy: %+v", res)
	}
	h.wantOnly("p", "c-1", "c-3")

	// Copies whose entropy is the same are all refused.
	setProbeHook(t, func(f *daemon.GuestFacts) { f.Random = "00112233445566778899aabbccddeeff" })
	res, err = h.c.Fork(ctx, "p", api.ForkRequest{Name: "r", Count: 2})
	if err != nil || len(res.VMs) != 0 || len(res.Errors) != 2 || !strings.Contains(res.Errors[0].Error.Message, "urandom") {
		t.Fatalf("fork with equal urandom: %+v, %v", res, err)
	}
	// So is a clock far off.
	setProbeHook(t, func(f *daemon.GuestFacts) { f.Time = f.Time.Add(-3600 * 1e9) })
	res, err = h.c.Fork(ctx, "p", api.ForkRequest{Name: "t"})
	if err != nil || len(res.Errors) != 1 || !strings.Contains(res.Errors[0].Error.Message, "clock") {
		t.Fatalf("fork with a wrong clock: %+v, %v", res, err)
	}
	h.wantOnly("p", "c-1", "c-3")
}

func TestForkRefused(t *testing.T) {
	h := newHarness(t, withLimits(func(l *quota.Limits) { l.MaxVMs = 4 }))
	ctx := context.Background()
	h.create(api.CreateRequest{Name: "p", MemMiB: 64, DiskGiB: 1})
	h.create(api.CreateRequest{Name: "taken", MemMiB: 64, DiskGiB: 1})
	for _, tt := range []struct {
		src  string
		req  api.ForkRequest
		code string
		says string
	}{
		{"nope", api.ForkRequest{}, api.CodeNotFound, "nope"},
		{"p", api.ForkRequest{Name: "Bad"}, api.CodeInvalid, "uppercase"},
		{"p", api.ForkRequest{Count: -1}, api.CodeInvalid, "count"},
		{"p", api.ForkRequest{Count: 65}, api.CodeInvalid, "count"},
		{"p", api.ForkRequest{Name: strings.Repeat("a", 62), Count: 2}, api.CodeInvalid, "limit is 63"},
		{"p", api.ForkRequest{Name: "taken"}, api.CodeExists, "taken"},
		{"p", api.ForkRequest{Name: "q", Count: 3}, api.CodeQuota, "quota"},
	} {
		_, err := h.c.Fork(ctx, tt.src, tt.req)
		wantRefused(t, tt.src+" "+tt.req.Name, err, tt.code, tt.says)
	}
	h.wantOnly("p", "taken")
	if p := h.get("p"); p.State != "running" {
		t.Errorf("source after refused forks: %s", p.State)
	}
	// Exactly the quota fits.
	res, err := h.c.Fork(ctx, "p", api.ForkRequest{Name: "q", Count: 2})
	if err != nil || len(res.VMs) != 2 {
		t.Fatalf("fork up to the quota: %+v, %v", res, err)
	}
	for _, vm := range res.VMs {
		h.track(vm)
	}
}

func TestGolden(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	g := h.create(api.CreateRequest{Name: "gold", MemMiB: 64, DiskGiB: 1})
	_, err := h.c.Create(ctx, api.CreateRequest{Name: "w0", From: "gold"})
	wantRefused(t, "new --from a running VM", err, api.CodeState, "suspend --to-disk")
	s, err := h.c.Suspend(ctx, "gold", true)
	if err != nil {
		t.Fatal(err)
	}
	waitGone(t, g.PID)
	snap := filepath.Join(s.Snapshot, "fake-snapshot.json")
	before, err := os.ReadFile(snap)
	if err != nil {
		t.Fatal(err)
	}
	var copies []api.VM
	for _, n := range []string{"w1", "w2"} {
		vm, err := h.c.Create(ctx, api.CreateRequest{Name: n, From: "gold"})
		if err != nil {
			t.Fatal(err)
		}
		h.track(vm)
		copies = append(copies, vm)
		// Its monitor links the golden's memory into the copy's own layer
		// folder: the golden may go while the copy lives.
		if !sameFile(t, snap, h.layerFiles(vm)) {
			t.Errorf("%s: layer folder %q, want one link to the golden's snapshot", n, h.layerFiles(vm))
		}
		if vm.State != "running" || vm.Origin == nil || vm.Origin.Kind != "golden" || vm.Origin.Parent != "gold" || vm.Timing == nil {
			t.Errorf("%s: %+v", n, vm)
		}
		if gg := h.guestOf(vm); gg.Hostname != n {
			t.Errorf("%s: guest %+v", n, gg)
		}
	}
	_, err = h.c.Create(ctx, api.CreateRequest{Name: "w3", From: "gold", MemMiB: 128})
	wantRefused(t, "new --from with another size", err, api.CodeInvalid, "golden's size")
	if got := h.get("gold"); got.State != "suspended-to-disk" || got.Snapshot != s.Snapshot {
		t.Errorf("golden after copies: %+v", got)
	}
	after, err := os.ReadFile(snap)
	if err != nil || string(after) != string(before) {
		t.Errorf("the golden's snapshot changed (%v)", err)
	}
	h.wantOnly("gold", "w1", "w2")
	// The golden resumes; a later suspend writes a new snapshot, so copies
	// never see its files change.
	if _, err := h.c.Resume(ctx, "gold"); err != nil {
		t.Fatal(err)
	}
	s2, err := h.c.Suspend(ctx, "gold", true)
	if err != nil {
		t.Fatal(err)
	}
	if s2.Snapshot == s.Snapshot {
		t.Error("a second suspend of the golden reused its snapshot folder")
	}
	if _, err := h.c.Destroy(ctx, "gold"); err != nil {
		t.Fatal(err)
	}
	for _, vm := range copies {
		if !sameFile(t, "", h.layerFiles(vm)) {
			t.Errorf("%s: after the golden's destroy its layer folder holds %q", vm.Name, h.layerFiles(vm))
		}
		if res := h.exec(vm.Name, api.ExecRequest{Shell: "echo alive"}); res.Output != "alive\n" {
			t.Errorf("%s after the golden's destroy: %+v", vm.Name, res)
		}
	}
}

// layerFiles lists the files in vm's layer folder (the monitor's --layer-dir).
func (h *harness) layerFiles(vm api.VM) []string {
	h.t.Helper()
	dir := filepath.Join(h.cfg.StateDir, "vms", vm.ID, "layers")
	ents, err := os.ReadDir(dir)
	if err != nil {
		h.t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, filepath.Join(dir, e.Name()))
	}
	return out
}

// sameFile reports whether files is one link to the file at path (to a file
// with other links too, if path is "").
func sameFile(t *testing.T, path string, files []string) bool {
	t.Helper()
	if len(files) != 1 {
		return false
	}
	got, err := os.Stat(files[0])
	if err != nil {
		return false
	}
	if path == "" {
		return got.Sys().(*syscall.Stat_t).Nlink > 1
	}
	want, err := os.Stat(path)
	return err == nil && os.SameFile(want, got)
}

// TestForkStopped copies a stopped VM: its disk, booted fresh.
func TestForkStopped(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	vm := h.create(api.CreateRequest{Name: "off", MemMiB: 64, DiskGiB: 1})
	syscall.Kill(vm.PID, syscall.SIGTERM) // the fake's "poweroff"
	h.waitFor("off", "stopped", func(v api.VM) bool { return v.State == "stopped" })
	vm2, err := h.c.Create(ctx, api.CreateRequest{Name: "on", From: "off"})
	if err != nil {
		t.Fatal(err)
	}
	h.track(vm2)
	if vm2.Origin == nil || vm2.Origin.Kind != "clone" || h.guestOf(vm2).Hostname != "on" {
		t.Errorf("copy of a stopped VM: %+v", vm2)
	}
	if !slices.Contains(h.stor.Events(), "clone "+vm.ID+" "+vm2.ID+" live=false") {
		t.Errorf("storage events %v: want a clone of the stopped disk", h.stor.Events())
	}
}
