package machine

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/boxd-dev/boxd/devices/power"
	"github.com/boxd-dev/boxd/internal/testguest"
	"github.com/boxd-dev/boxd/virtio/mmio"
	"github.com/boxd-dev/boxd/vmm/boot"
	"github.com/boxd-dev/boxd/vmm/kvm"
)

// TestPVHBootPath boots a tiny ELF "kernel" through the real loader and PVH
// entry: it marks the boot timer and powers off, in 32-bit protected mode.
func TestPVHBootPath(t *testing.T) {
	code := append(testguest.Store32(boot.BootTimerAddr, 1), testguest.Store32(boot.PowerAddr, power.Poweroff)...)
	code = append(code, 0xf4, 0xeb, 0xfd) // hlt; jmp back to hlt
	k := filepath.Join(t.TempDir(), "tiny.elf")
	if err := os.WriteFile(k, testguest.PVHKernel(code), 0o644); err != nil {
		t.Fatal(err)
	}
	var log syncBuffer
	m, err := New(Config{CPUs: 2, MemMiB: 64, Load: LinuxLoader(k, "", "console=ttyS0", 2), Log: &log})
	if errors.Is(err, kvm.ErrNoKVM) {
		t.Skipf("tier 2 needs /dev/kvm: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	if r := m.Wait(); r.Kind != Poweroff {
		t.Fatalf("result = %+v, want poweroff", r)
	}
	if marks := m.BootTimer.Marks(); len(marks) != 1 || marks[0].ID != 1 {
		t.Errorf("boot-timer marks = %+v, want one mark 1", marks)
	}
	if !strings.Contains(log.String(), "boot-timer: mark 1") {
		t.Errorf("log = %q, want the boot-timer line", log.String())
	}
}

// A corrupt kernel is refused with an error after the VM was half built; the
// half-built VM is released, and devices handed to New are closed.
func TestBadKernelIsAnError(t *testing.T) {
	k := filepath.Join(t.TempDir(), "junk")
	if err := os.WriteFile(k, []byte("this is not a kernel image at all, not even close"), 0o644); err != nil {
		t.Fatal(err)
	}
	dev := &closeDev{fakeDev: fakeDev{notified: make(chan int, 1)}}
	_, err := New(Config{CPUs: 1, MemMiB: 32, Load: LinuxLoader(k, "", "", 1), Virtio: []mmio.Device{dev}})
	if errors.Is(err, kvm.ErrNoKVM) {
		t.Skipf("tier 2 needs /dev/kvm: %v", err)
	}
	if !errors.Is(err, boot.ErrUnknownImage) {
		t.Fatalf("err = %v, want ErrUnknownImage", err)
	}
	if !dev.closed {
		t.Error("virtio device not closed after a failed New")
	}
}

type closeDev struct {
	fakeDev
	closed bool
}

func (d *closeDev) Close() error { d.closed = true; return nil }
