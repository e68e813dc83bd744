package cpuid

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/boxd-dev/boxd/vmm/kvm"
)

func find(t *testing.T, es []kvm.CPUIDEntry, fn, idx uint32) kvm.CPUIDEntry {
	t.Helper()
	for _, e := range es {
		if e.Function == fn && e.Index == idx {
			return e
		}
	}
	t.Fatalf("leaf %#x.%d missing", fn, idx)
	return kvm.CPUIDEntry{}
}

func TestForGuest(t *testing.T) {
	supported := []kvm.CPUIDEntry{
		{Function: 0x1, EAX: 0x830f10, EBX: 0x00100800 | 0x42, ECX: 0x1, EDX: 0x178bfbff &^ leaf1EdxHTT},
		{Function: 0x4, Index: 0, Flags: cpuidFlagSignificant, EAX: 0x121 | 0xfc000000 | 0x3c000},
		{Function: 0x4, Index: 1, Flags: cpuidFlagSignificant, EAX: 0},
		{Function: 0x7, Index: 0, Flags: cpuidFlagSignificant, EBX: leaf7EbxIntelPT | 1},
		{Function: 0xa, EAX: 0x07300805, EBX: 1, EDX: 0x603},
		{Function: 0xb, Index: 0, Flags: cpuidFlagSignificant},
		{Function: 0xb, Index: 1, Flags: cpuidFlagSignificant},
		{Function: 0xb, Index: 2, Flags: cpuidFlagSignificant},
		{Function: 0x40000000, EAX: 0x40000001, EBX: 0x4b4d564b},
		{Function: 0x80000001, ECX: ext1EcxPerfCtrCore | 1},
		{Function: 0x80000008, ECX: 0x0000f00f | 0x3000},
	}
	orig := append([]kvm.CPUIDEntry(nil), supported...)
	got := ForGuest(supported, 2, 4, Options{TSCDeadline: true})
	if d := cmp.Diff(orig, supported); d != "" {
		t.Fatalf("ForGuest modified its input:\n%s", d)
	}

	l1 := find(t, got, 0x1, 0)
	if apic := l1.EBX >> 24; apic != 2 {
		t.Errorf("leaf 1 APIC ID = %d, want 2", apic)
	}
	if n := l1.EBX >> 16 & 0xff; n != 4 {
		t.Errorf("leaf 1 logical count = %d, want 4", n)
	}
	if l1.ECX&leaf1EcxHypervisor == 0 || l1.ECX&leaf1EcxTSCDeadline == 0 || l1.EDX&leaf1EdxHTT == 0 {
		t.Errorf("leaf 1 ECX %#x EDX %#x: want hypervisor, TSC-deadline and HTT bits", l1.ECX, l1.EDX)
	}
	if l4 := find(t, got, 0x4, 0); l4.EAX>>26 != 3 || l4.EAX>>14&0xfff != 0 {
		t.Errorf("leaf 4 EAX = %#x: want 3 in [31:26], 0 in [25:14]", l4.EAX)
	}
	if l4 := find(t, got, 0x4, 1); l4.EAX != 0 {
		t.Errorf("leaf 4.1 (terminator) EAX = %#x, want 0", l4.EAX)
	}
	if l7 := find(t, got, 0x7, 0); l7.EBX != 1 {
		t.Errorf("leaf 7 EBX = %#x, want Intel PT cleared", l7.EBX)
	}
	if la := find(t, got, 0xa, 0); la != (kvm.CPUIDEntry{Function: 0xa}) {
		t.Errorf("leaf 0xa = %+v, want no PMU", la)
	}
	wantB := []kvm.CPUIDEntry{
		{Function: 0xb, Index: 0, Flags: cpuidFlagSignificant, EAX: 0, EBX: 1, ECX: 1 << 8, EDX: 2},
		{Function: 0xb, Index: 1, Flags: cpuidFlagSignificant, EAX: 2, EBX: 4, ECX: 2<<8 | 1, EDX: 2},
		{Function: 0xb, Index: 2, Flags: cpuidFlagSignificant, EAX: 0, EBX: 0, ECX: 2, EDX: 2},
	}
	for _, w := range wantB {
		if d := cmp.Diff(w, find(t, got, 0xb, w.Index)); d != "" {
			t.Errorf("leaf 0xb.%d (-want +got):\n%s", w.Index, d)
		}
	}
	if e := find(t, got, 0x80000001, 0); e.ECX != 1|ext1EcxCmpLegacy {
		t.Errorf("leaf 0x80000001 ECX = %#x", e.ECX)
	}
	if e := find(t, got, 0x80000008, 0); e.ECX&0xff != 3 || e.ECX>>12&0xf != 2 {
		t.Errorf("leaf 0x80000008 ECX = %#x: want NC=3, ApicIdCoreIdSize=2", e.ECX)
	}
	if e := find(t, got, 0x40000000, 0); e.EBX != 0x4b4d564b {
		t.Errorf("hypervisor leaf changed: %+v", e)
	}
}

func TestSingleCPU(t *testing.T) {
	got := ForGuest([]kvm.CPUIDEntry{{Function: 0x1, EDX: leaf1EdxHTT}, {Function: 0x80000001, ECX: ext1EcxCmpLegacy}}, 0, 1, Options{})
	if got[0].EDX&leaf1EdxHTT != 0 || got[0].ECX&leaf1EcxTSCDeadline != 0 || got[1].ECX&ext1EcxCmpLegacy != 0 {
		t.Errorf("single vCPU still advertises multiple threads: %+v", got)
	}
}

// On a host with /dev/kvm, the filter must produce leaves KVM accepts.
func TestAcceptedByKVM(t *testing.T) {
	sys, err := kvm.Open()
	if err != nil {
		t.Skipf("tier 2 needs /dev/kvm: %v", err)
	}
	defer sys.Close()
	sup, err := sys.SupportedCPUID()
	if err != nil {
		t.Fatal(err)
	}
	vm, err := sys.CreateVM()
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	if err := vm.CreateIRQChip(); err != nil {
		t.Fatal(err)
	}
	for id := range 2 {
		c, err := vm.CreateVCPU(id)
		if err != nil {
			t.Fatal(err)
		}
		want := ForGuest(sup, id, 2, Options{TSCDeadline: sys.CheckExtension(kvm.CapTSCDeadlineTimer) > 0})
		if err := c.SetCPUID2(want); err != nil {
			t.Fatal(err)
		}
		back, err := c.CPUID2()
		if err != nil {
			t.Fatal(err)
		}
		if len(back) != len(want) {
			t.Errorf("vcpu %d: KVM kept %d leaves, set %d", id, len(back), len(want))
		}
		c.Close()
	}
}
