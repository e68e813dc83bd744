package daemon_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/boxd-dev/boxd/host/api"
	"github.com/boxd-dev/boxd/host/quota"
)

func TestCreateListInspectDestroy(t *testing.T) {
	h := newHarness(t)
	a := h.create(api.CreateRequest{Name: "task-1", CPUs: 1, MemMiB: 512, DiskGiB: 10})
	golden(t, "create.json", a)
	b := h.create(api.CreateRequest{Name: "task-2"})
	if b.CPUs != 2 || b.MemMiB != 8192 || b.DiskGiB != 100 {
		t.Errorf("defaults: got %d vCPUs, %d MiB, %d GiB", b.CPUs, b.MemMiB, b.DiskGiB)
	}
	list, err := h.c.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "list.json", api.VMList{VMs: list})
	golden(t, "inspect.json", h.get("task-1"))
	if !alive(a.PID) || !alive(b.PID) {
		t.Fatal("monitors are not running")
	}

	res, err := h.c.Destroy(context.Background(), "task-1", "nope")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "destroy.json", res)
	waitGone(t, a.PID)
	if _, err := h.c.Get(context.Background(), "task-1"); apiCode(err) != api.CodeNotFound {
		t.Errorf("inspect after destroy = %v, want not_found", err)
	}
	res, err = h.c.DestroyAll(context.Background())
	if err != nil || len(res.Destroyed) != 1 || res.Destroyed[0] != "task-2" {
		t.Fatalf("destroy --all = %+v, %v", res, err)
	}
	waitGone(t, b.PID)
	list, err = h.c.List(context.Background())
	if err != nil || len(list) != 0 {
		t.Errorf("list after destroy --all = %+v, %v", list, err)
	}
}

func TestGeneratedName(t *testing.T) {
	h := newHarness(t)
	vm := h.create(api.CreateRequest{})
	if err := api.ValidName(vm.Name); err != nil || !strings.HasPrefix(vm.Name, "vm-") {
		t.Errorf("generated name %q: %v", vm.Name, err)
	}
}

func TestDestroyFreesResources(t *testing.T) {
	h := newHarness(t)
	vm := h.create(api.CreateRequest{Name: "gone", DiskGiB: 1})
	dir := filepath.Join(h.cfg.StateDir, "vms", vm.ID)
	if _, err := os.Stat(dir); err != nil {
		t.Fatal(err)
	}
	if !h.net.Held(vm.ID) || !h.stor.Exists(vm.ID) {
		t.Fatal("lease or disk missing while running")
	}
	if _, err := h.c.Destroy(context.Background(), "gone"); err != nil {
		t.Fatal(err)
	}
	if alive(vm.PID) {
		t.Error("monitor still runs after destroy")
	}
	if h.net.Held(vm.ID) || h.stor.Exists(vm.ID) {
		t.Error("lease or disk left after destroy")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("VM folder left after destroy: %v", err)
	}
	wantNet := []string{"attach " + vm.ID, "detach " + vm.ID}
	if diff := cmp.Diff(wantNet, h.net.Events()); diff != "" {
		t.Errorf("network calls (-want +got):\n%s", diff)
	}
	wantStor := []string{"create " + vm.ID, "delete " + vm.ID}
	if diff := cmp.Diff(wantStor, h.stor.Events()); diff != "" {
		t.Errorf("storage calls (-want +got):\n%s", diff)
	}
}

func TestQuota(t *testing.T) {
	h := newHarness(t)
	for i := range 10 {
		h.create(api.CreateRequest{Name: "q" + string(rune('a'+i)), MemMiB: 64, DiskGiB: 1, CPUs: 1})
	}
	_, err := h.c.Create(context.Background(), api.CreateRequest{Name: "eleventh", MemMiB: 64, DiskGiB: 1})
	e, ok := err.(*api.Error)
	if !ok || e.Code != api.CodeQuota {
		t.Fatalf("11th create = %v, want quota_exceeded", err)
	}
	if want := "quota exceeded: 10 VMs exist, the limit is 10"; e.Message != want || !strings.Contains(e.Hint, "--max-vms") {
		t.Errorf("quota error %q (hint %q), want %q and a hint naming --max-vms", e.Message, e.Hint, want)
	}
	if _, err := h.c.Get(context.Background(), "eleventh"); apiCode(err) != api.CodeNotFound {
		t.Errorf("refused VM exists: %v", err)
	}
}

func TestSizeLimits(t *testing.T) {
	h := newHarness(t, withLimits(func(l *quota.Limits) { l.MaxCPUs, l.DefaultCPUs = 4, 1 }))
	tests := []struct {
		req      api.CreateRequest
		code     string
		contains string
	}{
		{api.CreateRequest{Name: "a", CPUs: 5}, api.CodeQuota, "--max-cpus"},
		{api.CreateRequest{Name: "a", MemMiB: 9000}, api.CodeQuota, "--max-mem"},
		{api.CreateRequest{Name: "a", DiskGiB: 101}, api.CodeQuota, "--max-disk"},
		{api.CreateRequest{Name: "a", MemMiB: 32}, api.CodeInvalid, "at least 64M"},
		{api.CreateRequest{Name: "a", CPUs: -1}, api.CodeInvalid, "cpus -1"},
		{api.CreateRequest{Name: "a", CPUs: 1000}, api.CodeInvalid, "cpus 1000"},
	}
	for _, tt := range tests {
		_, err := h.c.Create(context.Background(), tt.req)
		e, ok := err.(*api.Error)
		if !ok || e.Code != tt.code || !strings.Contains(e.Error(), tt.contains) {
			t.Errorf("create %+v = %v, want %s mentioning %q", tt.req, err, tt.code, tt.contains)
		}
	}
	vm := h.create(api.CreateRequest{Name: "four", CPUs: 4, MemMiB: 64, DiskGiB: 1})
	if vm.CPUs != 4 {
		t.Errorf("cpus %d, want 4", vm.CPUs)
	}
	if got := h.d.Limits(); got.MaxCPUs != 4 {
		t.Errorf("limits in force %+v", got)
	}
}

func TestNames(t *testing.T) {
	h := newHarness(t)
	for _, name := range []string{"UPPER", "-lead", "trail-", "under_score", "dot.ted", strings.Repeat("a", 64), "sp ace", "ünï"} {
		_, err := h.c.Create(context.Background(), api.CreateRequest{Name: name})
		if apiCode(err) != api.CodeInvalid {
			t.Errorf("create %q = %v, want invalid_argument", name, err)
		}
	}
	h.create(api.CreateRequest{Name: strings.Repeat("a", 63), MemMiB: 64, DiskGiB: 1})
	h.create(api.CreateRequest{Name: "x", MemMiB: 64, DiskGiB: 1})
	_, err := h.c.Create(context.Background(), api.CreateRequest{Name: "x"})
	if apiCode(err) != api.CodeExists {
		t.Errorf("second create of x = %v, want already_exists", err)
	}
	if _, err := h.c.Get(context.Background(), "Bad"); apiCode(err) != api.CodeInvalid {
		t.Errorf("inspect Bad = %v, want invalid_argument", err)
	}
}

func TestMonitorDeathRecorded(t *testing.T) {
	tests := []struct {
		name   string
		sig    syscall.Signal
		state  string
		status int
		result string
		signal string
	}{
		{"crash", syscall.SIGUSR2, "crashed", 4, "crash", ""},
		{"killed", syscall.SIGKILL, "crashed", -1, "", "SIGKILL"},
		{"poweroff", syscall.SIGTERM, "stopped", 0, "host-stop", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			vm := h.create(api.CreateRequest{Name: "v", MemMiB: 64, DiskGiB: 1})
			syscall.Kill(vm.PID, tt.sig)
			got := h.waitFor("v", tt.state, func(v api.VM) bool { return v.State == tt.state })
			if got.LastExit == nil || got.LastExit.Status != tt.status || got.LastExit.Result != tt.result || got.LastExit.Signal != tt.signal {
				t.Errorf("last exit %+v, want status %d result %q signal %q", got.LastExit, tt.status, tt.result, tt.signal)
			}
			if got.PID != 0 || got.IP != "" {
				t.Errorf("pid %d ip %q after the monitor ended, want none", got.PID, got.IP)
			}
			if (tt.state == "crashed") != (got.Error != "") {
				t.Errorf("error %q for state %s", got.Error, tt.state)
			}
			if h.net.Held(vm.ID) {
				t.Error("lease not freed")
			}
			if !h.stor.Exists(vm.ID) {
				t.Error("disk deleted: it must stay until destroy")
			}
			_, err := h.c.Exec(context.Background(), "v", api.ExecRequest{Shell: "true"})
			if apiCode(err) != api.CodeState || !strings.Contains(err.Error(), "boxd reboot v") {
				t.Errorf("exec in a %s VM = %v, want failed_precondition with a reboot hint", tt.state, err)
			}
			// boxd reboot brings it back, with a new lease and the same disk.
			back, err := h.c.Reboot(context.Background(), "v")
			if err != nil {
				t.Fatal(err)
			}
			h.track(back)
			if back.State != "running" || back.Restarts != 1 || back.IP == "" {
				t.Errorf("after reboot: %+v", back)
			}
			if res := h.exec("v", api.ExecRequest{Shell: "echo back"}); res.Output != "back\n" {
				t.Errorf("exec after reboot: %+v", res)
			}
		})
	}
}

func TestGuestRebootRestarts(t *testing.T) {
	h := newHarness(t)
	vm := h.create(api.CreateRequest{Name: "r", MemMiB: 64, DiskGiB: 1})
	syscall.Kill(vm.PID, syscall.SIGUSR1)
	got := h.waitFor("r", "restarted", func(v api.VM) bool { return v.State == "running" && v.PID != 0 && v.PID != vm.PID })
	if got.Restarts != 1 || got.LastExit == nil || got.LastExit.Status != 3 || got.IP != vm.IP {
		t.Errorf("after a guest reboot: %+v (last exit %+v), want restarts 1, exit 3, same IP %s", got, got.LastExit, vm.IP)
	}
	if diff := cmp.Diff([]string{"create " + vm.ID}, h.stor.Events()); diff != "" {
		t.Errorf("the disk was recreated (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"attach " + vm.ID}, h.net.Events()); diff != "" {
		t.Errorf("the lease changed (-want +got):\n%s", diff)
	}
	if res := h.exec("r", api.ExecRequest{Shell: "echo up"}); res.Output != "up\n" {
		t.Errorf("exec after the reboot: %+v", res)
	}
}

func TestRebootCommand(t *testing.T) {
	h := newHarness(t)
	vm := h.create(api.CreateRequest{Name: "b", MemMiB: 64, DiskGiB: 1})
	got, err := h.c.Reboot(context.Background(), "b")
	if err != nil {
		t.Fatal(err)
	}
	h.track(got)
	if got.PID == vm.PID || got.Restarts != 1 || got.State != "running" || got.IP != vm.IP {
		t.Errorf("after reboot %+v, before %+v", got, vm)
	}
	if alive(vm.PID) {
		t.Error("old monitor still runs")
	}
	if _, err := h.c.Reboot(context.Background(), "nope"); apiCode(err) != api.CodeNotFound {
		t.Errorf("reboot nope = %v", err)
	}
}

func TestBootFailure(t *testing.T) {
	tests := []struct {
		name    string
		opts    []option
		message string
	}{
		{"monitor exits", []option{withCmdline("fake.exit=4")}, "monitor ended before the guest agent answered: fake-exit"},
		{"agent silent", []option{withCmdline("fake.noagent"), withBootTimeout(200 * 1e6)}, "did not answer within 200ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.opts...)
			_, err := h.c.Create(context.Background(), api.CreateRequest{Name: "f", MemMiB: 64, DiskGiB: 1})
			if apiCode(err) != api.CodeUnavailable || !strings.Contains(err.Error(), tt.message) {
				t.Fatalf("create = %v, want unavailable containing %q", err, tt.message)
			}
			if list, _ := h.c.List(context.Background()); len(list) != 0 {
				t.Errorf("a failed create left %+v", list)
			}
			ev := h.net.Events()
			if len(ev) != 2 || !strings.HasPrefix(ev[1], "detach") {
				t.Errorf("network calls %v, want attach then detach", ev)
			}
			if ev := h.stor.Events(); len(ev) != 2 || !strings.HasPrefix(ev[1], "delete") {
				t.Errorf("storage calls %v, want create then delete", ev)
			}
			entries, _ := os.ReadDir(filepath.Join(h.cfg.StateDir, "vms"))
			if len(entries) != 0 {
				t.Errorf("VM folders left: %v", entries)
			}
		})
	}
}
