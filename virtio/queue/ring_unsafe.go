package queue

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"unsafe"

	"github.com/boxd-dev/boxd/virtio"
)

// The guest updates avail.idx and used_event while the device reads them, and
// reads used.idx and avail_event while the device writes them. A byte-wise copy
// (which is what copy() does for 2 bytes) could observe or produce a torn
// value, e.g. 0x01ff while an index moves from 0x00ff to 0x0100, and the driver
// would see its used index jump backwards. The index fields are therefore
// accessed with sync/atomic operations on the aligned 32-bit word of host
// memory that contains them: a load is one atomic load, a store is a
// compare-and-swap that leaves the other half of the word (which may belong
// to the guest) as it found it. Go's atomics are sequentially consistent, so
// they also provide the barriers the spec asks for (descriptors read after the
// available index; used element visible before the used index; used index
// visible before used_event is read; avail_event visible before the available
// index is re-read), and the race detector understands them.

// hostLittleEndian is true when byte 0 of a native uint32 is its low byte.
var hostLittleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// indexWord locates the 16-bit field at gpa inside its aligned 32-bit host
// word. ok is false when that word is not wholly RAM or not 4-aligned on the
// host (a field in the last two bytes of a region); field is then the 2-byte
// host slice to access directly.
func indexWord(mem virtio.Memory, gpa uint64) (w *uint32, shift uint, field []byte, err error) {
	if gpa%2 != 0 {
		return nil, 0, nil, fmt.Errorf("ring index at %#x not 2-aligned", gpa)
	}
	base := gpa &^ 3
	if b, err := mem.Slice(base, 4); err == nil && len(b) == 4 && uintptr(unsafe.Pointer(&b[0]))%4 == 0 {
		off := uint(gpa - base)
		if hostLittleEndian {
			shift = off * 8
		} else {
			shift = (2 - off) * 8
		}
		return (*uint32)(unsafe.Pointer(&b[0])), shift, nil, nil
	}
	b, err := mem.Slice(gpa, 2)
	if err != nil {
		return nil, 0, nil, err
	}
	return nil, 0, b, nil
}

// LoadIndex reads the little-endian 16-bit ring index at gpa atomically with
// respect to StoreIndex. Exported for drivers (the mock driver in
// virtiotest) that share indices with a device.
func LoadIndex(mem virtio.Memory, gpa uint64) (uint16, error) {
	w, shift, field, err := indexWord(mem, gpa)
	if err != nil {
		return 0, err
	}
	if w == nil {
		return binary.LittleEndian.Uint16(field), nil
	}
	v := uint16(atomic.LoadUint32(w) >> shift)
	if !hostLittleEndian {
		v = v>>8 | v<<8
	}
	return v, nil
}

// StoreIndex writes the little-endian 16-bit ring index at gpa atomically
// with respect to LoadIndex, preserving the neighbouring bytes.
func StoreIndex(mem virtio.Memory, gpa uint64, v uint16) error {
	w, shift, field, err := indexWord(mem, gpa)
	if err != nil {
		return err
	}
	if w == nil {
		binary.LittleEndian.PutUint16(field, v)
		return nil
	}
	if !hostLittleEndian {
		v = v>>8 | v<<8
	}
	mask := uint32(0xffff) << shift
	for {
		old := atomic.LoadUint32(w)
		if atomic.CompareAndSwapUint32(w, old, old&^mask|uint32(v)<<shift) {
			return nil
		}
	}
}
