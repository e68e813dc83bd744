// Package virtio holds what every virtio device shares: the guest-memory and
// interrupt interfaces devices are written against, and the feature bits and
// device IDs of the virtio 1.x specification.
//
// Nothing under virtio/ imports vmm/ or touches KVM: devices see guest memory only
// through Memory, raise interrupts only through Interrupt, and are therefore tested
// and fuzzed on fake memory (see virtio/virtiotest).
package virtio

// Memory is guest-physical memory as a device sees it. Implementations bounds-check
// every access: a range that is not wholly inside guest RAM is an error, never a
// panic and never an access to host memory outside the guest.
type Memory interface {
	// ReadAt copies len(p) bytes starting at guest-physical address gpa.
	ReadAt(p []byte, gpa int64) (int, error)
	// WriteAt copies p to guest-physical address gpa.
	WriteAt(p []byte, gpa int64) (int, error)
	// Slice returns host memory aliasing guest range [gpa, gpa+n), for zero-copy
	// I/O. It fails if the range is not wholly inside one RAM region.
	Slice(gpa, n uint64) ([]byte, error)
}

// Interrupt is one interrupt line. Trigger raises it once (edge semantics: one
// call, one interrupt delivered to the guest).
type Interrupt interface {
	Trigger() error
}

// Device IDs (virtio 1.2 §5): the DeviceID register of a virtio-mmio transport.
const (
	DeviceNet     uint32 = 1
	DeviceBlock   uint32 = 2
	DeviceConsole uint32 = 3
	DeviceEntropy uint32 = 4
	DeviceVsock   uint32 = 19
)

// Transport-independent feature bits (virtio 1.2 §6), as masks. Device-specific
// bits (0-23) are defined by each device package.
const (
	FeatureIndirectDesc uint64 = 1 << 28 // VIRTIO_F_INDIRECT_DESC
	FeatureEventIdx     uint64 = 1 << 29 // VIRTIO_F_EVENT_IDX
	FeatureVersion1     uint64 = 1 << 32 // VIRTIO_F_VERSION_1
	FeatureAccessPlat   uint64 = 1 << 33 // VIRTIO_F_ACCESS_PLATFORM
	FeatureRingPacked   uint64 = 1 << 34 // VIRTIO_F_RING_PACKED
	FeatureInOrder      uint64 = 1 << 35 // VIRTIO_F_IN_ORDER
	FeatureNotifData    uint64 = 1 << 38 // VIRTIO_F_NOTIFICATION_DATA
	FeatureRingReset    uint64 = 1 << 40 // VIRTIO_F_RING_RESET
)

// Device status bits (virtio 1.2 §2.1), written by the driver to Status.
const (
	StatusAcknowledge      uint32 = 1
	StatusDriver           uint32 = 2
	StatusDriverOK         uint32 = 4
	StatusFeaturesOK       uint32 = 8
	StatusDeviceNeedsReset uint32 = 64
	StatusFailed           uint32 = 128
)

// Interrupt causes: the bits of the transport's interrupt status register
// (InterruptStatus in virtio-mmio, the ISR in virtio-pci).
const (
	InterruptUsedBuffer   uint32 = 1 // a queue's used ring advanced
	InterruptConfigChange uint32 = 2 // device configuration space changed
)

// Transport is what an activated device holds to talk back to the transport it
// is plugged into. Both methods are safe to call from any goroutine, never
// block on the guest, and never take a lock that a register access holds while
// calling into the device (so a device worker may call them while the vCPU
// goroutine is inside Device.Reset waiting for that worker).
type Transport interface {
	// Signal raises the device's interrupt for the given causes
	// (InterruptUsedBuffer, InterruptConfigChange). A config change also moves
	// the configuration generation.
	Signal(cause uint32) error
	// Fail reports that the device hit an error it cannot recover from without
	// a reset (typically a corrupt ring written by the guest): the transport
	// sets DEVICE_NEEDS_RESET and tells the driver with a config-change
	// interrupt. The device stops using its queues until reset.
	Fail(err error)
}
