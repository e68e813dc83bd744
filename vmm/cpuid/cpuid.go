package cpuid

import (
	"math/bits"

	"github.com/boxd-dev/boxd/vmm/kvm"
)

// Feature bits adjusted here.
const (
	leaf1EcxHypervisor   = 1 << 31
	leaf1EcxTSCDeadline  = 1 << 24
	leaf1EdxHTT          = 1 << 28
	ext1EcxCmpLegacy     = 1 << 1
	ext1EcxPerfCtrCore   = 1 << 23
	ext1EcxPerfCtrNB     = 1 << 24
	ext1EcxPerfCtrLLC    = 1 << 28
	leaf7EbxIntelPT      = 1 << 25
	leaf0xbTypeSMT       = 1
	leaf0xbTypeCore      = 2
	cpuidFlagSignificant = kvm.CPUIDFlagSignificantIndex
)

// Options are facts about the host that KVM reports outside
// KVM_GET_SUPPORTED_CPUID.
type Options struct {
	// TSCDeadline: KVM emulates the LAPIC TSC-deadline timer
	// (KVM_CAP_TSC_DEADLINE_TIMER). KVM never sets this bit in the supported
	// leaves; without it the guest calibrates the LAPIC timer against the PIT,
	// which is slow and, on a slow host, fails ("APIC timer disabled").
	TSCDeadline bool
}

// ForGuest returns the CPUID leaves for vCPU id (its APIC ID) of a VM with ncpus
// vCPUs. supported is not modified.
func ForGuest(supported []kvm.CPUIDEntry, id, ncpus int, opt Options) []kvm.CPUIDEntry {
	coreBits := uint32(bits.Len(uint(ncpus - 1))) // bits of APIC ID that number cores
	out := make([]kvm.CPUIDEntry, 0, len(supported))
	for _, e := range supported {
		switch e.Function {
		case 0x1:
			// EBX: [31:24] initial APIC ID, [23:16] logical processors per package,
			// [15:8] CLFLUSH line size in 8-byte units.
			e.EBX = uint32(id)<<24 | uint32(ncpus)<<16 | 8<<8 | e.EBX&0xff
			e.ECX |= leaf1EcxHypervisor
			if opt.TSCDeadline {
				e.ECX |= leaf1EcxTSCDeadline
			}
			if ncpus > 1 {
				e.EDX |= leaf1EdxHTT
			} else {
				e.EDX &^= leaf1EdxHTT
			}
		case 0x4:
			// Deterministic cache parameters: cores per package in EAX[31:26];
			// each cache is shared by one thread (EAX[25:14] = 0).
			if e.EAX&0x1f != 0 { // a real cache level, not the terminating entry
				e.EAX = e.EAX&0x3fff | uint32(ncpus-1)<<26
			}
		case 0x7:
			if e.Index == 0 {
				e.EBX &^= leaf7EbxIntelPT
			}
		case 0xa:
			// Architectural performance monitoring: none.
			e.EAX, e.EBX, e.ECX, e.EDX = 0, 0, 0, 0
		case 0xb, 0x1f:
			// Extended topology: level 0 = SMT (1 thread), level 1 = core (ncpus).
			e.EDX = uint32(id)
			switch e.Index {
			case 0:
				e.EAX, e.EBX, e.ECX = 0, 1, leaf0xbTypeSMT<<8
			case 1:
				e.EAX, e.EBX, e.ECX = coreBits, uint32(ncpus), leaf0xbTypeCore<<8|1
			default:
				e.EAX, e.EBX, e.ECX = 0, 0, e.Index
			}
		case 0x80000001:
			e.ECX &^= ext1EcxPerfCtrCore | ext1EcxPerfCtrNB | ext1EcxPerfCtrLLC
			if ncpus > 1 {
				e.ECX |= ext1EcxCmpLegacy
			} else {
				e.ECX &^= ext1EcxCmpLegacy
			}
		case 0x80000008:
			// AMD: ECX[15:12] APIC ID bits for cores, [7:0] cores - 1.
			e.ECX = e.ECX&^0xf0ff | coreBits<<12 | uint32(ncpus-1)
		case 0x8000001e:
			// AMD extended APIC ID / core ID: one thread per core.
			e.EAX = uint32(id)
			e.EBX = uint32(id) & 0xff
			e.ECX = 0
		}
		out = append(out, e)
	}
	return out
}
