package snapshot

import "github.com/boxd-dev/boxd/vmm/kvm"

// State is everything needed to recreate a paused VM, except its memory.
type State struct {
	// MemSize is the guest RAM size in bytes; the memory file must hold at least
	// this much.
	MemSize uint64
	// SavedAt is the host's CLOCK_REALTIME, in Unix nanoseconds, when the
	// state was saved (0: unknown). Restore advances the guest's clock by the
	// time since, so a guest resumed from disk does not fall behind.
	SavedAt int64
	VCPUs   []VCPU
	VM      VM
	// Devices holds each device's own saved state, by unique name. Device
	// owners choose their blob's encoding (and version it themselves); the
	// snapshot only carries and checksums it.
	Devices []Device
}

// VCPU is one vCPU's architectural and KVM state. The layouts of the kvm types
// are the kernel's (see vmm/kvm).
type VCPU struct {
	ID        uint32
	CPUID     []kvm.CPUIDEntry
	Regs      kvm.Regs
	Sregs     kvm.Sregs
	FPU       kvm.FPU
	XSave     kvm.XSave
	XCRs      kvm.XCRs
	MSRs      []kvm.MSR
	LAPIC     kvm.LAPIC
	Events    kvm.VCPUEvents
	DebugRegs kvm.DebugRegs
	MPState   uint32
	// TSCKHz is the guest TSC frequency (0 when KVM did not report it).
	TSCKHz uint32
}

// VM is the state of the in-kernel devices that belong to the VM, not a vCPU.
type VM struct {
	// PICMaster, PICSlave and IOAPIC are kvm_irqchip structures, each with its
	// chip id in the first four bytes.
	PICMaster, PICSlave, IOAPIC kvm.IRQChip
	PIT                         kvm.PITState
	Clock                       kvm.ClockData
}

// Device is one device's saved state.
type Device struct {
	Name string // unique in a State; 1..MaxNameLen bytes
	Data []byte
}

// Device returns the saved state of the device called name.
func (s *State) Device(name string) ([]byte, bool) {
	for _, d := range s.Devices {
		if d.Name == name {
			return d.Data, true
		}
	}
	return nil, false
}

// SetDevice adds or replaces a device's saved state.
func (s *State) SetDevice(name string, data []byte) {
	for i := range s.Devices {
		if s.Devices[i].Name == name {
			s.Devices[i].Data = data
			return
		}
	}
	s.Devices = append(s.Devices, Device{Name: name, Data: data})
}
