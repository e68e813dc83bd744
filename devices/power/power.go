// Package power is the power register: one 32-bit MMIO register the guest init
// writes to power the machine off or reboot it.
//
// A machine without ACPI gives Linux no way to power off: reboot(POWER_OFF)
// halts the CPUs and the VM would hang. boxd's init therefore writes Poweroff
// (or Reboot) here just before calling reboot(2), and the monitor ends the VM.
// From a shell: busybox devmem 0xc0001000 32 1.
package power

import (
	"encoding/binary"
	"sync/atomic"
)

// Values the guest writes at offset 0.
const (
	Poweroff = 1
	Reboot   = 2
)

// Register is the device. It implements devices.Device.
type Register struct {
	on      func(action uint32)
	ignored atomic.Uint64
}

// New returns a register that calls on(Poweroff) or on(Reboot) when the guest
// asks. on must not block.
func New(on func(action uint32)) *Register { return &Register{on: on} }

// Read returns 0: the register is write-only.
func (r *Register) Read(_ uint64, data []byte) { clear(data) }

// Write handles a guest store; anything but a 4-byte write of a known value at
// offset 0 is counted and ignored.
func (r *Register) Write(offset uint64, data []byte) {
	if offset != 0 || len(data) != 4 {
		r.ignored.Add(1)
		return
	}
	switch v := binary.LittleEndian.Uint32(data); v {
	case Poweroff, Reboot:
		r.on(v)
	default:
		r.ignored.Add(1)
	}
}

// Ignored counts malformed writes.
func (r *Register) Ignored() uint64 { return r.ignored.Load() }
