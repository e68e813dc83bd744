package kvm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// VCPU is a KVM vCPU file descriptor and its shared kvm_run page.
//
// Run must be called from one goroutine (locked to its OS thread by the caller);
// Kick may be called from any goroutine.
type VCPU struct {
	fd        int
	id        int
	run       []byte
	xsaveSize int
	tid       atomic.Int32 // OS thread that calls Run, for Kick; 0 when unknown
}

// ID is the vCPU's index (and APIC ID).
func (c *VCPU) ID() int { return c.id }

// Close unmaps the run page and closes the vCPU fd.
func (c *VCPU) Close() error {
	err := unix.Munmap(c.run)
	if cerr := unix.Close(c.fd); err == nil {
		err = cerr
	}
	return err
}

// ErrInterrupted is returned by Run when KVM_RUN returned EINTR: a signal (a Kick,
// or a Go runtime preemption signal) arrived. The caller checks its control state
// and calls Run again.
var ErrInterrupted = errors.New("kvm: run interrupted")

// BindThread records the calling OS thread as the one that runs this vCPU, so
// that Kick can signal it. The caller must have called runtime.LockOSThread.
func (c *VCPU) BindThread() { c.tid.Store(int32(unix.Gettid())) }

// Run enters the guest until the next exit and decodes it.
func (c *VCPU) Run() (Exit, error) {
	_, err := ioctl(c.fd, kvmRun, 0)
	// Clear immediate_exit so the next Run enters the guest, whatever the outcome.
	atomic.AndUint32(runWord(c.run), ^uint32(0xff00))
	if err != nil {
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
			return Exit{}, ErrInterrupted
		}
		return Exit{}, fmt.Errorf("kvm: run vcpu %d: %w", c.id, err)
	}
	return decodeExit(c.run), nil
}

// Kick makes a concurrent or imminent Run return ErrInterrupted: it sets
// kvm_run.immediate_exit (covering the race where the thread is about to enter
// KVM_RUN) and signals the vCPU thread (covering a thread already inside).
// SIGURG is used because the Go runtime already expects and tolerates it.
func (c *VCPU) Kick() error {
	atomic.OrUint32(runWord(c.run), 0x100)
	tid := c.tid.Load()
	if tid == 0 {
		return nil
	}
	err := unix.Tgkill(unix.Getpid(), int(tid), unix.SIGURG)
	if err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("kvm: kick vcpu %d: %w", c.id, err)
	}
	return nil
}

// Regs reads the general-purpose registers.
func (c *VCPU) Regs() (Regs, error) {
	var r Regs
	_, err := ioctlPtr(c.fd, kvmGetRegs, &r)
	return r, c.wrap("get regs", err)
}

// SetRegs writes the general-purpose registers.
func (c *VCPU) SetRegs(r Regs) error {
	_, err := ioctlPtr(c.fd, kvmSetRegs, &r)
	return c.wrap("set regs", err)
}

// Sregs reads the special registers.
func (c *VCPU) Sregs() (Sregs, error) {
	var s Sregs
	_, err := ioctlPtr(c.fd, kvmGetSregs, &s)
	return s, c.wrap("get sregs", err)
}

// SetSregs writes the special registers.
func (c *VCPU) SetSregs(s Sregs) error {
	_, err := ioctlPtr(c.fd, kvmSetSregs, &s)
	return c.wrap("set sregs", err)
}

// FPU reads the legacy FPU/SSE state.
func (c *VCPU) FPU() (FPU, error) {
	var f FPU
	_, err := ioctlPtr(c.fd, kvmGetFPU, &f)
	return f, c.wrap("get fpu", err)
}

// SetFPU writes the legacy FPU/SSE state.
func (c *VCPU) SetFPU(f FPU) error {
	_, err := ioctlPtr(c.fd, kvmSetFPU, &f)
	return c.wrap("set fpu", err)
}

// XSave reads the extended state (XSAVE area; larger than 4096 bytes when
// KVM_CAP_XSAVE2 says so).
func (c *VCPU) XSave() (XSave, error) {
	buf := make([]byte, c.xsaveSize)
	req := kvmGetXSave
	if c.xsaveSize > 4096 {
		req = kvmGetXSave2
	}
	_, err := ioctlPtr(c.fd, req, &buf[0])
	return buf, c.wrap("get xsave", err)
}

// SetXSave writes the extended state.
func (c *VCPU) SetXSave(x XSave) error {
	if len(x) < 4096 {
		return fmt.Errorf("kvm: set xsave: %d bytes, want at least 4096", len(x))
	}
	buf := make([]byte, max(len(x), c.xsaveSize))
	copy(buf, x)
	_, err := ioctlPtr(c.fd, kvmSetXSave, &buf[0])
	return c.wrap("set xsave", err)
}

// XCRs reads the extended control registers.
func (c *VCPU) XCRs() (XCRs, error) {
	var x XCRs
	_, err := ioctlPtr(c.fd, kvmGetXCRs, &x)
	return x, c.wrap("get xcrs", err)
}

// SetXCRs writes the extended control registers.
func (c *VCPU) SetXCRs(x XCRs) error {
	_, err := ioctlPtr(c.fd, kvmSetXCRs, &x)
	return c.wrap("set xcrs", err)
}

// LAPIC reads the local APIC's register page.
func (c *VCPU) LAPIC() (LAPIC, error) {
	var l LAPIC
	_, err := ioctlPtr(c.fd, kvmGetLAPIC, &l)
	return l, c.wrap("get lapic", err)
}

// SetLAPIC writes the local APIC's register page.
func (c *VCPU) SetLAPIC(l LAPIC) error {
	_, err := ioctlPtr(c.fd, kvmSetLAPIC, &l)
	return c.wrap("set lapic", err)
}

// Events reads pending exceptions, interrupts, NMIs and SMIs.
func (c *VCPU) Events() (VCPUEvents, error) {
	var e VCPUEvents
	_, err := ioctlPtr(c.fd, kvmGetVCPUEvents, &e)
	return e, c.wrap("get vcpu events", err)
}

// SetEvents writes pending exceptions, interrupts, NMIs and SMIs.
func (c *VCPU) SetEvents(e VCPUEvents) error {
	_, err := ioctlPtr(c.fd, kvmSetVCPUEvents, &e)
	return c.wrap("set vcpu events", err)
}

// DebugRegs reads DR0-3, DR6, DR7.
func (c *VCPU) DebugRegs() (DebugRegs, error) {
	var d DebugRegs
	_, err := ioctlPtr(c.fd, kvmGetDebugRegs, &d)
	return d, c.wrap("get debugregs", err)
}

// SetDebugRegs writes DR0-3, DR6, DR7.
func (c *VCPU) SetDebugRegs(d DebugRegs) error {
	_, err := ioctlPtr(c.fd, kvmSetDebugRegs, &d)
	return c.wrap("set debugregs", err)
}

// MPState reads the vCPU's multiprocessing state.
func (c *VCPU) MPState() (uint32, error) {
	var s uint32
	_, err := ioctlPtr(c.fd, kvmGetMPState, &s)
	return s, c.wrap("get mp state", err)
}

// SetMPState writes the vCPU's multiprocessing state.
func (c *VCPU) SetMPState(s uint32) error {
	_, err := ioctlPtr(c.fd, kvmSetMPState, &s)
	return c.wrap("set mp state", err)
}

// SetCPUID2 sets the CPUID leaves the guest sees.
func (c *VCPU) SetCPUID2(entries []CPUIDEntry) error {
	raw := encodeCPUID(entries)
	_, err := ioctlPtr(c.fd, kvmSetCPUID2, &raw[0])
	return c.wrap("set cpuid2", err)
}

// CPUID2 reads back the CPUID leaves set on this vCPU.
func (c *VCPU) CPUID2() ([]CPUIDEntry, error) {
	return getCPUID(c.fd, kvmGetCPUID2)
}

// MSRs reads the MSRs with the given indices.
func (c *VCPU) MSRs(indices []uint32) ([]MSR, error) {
	raw := make([]byte, 8+16*len(indices))
	binary.LittleEndian.PutUint32(raw, uint32(len(indices)))
	for i, idx := range indices {
		binary.LittleEndian.PutUint32(raw[8+16*i:], idx)
	}
	if len(indices) == 0 {
		return nil, nil
	}
	n, err := ioctlPtr(c.fd, kvmGetMSRs, &raw[0])
	if err != nil {
		return nil, c.wrap("get msrs", err)
	}
	if int(n) != len(indices) {
		return nil, &MSRReadError{VCPU: c.id, Read: int(n), Want: len(indices), Index: indices[n]}
	}
	out := make([]MSR, len(indices))
	for i := range out {
		b := raw[8+16*i:]
		out[i] = MSR{Index: binary.LittleEndian.Uint32(b), Data: binary.LittleEndian.Uint64(b[8:])}
	}
	return out, nil
}

// MSRReadError is MSRs' error when KVM read only the first Read of Want
// MSRs: it stops at the first one it refuses, Index. A snapshot drops that
// index and asks again.
type MSRReadError struct {
	VCPU, Read, Want int
	Index            uint32
}

func (e *MSRReadError) Error() string {
	return fmt.Sprintf("kvm: vcpu %d: get msrs: read %d of %d (failed at index %#x)", e.VCPU, e.Read, e.Want, e.Index)
}

// SetMSRs writes MSRs; it fails unless every one was accepted.
func (c *VCPU) SetMSRs(msrs []MSR) error {
	if len(msrs) == 0 {
		return nil
	}
	raw := make([]byte, 8+16*len(msrs))
	binary.LittleEndian.PutUint32(raw, uint32(len(msrs)))
	for i, m := range msrs {
		b := raw[8+16*i:]
		binary.LittleEndian.PutUint32(b, m.Index)
		binary.LittleEndian.PutUint64(b[8:], m.Data)
	}
	n, err := ioctlPtr(c.fd, kvmSetMSRs, &raw[0])
	if err != nil {
		return c.wrap("set msrs", err)
	}
	if int(n) != len(msrs) {
		return fmt.Errorf("kvm: vcpu %d: set msrs: wrote %d of %d (refused %#x)", c.id, n, len(msrs), msrs[n].Index)
	}
	return nil
}

// TSCKHz returns the guest TSC frequency.
func (c *VCPU) TSCKHz() (uint32, error) {
	r, err := ioctl(c.fd, kvmGetTSCKHz, 0)
	return uint32(r), c.wrap("get tsc khz", err)
}

// SetTSCKHz sets the guest TSC frequency (restoring on a host whose TSC runs at
// another rate).
func (c *VCPU) SetTSCKHz(khz uint32) error {
	_, err := ioctl(c.fd, kvmSetTSCKHz, uintptr(khz))
	return c.wrap("set tsc khz", err)
}

// KVMClockCtrl tells the guest's kvmclock that the vCPU was paused, so its
// soft-lockup watchdog does not fire after a suspend.
func (c *VCPU) KVMClockCtrl() error {
	_, err := ioctl(c.fd, kvmKVMClockCtrl, 0)
	return c.wrap("kvmclock ctrl", err)
}

func (c *VCPU) wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("kvm: vcpu %d: %s: %w", c.id, what, err)
}
