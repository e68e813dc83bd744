package snapshot

import (
	"encoding/binary"
	"fmt"

	"github.com/boxd-dev/boxd/vmm/kvm"
)

// validate checks the invariants a restore relies on: counts and lengths in
// range, vCPU ids 0..n-1 in order, irqchip ids where KVM expects them, known
// MP states, unique non-empty device names.
func (s *State) validate() error {
	if s.MemSize == 0 || s.MemSize%4096 != 0 {
		return fmt.Errorf("memory size %d is not a positive multiple of 4 KiB", s.MemSize)
	}
	if s.SavedAt < 0 {
		return fmt.Errorf("saved at %d: negative time", s.SavedAt)
	}
	if len(s.VCPUs) < 1 || len(s.VCPUs) > MaxVCPUs {
		return fmt.Errorf("%d vcpus, want 1..%d", len(s.VCPUs), MaxVCPUs)
	}
	for i := range s.VCPUs {
		c := &s.VCPUs[i]
		if c.ID != uint32(i) {
			return fmt.Errorf("vcpu %d has id %d", i, c.ID)
		}
		if len(c.CPUID) > MaxCPUID || len(c.MSRs) > MaxMSRs {
			return fmt.Errorf("vcpu %d: %d cpuid entries, %d msrs (limits %d, %d)", i, len(c.CPUID), len(c.MSRs), MaxCPUID, MaxMSRs)
		}
		if len(c.XSave) < MinXSave || len(c.XSave) > MaxXSave {
			return fmt.Errorf("vcpu %d: xsave of %d bytes, want %d..%d", i, len(c.XSave), MinXSave, MaxXSave)
		}
		if c.MPState > kvm.MPStateSipiReceived {
			return fmt.Errorf("vcpu %d: unknown mp state %d", i, c.MPState)
		}
	}
	for _, chip := range []struct {
		c  *kvm.IRQChip
		id uint32
	}{{&s.VM.PICMaster, kvm.IRQChipPICMaster}, {&s.VM.PICSlave, kvm.IRQChipPICSlave}, {&s.VM.IOAPIC, kvm.IRQChipIOAPIC}} {
		if got := binary.LittleEndian.Uint32(chip.c[:]); got != chip.id {
			return fmt.Errorf("irqchip %d saved with id %d", chip.id, got)
		}
	}
	if len(s.Devices) > MaxDevices {
		return fmt.Errorf("%d devices, limit %d", len(s.Devices), MaxDevices)
	}
	seen := make(map[string]bool, len(s.Devices))
	for _, d := range s.Devices {
		if d.Name == "" || len(d.Name) > MaxNameLen {
			return fmt.Errorf("device name %q: want 1..%d bytes", d.Name, MaxNameLen)
		}
		if seen[d.Name] {
			return fmt.Errorf("device %q saved twice", d.Name)
		}
		seen[d.Name] = true
		if len(d.Data) > MaxDeviceData {
			return fmt.Errorf("device %q: %d bytes, limit %d", d.Name, len(d.Data), MaxDeviceData)
		}
	}
	return nil
}
