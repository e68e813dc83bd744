package machine

import (
	"errors"
	"fmt"

	"github.com/boxd-dev/boxd/vmm/kvm"
	"github.com/boxd-dev/boxd/vmm/memory"
	"github.com/boxd-dev/boxd/vmm/snapshot"
)

// Snapshot saves the state of a paused (or never started) machine as plain data. Guest memory is
// not copied: it is the RAM's backing file (RAM().File()), which stays valid
// while the machine stays paused. Device state is not saved yet.
func (m *Machine) Snapshot() (*snapshot.State, error) {
	// Created counts too: its vCPUs have never run, so a restored machine can
	// be saved again before it starts.
	if st := m.State(); st != Paused && st != Created {
		return nil, fmt.Errorf("%w: snapshot in state %v (pause first)", ErrState, st)
	}
	msrList, err := m.sys.MSRIndexList()
	if err != nil {
		return nil, err
	}
	s := &snapshot.State{MemSize: m.ram.Size()}
	for _, c := range m.kvcpus {
		vs, err := saveVCPU(c, msrList)
		if err != nil {
			return nil, fmt.Errorf("machine: snapshot: %w", err)
		}
		s.VCPUs = append(s.VCPUs, vs)
	}
	if err := m.saveVM(&s.VM); err != nil {
		return nil, fmt.Errorf("machine: snapshot: %w", err)
	}
	return s, nil
}

func saveVCPU(c *kvm.VCPU, msrList []uint32) (v snapshot.VCPU, err error) {
	v.ID = uint32(c.ID())
	if v.CPUID, err = c.CPUID2(); err != nil {
		return v, err
	}
	if v.Regs, err = c.Regs(); err != nil {
		return v, err
	}
	if v.Sregs, err = c.Sregs(); err != nil {
		return v, err
	}
	if v.FPU, err = c.FPU(); err != nil {
		return v, err
	}
	if v.XSave, err = c.XSave(); err != nil {
		return v, err
	}
	if v.XCRs, err = c.XCRs(); err != nil {
		return v, err
	}
	if v.MSRs, err = readMSRs(c, msrList); err != nil {
		return v, err
	}
	if v.LAPIC, err = c.LAPIC(); err != nil {
		return v, err
	}
	if v.Events, err = c.Events(); err != nil {
		return v, err
	}
	if v.DebugRegs, err = c.DebugRegs(); err != nil {
		return v, err
	}
	if v.MPState, err = c.MPState(); err != nil {
		return v, err
	}
	// Not every host reports the TSC rate (0 means "leave it").
	v.TSCKHz, _ = c.TSCKHz()
	return v, nil
}

// readMSRs reads every MSR of list that KVM will give back, in one batch.
// KVM stops at the first index it refuses (one the vCPU's CPUID does not
// expose, say) and reports how many it read; that index is dropped and the
// rest asked for again, so the cost is one ioctl per refused index.
func readMSRs(c *kvm.VCPU, list []uint32) ([]kvm.MSR, error) {
	want := append([]uint32(nil), list...)
	var out []kvm.MSR
	for len(want) > 0 {
		got, err := c.MSRs(want)
		var short *kvm.MSRReadError
		if errors.As(err, &short) {
			// The first short.Read were read; keep them by asking again
			// without the refused one.
			want = append(want[:short.Read:short.Read], want[short.Read+1:]...)
			continue
		}
		if err != nil {
			return nil, err
		}
		out = got
		break
	}
	return out, nil
}

func (m *Machine) saveVM(s *snapshot.VM) (err error) {
	if s.PICMaster, err = m.vm.IRQChip(kvm.IRQChipPICMaster); err != nil {
		return err
	}
	if s.PICSlave, err = m.vm.IRQChip(kvm.IRQChipPICSlave); err != nil {
		return err
	}
	if s.IOAPIC, err = m.vm.IRQChip(kvm.IRQChipIOAPIC); err != nil {
		return err
	}
	if s.PIT, err = m.vm.PIT2(); err != nil {
		return err
	}
	s.Clock, err = m.vm.Clock()
	return err
}

// Restore builds a machine from a saved state and its guest RAM (typically
// memory.MapPrivate of the snapshot's memory file). cfg gives the host side
// (console, log, memory folder); its CPUs, MemMiB and Load are taken from the
// state. The machine takes ownership of ram, even on error. The returned
// machine is Created: Start runs it from where the state left off.
//
// Virtio devices in cfg are mapped but their queue state is not restored yet.
func Restore(cfg Config, st *snapshot.State, ram *memory.RAM) (*Machine, error) {
	if st.MemSize != ram.Size() || st.MemSize%(1<<20) != 0 || st.MemSize < 16<<20 {
		ram.Close()
		return nil, fmt.Errorf("machine: restore: state for %d bytes of RAM, memory has %d (want equal, whole MiB, at least 16)", st.MemSize, ram.Size())
	}
	cfg.CPUs = len(st.VCPUs)
	cfg.MemMiB = int(st.MemSize >> 20)
	cfg.Load = func(*memory.RAM, *kvm.VCPU, string) error { return nil }
	cfg.ram = ram
	m, err := New(cfg)
	if err != nil {
		return nil, fmt.Errorf("machine: restore: %w", err)
	}
	if err := m.restore(st); err != nil {
		m.Close()
		return nil, fmt.Errorf("machine: restore: %w", err)
	}
	return m, nil
}

func (m *Machine) restore(st *snapshot.State) error {
	for _, chip := range []kvm.IRQChip{st.VM.PICMaster, st.VM.PICSlave, st.VM.IOAPIC} {
		if err := m.vm.SetIRQChip(chip); err != nil {
			return err
		}
	}
	if err := m.vm.SetPIT2(st.VM.PIT); err != nil {
		return err
	}
	// Only the clock value: the saved flags describe the saving host's
	// realtime/TSC pairing, which means nothing here.
	if err := m.vm.SetClock(kvm.ClockData{Clock: st.VM.Clock.Clock}); err != nil {
		return err
	}
	for i, c := range m.kvcpus {
		if err := restoreVCPU(c, &st.VCPUs[i]); err != nil {
			return err
		}
	}
	return nil
}

// restoreVCPU writes state in the order KVM needs: CPUID first (it decides
// which MSRs and XSAVE features exist), sregs before the LAPIC (APIC base),
// MSRs before events, MP state last.
func restoreVCPU(c *kvm.VCPU, v *snapshot.VCPU) error {
	if len(v.CPUID) > 0 {
		if err := c.SetCPUID2(v.CPUID); err != nil {
			return err
		}
	}
	if v.TSCKHz != 0 {
		if cur, err := c.TSCKHz(); err == nil && cur != v.TSCKHz {
			if err := c.SetTSCKHz(v.TSCKHz); err != nil {
				return err
			}
		}
	}
	steps := []func() error{
		func() error { return c.SetSregs(v.Sregs) },
		func() error { return c.SetRegs(v.Regs) },
		func() error { return c.SetFPU(v.FPU) },
		func() error { return c.SetXSave(v.XSave) },
		func() error { return c.SetXCRs(v.XCRs) },
		func() error { return c.SetMSRs(v.MSRs) },
		func() error { return c.SetLAPIC(v.LAPIC) },
		func() error { return c.SetEvents(v.Events) },
		func() error { return c.SetDebugRegs(v.DebugRegs) },
		func() error { return c.SetMPState(v.MPState) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}
