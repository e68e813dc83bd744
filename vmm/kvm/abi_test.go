package kvm

import (
	"testing"
)

// The kernel's struct sizes (x86-64); a mismatch would corrupt ioctl arguments.
func TestABISizes(t *testing.T) {
	for _, tc := range []struct {
		name      string
		got, want uintptr
	}{
		{"kvm_regs", sizeOf[Regs](), 144},
		{"kvm_segment", sizeOf[Segment](), 24},
		{"kvm_dtable", sizeOf[DTable](), 16},
		{"kvm_sregs", sizeOf[Sregs](), 312},
		{"kvm_fpu", sizeOf[FPU](), 416},
		{"kvm_msr_entry", sizeOf[MSR](), 16},
		{"kvm_cpuid_entry2", sizeOf[CPUIDEntry](), 40},
		{"kvm_clock_data", sizeOf[ClockData](), 48},
		{"kvm_userspace_memory_region", sizeOf[userspaceMemoryRegion](), 32},
		{"kvm_irq_level", sizeOf[irqLevel](), 8},
		{"kvm_irqfd", sizeOf[irqfd](), 32},
		{"kvm_ioeventfd", sizeOf[ioeventfd](), 64},
		{"kvm_pit_config", sizeOf[pitConfig](), 64},
		{"kvm_dirty_log", sizeOf[dirtyLog](), 16},
		{"kvm_enable_cap", sizeOf[enableCap](), 104},
	} {
		if tc.got != tc.want {
			t.Errorf("sizeof(%s) = %d, want %d", tc.name, tc.got, tc.want)
		}
	}
}

func TestIoctlNumbers(t *testing.T) {
	// Values from <linux/kvm.h> as compiled on x86-64.
	for _, tc := range []struct {
		name      string
		got, want uintptr
	}{
		{"KVM_CREATE_VM", kvmCreateVM, 0xae01},
		{"KVM_RUN", kvmRun, 0xae80},
		{"KVM_GET_REGS", kvmGetRegs, 0x8090ae81},
		{"KVM_SET_SREGS", kvmSetSregs, 0x4138ae84},
		{"KVM_SET_USER_MEMORY_REGION", kvmSetUserMemoryRegion, 0x4020ae46},
		{"KVM_IRQFD", kvmIRQFD, 0x4020ae76},
		{"KVM_IOEVENTFD", kvmIOEventFD, 0x4040ae79},
		{"KVM_GET_SUPPORTED_CPUID", kvmGetSupportedCPUID, 0xc008ae05},
		{"KVM_SET_CPUID2", kvmSetCPUID2, 0x4008ae90},
		{"KVM_GET_LAPIC", kvmGetLAPIC, 0x8400ae8e},
		{"KVM_GET_XSAVE", kvmGetXSave, 0x9000aea4},
		{"KVM_GET_VCPU_EVENTS", kvmGetVCPUEvents, 0x8040ae9f},
		{"KVM_GET_PIT2", kvmGetPIT2, 0x8070ae9f},
		{"KVM_GET_IRQCHIP", kvmGetIRQChip, 0xc208ae62},
		{"KVM_CREATE_PIT2", kvmCreatePIT2, 0x4040ae77},
		{"KVM_GET_CLOCK", kvmGetClock, 0x8030ae7c},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %#x, want %#x", tc.name, tc.got, tc.want)
		}
	}
}

func TestDecodeExitBounds(t *testing.T) {
	run := make([]byte, 4096)
	// An I/O exit whose data_offset points past the page yields no data, not a panic.
	run[runExitReason] = byte(ExitIO)
	run[runUnion+1] = 4                           // size
	run[runUnion+4] = 200                         // count
	run[runUnion+8], run[runUnion+9] = 0xf0, 0x0f // data_offset 0xff0
	e := decodeExit(run)
	if e.Data != nil {
		t.Fatalf("out-of-page io data decoded: len %d", len(e.Data))
	}
	run[runUnion+4] = 2
	if e := decodeExit(run); len(e.Data) != 8 {
		t.Fatalf("io data len = %d, want 8", len(e.Data))
	}
	// MMIO length is capped at 8.
	clear(run)
	run[runExitReason] = byte(ExitMMIO)
	run[runUnion+16] = 200
	if e := decodeExit(run); len(e.Data) != 8 {
		t.Fatalf("mmio data len = %d, want 8", len(e.Data))
	}
}

func FuzzDecodeExit(f *testing.F) {
	f.Add(make([]byte, 4096))
	f.Fuzz(func(t *testing.T, b []byte) {
		run := make([]byte, 4096)
		copy(run, b)
		e := decodeExit(run)
		_ = e.String()
	})
}
