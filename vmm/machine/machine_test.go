package machine

import (
	"bytes"
	"errors"
	"sync"
	"testing"

	"github.com/boxd-dev/boxd/devices/power"
	"github.com/boxd-dev/boxd/internal/testguest"
	"github.com/boxd-dev/boxd/vmm/boot"
	"github.com/boxd-dev/boxd/vmm/kvm"
	"github.com/boxd-dev/boxd/vmm/memory"
)

// syncBuffer is a bytes.Buffer safe for the vCPU goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// programLoader loads a test program at ring 0: port I/O from ring 3 faults on
// PVM hosts whatever IOPL says, and these programs are short enough for PVM's
// ring-0 emulator.
func programLoader(code []byte) Loader {
	return func(mem *memory.RAM, bsp *kvm.VCPU, _ string) error {
		if err := testguest.Load(mem, code); err != nil {
			return err
		}
		return testguest.SetupVCPU(bsp, 0)
	}
}

func newMachine(t *testing.T, cpus int, code []byte, console *syncBuffer) *Machine {
	t.Helper()
	cfg := Config{CPUs: cpus, MemMiB: 32, Load: programLoader(code)}
	if console != nil {
		cfg.Console = console
	}
	m, err := New(cfg)
	if errors.Is(err, kvm.ErrNoKVM) {
		t.Skipf("tier 2 needs /dev/kvm: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return m
}

// A guest that prints through the UART's port I/O and powers off through the
// power register's MMIO: both exit paths, and a clean poweroff result.
func TestConsoleAndPoweroff(t *testing.T) {
	var console syncBuffer
	m := newMachine(t, 2, testguest.Print(boot.COM1Port, "hello from the guest\n", boot.PowerAddr, power.Poweroff), &console)
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	r := m.Wait()
	if r.Kind != Poweroff {
		t.Fatalf("result = %+v, want poweroff", r)
	}
	if got := console.String(); got != "hello from the guest\n" {
		t.Errorf("console = %q", got)
	}
	if m.State() != Stopped {
		t.Errorf("state = %v, want stopped", m.State())
	}
}

func TestReboot(t *testing.T) {
	m := newMachine(t, 1, testguest.Print(boot.COM1Port, "", boot.PowerAddr, power.Reboot), nil)
	m.Start()
	if r := m.Wait(); r.Kind != Reboot {
		t.Fatalf("result = %+v, want reboot", r)
	}
}

// A guest that jumps to nonsense ends as a clean crash result.
func TestTripleFaultIsCrash(t *testing.T) {
	m := newMachine(t, 1, []byte{0x0f, 0x0b}, nil) // ud2 with no IDT
	m.Start()
	if r := m.Wait(); r.Kind != Crash {
		t.Fatalf("result = %+v, want crash", r)
	}
}

// Writing garbage to every platform device must not take the monitor down:
// the guest sprays a port range and MMIO pages with bytes, then powers off.
func TestGarbageToDevices(t *testing.T) {
	var code []byte
	for _, port := range []uint16{0x3f8, 0x3f9, 0x3fa, 0x3fb, 0x3fc, 0x3fd, 0x3ff, 0x60, 0x64, 0x70, 0x71, 0x80, 0x1234} {
		code = append(code, 0x66, 0xba, byte(port), byte(port>>8), 0xb0, 0xa5, 0xee, 0xec) // mov dx; mov al; out; in
	}
	code = append(code, testguest.Print(0x3f8, "", boot.BootTimerAddr+0x10, 0xdeadbeef)[4:]...)
	m := newMachine(t, 1, append(code[:len(code)-2], testguest.Print(0x3f8, "", boot.PowerAddr, power.Poweroff)[4:]...), nil)
	m.Start()
	if r := m.Wait(); r.Kind != Poweroff {
		t.Fatalf("result = %+v, want poweroff after the garbage", r)
	}
}

// A spinning guest is stopped by the host; pause and resume work in between.
func TestHostStopAndPause(t *testing.T) {
	m := newMachine(t, 2, []byte{0xeb, 0xfe}, nil)
	if err := m.Pause(); !errors.Is(err, ErrState) {
		t.Fatalf("pause before start: %v, want ErrState", err)
	}
	m.Start()
	for range 3 {
		if err := m.Pause(); err != nil {
			t.Fatal(err)
		}
		if m.State() != Paused {
			t.Fatalf("state = %v", m.State())
		}
		if err := m.Resume(); err != nil {
			t.Fatal(err)
		}
	}
	m.Stop()
	if r := m.Wait(); r.Kind != HostStop {
		t.Fatalf("result = %+v, want host stop", r)
	}
}

func TestPanicWatch(t *testing.T) {
	var got []string
	var out bytes.Buffer
	w := newPanicWatch(&out, func(s string) { got = append(got, s) })
	for _, c := range []byte("[    1.0] ok\n[    2.0] Kernel panic - not syncing: VFS: Unable to mount root\n[ 3] Kernel panic - not syncing: again\n") {
		w.Write([]byte{c})
	}
	if len(got) != 1 || got[0] != "Kernel panic - not syncing: VFS: Unable to mount root" {
		t.Errorf("reports = %q", got)
	}
	if !bytes.Contains(out.Bytes(), []byte("again")) {
		t.Error("output not passed through")
	}
}
