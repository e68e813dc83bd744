package snapshot

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/boxd-dev/boxd/vmm/kvm"
)

// reader reads little-endian values from a body, remembering the first error so
// decodeBody can read a whole record and check once.
type reader struct {
	b   []byte
	off int
	err error
}

var errShort = errors.New("truncated body")

func (r *reader) bytes(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b)-r.off {
		r.err = fmt.Errorf("%w at offset %d (want %d more bytes)", errShort, r.off, n)
		return nil
	}
	p := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return p
}

// fixed decodes a fixed-size value (a kvm struct or array) into v.
func (r *reader) fixed(v any) {
	p := r.bytes(binary.Size(v))
	if p == nil {
		return
	}
	if _, err := binary.Decode(p, binary.LittleEndian, v); err != nil {
		r.err = err
	}
}

func (r *reader) u16() uint16 {
	if p := r.bytes(2); p != nil {
		return binary.LittleEndian.Uint16(p)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if p := r.bytes(4); p != nil {
		return binary.LittleEndian.Uint32(p)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if p := r.bytes(8); p != nil {
		return binary.LittleEndian.Uint64(p)
	}
	return 0
}

// count reads a u32 element count and checks it against max before anything
// is allocated for it.
func (r *reader) count(what string, max int) int {
	n := r.u32()
	if r.err == nil && n > uint32(max) {
		r.err = fmt.Errorf("%s count %d exceeds %d", what, n, max)
	}
	if r.err != nil {
		return 0
	}
	return int(n)
}

// decodeBody parses an uncompressed body of the given format version.
func decodeBody(b []byte, version uint32) (*State, error) {
	r := &reader{b: b}
	s := &State{MemSize: r.u64()}
	if version >= 2 {
		s.SavedAt = int64(r.u64())
	}
	nv := r.count("vcpu", MaxVCPUs)
	for range nv {
		var c VCPU
		c.ID = r.u32()
		if n := r.count("cpuid entry", MaxCPUID); n > 0 {
			c.CPUID = make([]kvm.CPUIDEntry, n)
			r.fixed(c.CPUID)
		}
		r.fixed(&c.Regs)
		r.fixed(&c.Sregs)
		r.fixed(&c.FPU)
		if n := r.count("xsave byte", MaxXSave); n > 0 {
			c.XSave = append(kvm.XSave(nil), r.bytes(n)...)
		}
		r.fixed(&c.XCRs)
		if n := r.count("msr", MaxMSRs); n > 0 {
			c.MSRs = make([]kvm.MSR, n)
			r.fixed(c.MSRs)
		}
		r.fixed(&c.LAPIC)
		r.fixed(&c.Events)
		r.fixed(&c.DebugRegs)
		c.MPState = r.u32()
		c.TSCKHz = r.u32()
		if r.err != nil {
			return nil, fmt.Errorf("vcpu %d: %w", len(s.VCPUs), r.err)
		}
		s.VCPUs = append(s.VCPUs, c)
	}
	r.fixed(&s.VM.PICMaster)
	r.fixed(&s.VM.PICSlave)
	r.fixed(&s.VM.IOAPIC)
	r.fixed(&s.VM.PIT)
	r.fixed(&s.VM.Clock)
	nd := r.count("device", MaxDevices)
	for range nd {
		var d Device
		nl := int(r.u16())
		d.Name = string(r.bytes(nl))
		if n := r.count("device data byte", MaxDeviceData); n > 0 {
			d.Data = append([]byte(nil), r.bytes(n)...)
		}
		if r.err != nil {
			return nil, fmt.Errorf("device %d: %w", len(s.Devices), r.err)
		}
		s.Devices = append(s.Devices, d)
	}
	if r.err != nil {
		return nil, r.err
	}
	if r.off != len(b) {
		return nil, fmt.Errorf("%d trailing bytes after the last record", len(b)-r.off)
	}
	if err := s.validate(); err != nil {
		return nil, err
	}
	return s, nil
}
