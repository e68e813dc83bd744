package machine

import (
	"errors"
	"fmt"
	"time"

	"github.com/boxd-dev/boxd/vmm/boot"
	"github.com/boxd-dev/boxd/vmm/kvm"
	"github.com/boxd-dev/boxd/vmm/memory"
	"github.com/boxd-dev/boxd/vmm/snapshot"
)

// Snapshot saves the state of a paused (or never started) machine as plain
// data: vCPUs, in-kernel irqchip, PIT and clock, and every device under its
// name (see DeviceNames). Guest memory is not copied: it is the RAM's
// backing file (RAM().File()), which stays valid while the machine stays
// paused. A never started machine's devices are quiesced here and restart
// with Start.
func (m *Machine) Snapshot() (*snapshot.State, error) {
	// Created counts too: its vCPUs have never run, so a restored machine can
	// be saved again before it starts.
	if st := m.State(); st != Paused && st != Created {
		return nil, fmt.Errorf("%w: snapshot in state %v (pause first)", ErrState, st)
	}
	m.pauseDevices()
	msrList, err := m.sys.MSRIndexList()
	if err != nil {
		return nil, err
	}
	s := &snapshot.State{MemSize: m.ram.Size(), SavedAt: time.Now().UnixNano()}
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
	for _, d := range m.stateDevices() {
		b, err := d.dev.SaveState()
		if err != nil {
			return nil, fmt.Errorf("machine: snapshot: device %s: %w", d.name, err)
		}
		s.SetDevice(d.name, b)
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
// (console, log, memory folder, virtio devices); its CPUs, MemMiB and Load
// are taken from the state. The machine takes ownership of ram and of
// cfg.Virtio, even on error. The returned machine is Created: Start runs it
// from where the state left off.
//
// cfg.Virtio must be the same kinds of devices, in the same order, as the
// saved machine's (their names must match the state's, see DeviceNames);
// their host sides are the new config's (disk file, TAP, vsock socket and
// CID). Every device is restored, quiesced, before Restore returns: a vsock
// device drops its host connections and sends the guest a transport reset
// when the machine starts. The guest clock (kvmclock) is the saved one plus
// the host time elapsed since the state was saved (State.SavedAt), so a
// guest restored later keeps the wall time. Any invalid state is an error,
// and the machine is closed: nothing is half-restored.
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
	// Quiesced from the start: nothing runs before Start.
	m.pauseDevices()
	if err := m.restore(st); err != nil {
		m.Close()
		return nil, fmt.Errorf("machine: restore: %w", err)
	}
	return m, nil
}

func (m *Machine) restore(st *snapshot.State) error {
	devs := m.stateDevices()
	if err := checkDeviceSet(devs, st); err != nil {
		return err
	}
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
	if err := m.vm.SetClock(kvm.ClockData{Clock: restoredClock(st, time.Now())}); err != nil {
		return err
	}
	for i, c := range m.kvcpus {
		if err := restoreVCPU(c, &st.VCPUs[i]); err != nil {
			return err
		}
	}
	for _, d := range devs {
		b, _ := st.Device(d.name)
		if err := d.dev.RestoreState(b); err != nil {
			return fmt.Errorf("device %s: %w", d.name, err)
		}
	}
	return nil
}

// restoredClock is the kvmclock value a restored guest starts from: the
// saved value advanced by the host wall time since the save, when the state
// says when that was. A save "in the future" (the host clock stepped back)
// advances nothing.
func restoredClock(st *snapshot.State, now time.Time) uint64 {
	c := st.VM.Clock.Clock
	if st.SavedAt != 0 {
		if d := now.UnixNano() - st.SavedAt; d > 0 {
			c += uint64(d)
		}
	}
	return c
}

// stateful is a device whose state a snapshot carries.
type stateful interface {
	SaveState() ([]byte, error)
	RestoreState(data []byte) error
}

// namedDevice is a device with its name in snapshot.State.Devices.
type namedDevice struct {
	name string
	dev  stateful
}

// stateDevices lists the devices with guest-visible state, named by kind
// and bus address: "serial@0x3f8", "i8042@0x60", "rtc@0x70", and
// "virtio-<kind>@<mmio base>" for each virtio device. The power register
// and the boot timer hold nothing the guest can see.
func (m *Machine) stateDevices() []namedDevice {
	devs := []namedDevice{
		{fmt.Sprintf("serial@%#x", boot.COM1Port), m.Serial},
		{fmt.Sprintf("i8042@%#x", boot.I8042Data), m.kbd},
		{fmt.Sprintf("rtc@%#x", boot.RTCPort), m.cmos},
	}
	for _, s := range m.virtio {
		devs = append(devs, namedDevice{virtioName(s), s.transport})
	}
	return devs
}

// DeviceNames returns the names under which Snapshot saves the machine's
// devices, in order.
func (m *Machine) DeviceNames() []string {
	var names []string
	for _, d := range m.stateDevices() {
		names = append(names, d.name)
	}
	return names
}

// checkDeviceSet refuses a state whose devices are not exactly this
// machine's, naming the first difference each way.
func checkDeviceSet(devs []namedDevice, st *snapshot.State) error {
	have := make(map[string]bool, len(devs))
	var errs []error
	for _, d := range devs {
		have[d.name] = true
		if _, ok := st.Device(d.name); !ok {
			errs = append(errs, fmt.Errorf("machine has device %s, the snapshot does not", d.name))
		}
	}
	for _, d := range st.Devices {
		if !have[d.Name] {
			errs = append(errs, fmt.Errorf("snapshot has device %s, the machine does not", d.Name))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrDeviceSet, errors.Join(errs...))
	}
	return nil
}

// ErrDeviceSet is returned by Restore when the machine's devices differ
// from the snapshot's.
var ErrDeviceSet = errors.New("device set differs from the snapshot's")

// pauseDevices quiesces every device (see Pause). Idempotent.
func (m *Machine) pauseDevices() {
	m.devMu.Lock()
	defer m.devMu.Unlock()
	if m.devPaused {
		return
	}
	for _, s := range m.virtio {
		s.transport.Pause()
	}
	m.Serial.Pause()
	m.kbd.Pause()
	m.devPaused = true
}

// resumeDevices undoes pauseDevices. Idempotent.
func (m *Machine) resumeDevices() {
	m.devMu.Lock()
	defer m.devMu.Unlock()
	if !m.devPaused {
		return
	}
	m.devPaused = false
	m.kbd.Resume()
	m.Serial.Resume()
	for _, s := range m.virtio {
		s.transport.Resume()
	}
}

// restoreVCPU writes state in the order KVM needs: CPUID first (it decides
// which MSRs and XSAVE features exist), sregs before the LAPIC (APIC base),
// the LAPIC before the MSRs (KVM ignores a TSC-deadline write unless the
// LAPIC timer is already in TSC-deadline mode: restored the other way round,
// a Linux guest's next timer never fires), the TSC before the deadline
// (msrsTSCFirst), MSRs before events, MP state last.
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
		func() error { return c.SetLAPIC(v.LAPIC) },
		func() error { return c.SetMSRs(msrsTSCFirst(v.MSRs)) },
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

// msrIA32TSC is the time-stamp counter; the TSC-deadline MSR is relative to it.
const msrIA32TSC = 0x10

// msrsTSCFirst returns msrs with IA32_TSC moved to the front, so the deadline
// and anything else read against the TSC is written after it.
func msrsTSCFirst(msrs []kvm.MSR) []kvm.MSR {
	out := make([]kvm.MSR, 0, len(msrs))
	for _, m := range msrs {
		if m.Index == msrIA32TSC {
			out = append(out, m)
		}
	}
	for _, m := range msrs {
		if m.Index != msrIA32TSC {
			out = append(out, m)
		}
	}
	return out
}
