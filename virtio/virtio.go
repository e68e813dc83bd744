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
