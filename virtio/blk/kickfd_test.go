package blk_test

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/boxd-dev/boxd/virtio/blk"
	"github.com/boxd-dev/boxd/virtio/mmio"
)

var _ mmio.KickFDUser = (*blk.Device)(nil)

// newKickFDEnv is a disk whose worker polls a duplicate of kick, as it does
// of the queue's ioeventfd in a VM; the mock driver's kicks signal kick
// instead of writing QueueNotify, so nothing reaches Notify.
func newKickFDEnv(t *testing.T) (*env, int) {
	t.Helper()
	kick, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(kick) })
	_, f := sparseDisk(t, 1<<20, false)
	e := newEnvSetup(t, f, blk.Config{}, allFeatures, func(d *blk.Device) {
		if err := d.UseKickFDs([]int{kick}); err != nil {
			t.Fatal(err)
		}
		if err := d.UseKickFDs([]int{kick}); err == nil {
			t.Error("a second UseKickFDs succeeded")
		}
	})
	e.q.Notify = func() {
		var one = [8]byte{1}
		if _, err := unix.Write(kick, one[:]); err != nil {
			t.Error(err)
		}
	}
	return e, kick
}

// Requests kicked only through the ioeventfd are served, across a pause
// (kicks while paused wait in the counter) and a reset.
func TestKickThroughIOEventFD(t *testing.T) {
	e, _ := newKickFDEnv(t)
	data := pattern(4096, 3)
	if r := e.do1(request{typ: blk.TypeOut, sector: 8, out: data}); r.status != blk.StatusOK {
		t.Fatalf("write: status %d", r.status)
	}
	if r := e.do1(request{typ: blk.TypeIn, sector: 8, in: 4096}); r.status != blk.StatusOK || string(r.in) != string(data) {
		t.Fatalf("read back: status %d, data equal %v", r.status, string(r.in) == string(data))
	}

	e.dev.Pause()
	_, collect := e.add(request{typ: blk.TypeIn, sector: 8, in: 512})
	e.q.Kick()
	e.dev.Resume()
	used, err := e.q.Wait(e.irq, 1, timeout)
	if err != nil {
		t.Fatalf("request kicked while paused: %v", err)
	}
	if r := collect(used[0]); r.status != blk.StatusOK || string(r.in) != string(data[:512]) {
		t.Fatalf("request kicked while paused: status %d", r.status)
	}
	if got := e.dev.Stats().Requests.Load(); got != 3 {
		t.Errorf("Requests = %d, want 3", got)
	}
}

// Refused kick fds leave the device as it was.
func TestUseKickFDsRefusesBadFDs(t *testing.T) {
	e := newEnv(t, 1<<20, blk.Config{}, allFeatures)
	kick, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(kick)
	if err := e.dev.UseKickFDs([]int{kick, kick}); err == nil {
		t.Error("two kick fds for one queue accepted")
	}
	if err := e.dev.UseKickFDs([]int{kick}); err == nil {
		t.Error("kick fd accepted while the worker runs")
	}
	if r := e.do1(request{typ: blk.TypeIn, in: 512}); r.status != blk.StatusOK {
		t.Errorf("read after refused UseKickFDs: status %d", r.status)
	}
	if err := e.dev.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.dev.UseKickFDs([]int{kick}); err == nil {
		t.Error("kick fd accepted after Close")
	}
}
