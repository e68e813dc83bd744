// Package devices holds the monitor's emulated platform devices (serial console,
// i8042, boot timer) and the bus that routes port-I/O and MMIO exits to them.
//
// Devices never touch KVM: they see an access as (offset, bytes) relative to their
// own base address and raise interrupts through a small interface, so they are
// tested without /dev/kvm.
package devices

// Device is anything mapped on a bus. Offsets are relative to the device's base.
// Read fills data (1, 2, 4 or 8 bytes); Write consumes it. Neither may block: a
// guest access waits on them.
type Device interface {
	Read(offset uint64, data []byte)
	Write(offset uint64, data []byte)
}

// Interrupt is one interrupt line (an irqfd in the monitor, a counter in tests).
type Interrupt interface {
	Trigger() error
}
