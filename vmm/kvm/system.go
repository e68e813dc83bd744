package kvm

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// ErrNoKVM reports that /dev/kvm is absent or unusable. Tests that need KVM skip
// on it.
var ErrNoKVM = errors.New("kvm: /dev/kvm not available")

// APIVersion is the only KVM API version there has ever been.
const APIVersion = 12

// System is an open /dev/kvm.
type System struct {
	fd       int
	mmapSize int
}

// Open opens /dev/kvm and checks the API version and the capabilities boxd
// cannot run without.
func Open() (*System, error) {
	fd, err := unix.Open("/dev/kvm", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.ENXIO) {
			return nil, fmt.Errorf("%w: %v", ErrNoKVM, err)
		}
		return nil, fmt.Errorf("kvm: open /dev/kvm: %w", err)
	}
	s := &System{fd: fd}
	v, err := ioctl(fd, kvmGetAPIVersion, 0)
	if err != nil || v != APIVersion {
		s.Close()
		return nil, fmt.Errorf("kvm: API version %d (%v), want %d", v, err, APIVersion)
	}
	for _, c := range []struct {
		cap  int
		name string
	}{
		{CapUserMemory, "user memory"}, {CapIRQChip, "irqchip"}, {CapIRQFD, "irqfd"},
		{CapIOEventFD, "ioeventfd"}, {CapPIT2, "pit2"}, {CapImmediateExit, "immediate exit"},
	} {
		if s.CheckExtension(c.cap) <= 0 {
			s.Close()
			return nil, fmt.Errorf("kvm: host lacks required capability %q", c.name)
		}
	}
	sz, err := ioctl(fd, kvmGetVCPUMmapSize, 0)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("kvm: vcpu mmap size: %w", err)
	}
	s.mmapSize = int(sz)
	return s, nil
}

// Available reports whether /dev/kvm can be opened, with the reason when not.
func Available() (bool, string) {
	s, err := Open()
	if err != nil {
		return false, err.Error()
	}
	s.Close()
	return true, ""
}

// Close closes /dev/kvm. VMs created from it stay valid.
func (s *System) Close() error { return unix.Close(s.fd) }

// CheckExtension returns KVM_CHECK_EXTENSION's answer (0 = unsupported).
func (s *System) CheckExtension(cap int) int {
	r, err := ioctl(s.fd, kvmCheckExtension, uintptr(cap))
	if err != nil {
		return 0
	}
	return int(r)
}

// SupportedCPUID returns KVM_GET_SUPPORTED_CPUID: every leaf KVM can present.
func (s *System) SupportedCPUID() ([]CPUIDEntry, error) {
	return getCPUID(s.fd, kvmGetSupportedCPUID)
}

const maxCPUIDEntries = 256

func getCPUID(fd int, req uintptr) ([]CPUIDEntry, error) {
	// struct kvm_cpuid2: nent, padding, then nent 40-byte entries.
	raw := make([]byte, 8+maxCPUIDEntries*40)
	binary.LittleEndian.PutUint32(raw, maxCPUIDEntries)
	if _, err := ioctlPtr(fd, req, &raw[0]); err != nil {
		return nil, fmt.Errorf("kvm: get cpuid: %w", err)
	}
	n := int(binary.LittleEndian.Uint32(raw))
	if n > maxCPUIDEntries {
		return nil, fmt.Errorf("kvm: get cpuid: kernel returned %d entries", n)
	}
	buf := make([]CPUIDEntry, n)
	for i := range buf {
		buf[i] = decodeCPUIDEntry(raw[8+i*40:])
	}
	return buf, nil
}

func decodeCPUIDEntry(b []byte) CPUIDEntry {
	le := binary.LittleEndian
	return CPUIDEntry{
		Function: le.Uint32(b[0:]), Index: le.Uint32(b[4:]), Flags: le.Uint32(b[8:]),
		EAX: le.Uint32(b[12:]), EBX: le.Uint32(b[16:]), ECX: le.Uint32(b[20:]), EDX: le.Uint32(b[24:]),
	}
}

func encodeCPUID(entries []CPUIDEntry) []byte {
	le := binary.LittleEndian
	raw := make([]byte, 8+len(entries)*40)
	le.PutUint32(raw, uint32(len(entries)))
	for i, e := range entries {
		b := raw[8+i*40:]
		le.PutUint32(b[0:], e.Function)
		le.PutUint32(b[4:], e.Index)
		le.PutUint32(b[8:], e.Flags)
		le.PutUint32(b[12:], e.EAX)
		le.PutUint32(b[16:], e.EBX)
		le.PutUint32(b[20:], e.ECX)
		le.PutUint32(b[24:], e.EDX)
	}
	return raw
}

// MSRIndexList returns the MSRs KVM saves and restores for a vCPU
// (KVM_GET_MSR_INDEX_LIST); a snapshot saves exactly these.
func (s *System) MSRIndexList() ([]uint32, error) {
	const max = 1024
	raw := make([]byte, 4+4*max)
	binary.LittleEndian.PutUint32(raw, max)
	if _, err := ioctlPtr(s.fd, kvmGetMSRIndexList, &raw[0]); err != nil {
		return nil, fmt.Errorf("kvm: msr index list: %w", err)
	}
	n := int(binary.LittleEndian.Uint32(raw))
	if n > max {
		return nil, fmt.Errorf("kvm: msr index list: kernel returned %d entries", n)
	}
	out := make([]uint32, n)
	for i := range out {
		out[i] = binary.LittleEndian.Uint32(raw[4+4*i:])
	}
	return out, nil
}

// CreateVM creates a VM.
func (s *System) CreateVM() (*VM, error) {
	r, err := ioctl(s.fd, kvmCreateVM, 0)
	if err != nil {
		return nil, fmt.Errorf("kvm: create vm: %w", err)
	}
	return &VM{fd: int(r), sys: s, xsaveSize: s.xsaveSize()}, nil
}

func (s *System) xsaveSize() int {
	if n := s.CheckExtension(CapXSave2); n > 4096 {
		return n
	}
	return 4096
}
