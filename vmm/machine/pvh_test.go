package machine

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/boxd-dev/boxd/devices/power"
	"github.com/boxd-dev/boxd/internal/testguest"
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
