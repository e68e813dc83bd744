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
