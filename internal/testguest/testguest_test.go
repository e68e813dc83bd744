package testguest

import (
	"errors"
	"runtime"
	"testing"

	"github.com/boxd-dev/boxd/vmm/kvm"
)

// run boots a test guest with SumLoop(n) at ring and returns what it reported.
func run(t *testing.T, ring int, n uint64) uint64 {
	t.Helper()
	g, err := New(SumLoop(n), ring)
	if errors.Is(err, kvm.ErrNoKVM) {
		t.Skipf("tier 2 needs /dev/kvm: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	c := g.VCPU
	c.BindThread()
	var result uint64
	var got bool
	for {
		e, err := c.Run()
		if errors.Is(err, kvm.ErrInterrupted) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if e.Reason != kvm.ExitMMIO || !e.Write {
			regs, _ := c.Regs()
			t.Fatalf("unexpected exit %v at rip %#x", e, regs.RIP)
		}
		switch e.Addr {
		case ResultAddr:
			if e.Size != 8 {
				t.Fatalf("result write of %d bytes", e.Size)
			}
			for i := range 8 {
				result |= uint64(e.Data[i]) << (8 * i)
			}
			got = true
		case DoneAddr:
			if !got {
				t.Fatal("done before result")
			}
			return result
		default:
			t.Fatalf("write to unexpected MMIO address %#x", e.Addr)
		}
	}
}

// TestRing3ReportsThroughMMIO is the tier-2 smoke test: a ring-3 guest computes a
// known value on the host's /dev/kvm and reports it through an MMIO write.
func TestRing3ReportsThroughMMIO(t *testing.T) {
	const n = 100000
	if got := run(t, 3, n); got != Sum(n) {
		t.Fatalf("guest reported %d, want %d", got, Sum(n))
	}
}

// TestRing0 runs the same program at ring 0 (slow on PVM, so short).
func TestRing0(t *testing.T) {
	const n = 1000
	if got := run(t, 0, n); got != Sum(n) {
		t.Fatalf("guest reported %d, want %d", got, Sum(n))
	}
}
