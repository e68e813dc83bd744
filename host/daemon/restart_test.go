package daemon_test

import (
	"context"
	"strings"
	"syscall"
	"testing"

	"github.com/boxd-dev/boxd/host/api"
)

// TestRestartReattaches restarts the daemon under running VMs: they keep
// running, the new daemon adopts them and exec works; VMs whose monitors
// ended meanwhile are settled as if watched.
func TestRestartReattaches(t *testing.T) {
	h := newHarness(t)
	keep := h.create(api.CreateRequest{Name: "keep", MemMiB: 64, DiskGiB: 1})
	crash := h.create(api.CreateRequest{Name: "crash", MemMiB: 64, DiskGiB: 1})
	boot := h.create(api.CreateRequest{Name: "boot", MemMiB: 64, DiskGiB: 1})
	h.stop()

	// While no daemon watches: one guest crashes, one reboots.
	syscall.Kill(crash.PID, syscall.SIGUSR2)
	syscall.Kill(boot.PID, syscall.SIGUSR1)
	waitGone(t, crash.PID)
	waitGone(t, boot.PID)

	h.start()
	got := h.waitFor("keep", "running", func(v api.VM) bool { return v.State == "running" })
	if got.PID != keep.PID || !alive(keep.PID) {
		t.Errorf("keep: pid %d, want the same monitor %d still running", got.PID, keep.PID)
	}
	if res := h.exec("keep", api.ExecRequest{Shell: "echo still here"}); res.Output != "still here\n" {
		t.Errorf("exec after the restart: %+v", res)
	}
	c := h.waitFor("crash", "crashed", func(v api.VM) bool { return v.State == "crashed" })
	if c.LastExit == nil || c.LastExit.Status != 4 || c.LastExit.Result != "crash" || h.net.Held(crash.ID) {
		t.Errorf("crash: %+v, last exit %+v", c, c.LastExit)
	}
	b := h.waitFor("boot", "rebooted", func(v api.VM) bool { return v.State == "running" && v.PID != boot.PID })
	if b.Restarts != 1 || b.IP != boot.IP {
		t.Errorf("boot: %+v, want restarted once with the same IP", b)
	}
	if res := h.exec("boot", api.ExecRequest{Shell: "echo rebooted"}); res.Output != "rebooted\n" {
		t.Errorf("exec after the reboot: %+v", res)
	}
	// The network was told which leases are still held.
	starts := h.net.starts
	if len(starts) != 2 || len(starts[1]) != 3 {
		t.Errorf("Network.Start calls: %+v, want the second with 3 leases", starts)
	}

	// And a second restart later still sees everything.
	h.restart()
	h.waitFor("boot", "running", func(v api.VM) bool { return v.State == "running" })
	if res := h.exec("boot", api.ExecRequest{Shell: "echo again"}); res.Output != "again\n" {
		t.Errorf("exec after the second restart: %+v", res)
	}
	if _, err := h.c.DestroyAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitGone(t, keep.PID)
}

func TestSecondDaemonRefused(t *testing.T) {
	h := newHarness(t)
	cfg := h.cfg
	if d, err := openDaemon(cfg); err == nil {
		d.Close()
		t.Fatal("a second daemon opened the same state dir")
	}
}

// TestCloseDuringCreate stops the daemon while a guest is booting: the
// create is cancelled and undone, and nothing is left for the next daemon.
func TestCloseDuringCreate(t *testing.T) {
	h := newHarness(t, withCmdline("fake.noagent"))
	errc := make(chan error, 1)
	go func() {
		_, err := h.c.Create(context.Background(), api.CreateRequest{Name: "slow", MemMiB: 64, DiskGiB: 1})
		errc <- err
	}()
	h.waitFor("slow", "creating with a monitor", func(v api.VM) bool { return v.State == "creating" && v.PID != 0 })
	h.stop()
	if err := <-errc; err == nil {
		t.Fatal("create succeeded although the daemon stopped during the boot")
	}
	h.cfg.Cmdline = ""
	h.start()
	if list, err := h.c.List(context.Background()); err != nil || len(list) != 0 {
		t.Errorf("after the restart: %+v, %v; want no VM", list, err)
	}
	if ev := h.stor.Events(); len(ev) != 2 || !strings.HasPrefix(ev[1], "delete") {
		t.Errorf("storage calls %v, want the disk created and deleted", ev)
	}
}
