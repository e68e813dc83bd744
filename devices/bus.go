package devices

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
)

// Errors returned by Bus.Insert; callers test them with errors.Is.
var (
	// ErrOverlap means the new range shares at least one address with a range
	// already on the bus.
	ErrOverlap = errors.New("device range overlaps another device")
	// ErrRange means the range is empty or runs past the end of the address space.
	ErrRange = errors.New("invalid device range")
)

// Bus routes accesses by address to the devices inserted over address ranges.
// One Bus type serves both port I/O (16-bit addresses) and MMIO (64-bit
// addresses); the monitor keeps one of each.
//
// The routing table is copy-on-write: Insert builds a new sorted slice and
// publishes it with an atomic store, so Read and Write (called by every vCPU
// goroutine on every exit) take no lock and allocate nothing. Insert is expected
// to be rare (machine assembly, hotplug).
//
// The zero Bus is empty and ready to use. A Bus must not be copied after first use.
type Bus struct {
	mu    sync.Mutex              // serializes Insert; readers never take it
	table atomic.Pointer[[]entry] // sorted by base, non-overlapping; never mutated once published
}

// entry is one device range. last is inclusive so that a range ending at the
// top of the 64-bit address space is representable.
type entry struct {
	base, last uint64
	dev        Device
}

// Insert maps d over [base, base+size). It fails with ErrRange for an empty range
// or one that wraps past 2^64, and with ErrOverlap if any address of the range
// already belongs to a device.
func (b *Bus) Insert(base, size uint64, d Device) error {
	if d == nil {
		return fmt.Errorf("insert at %#x: nil device", base)
	}
	if size == 0 {
		return fmt.Errorf("%w: zero size at %#x", ErrRange, base)
	}
	last := base + (size - 1)
	if last < base {
		return fmt.Errorf("%w: %#x+%#x wraps around", ErrRange, base, size)
	}

	b.mu.Lock()
	defer b.mu.Unlock()

	var old []entry
	if p := b.table.Load(); p != nil {
		old = *p
	}
	i := search(old, base) // old[i-1].base <= base < old[i].base
	if i > 0 && old[i-1].last >= base {
		return fmt.Errorf("%w: [%#x, %#x] against [%#x, %#x]", ErrOverlap, base, last, old[i-1].base, old[i-1].last)
	}
	if i < len(old) && old[i].base <= last {
		return fmt.Errorf("%w: [%#x, %#x] against [%#x, %#x]", ErrOverlap, base, last, old[i].base, old[i].last)
	}
	next := slices.Insert(slices.Clone(old), i, entry{base: base, last: last, dev: d})
	b.table.Store(&next)
	return nil
}

// Read routes a read of len(data) bytes at addr. It returns false, with data
// filled with 0xff (what a read of an undriven bus returns), when no device
// covers the whole access or the length is not 1, 2, 4 or 8.
func (b *Bus) Read(addr uint64, data []byte) bool {
	e, ok := b.lookup(addr, len(data))
	if !ok {
		for i := range data {
			data[i] = 0xff
		}
		return false
	}
	e.dev.Read(addr-e.base, data)
	return true
}

// Write routes a write of data at addr. It returns false, leaving every device
// untouched, when no device covers the whole access or the length is not 1, 2, 4
// or 8.
func (b *Bus) Write(addr uint64, data []byte) bool {
	e, ok := b.lookup(addr, len(data))
	if !ok {
		return false
	}
	e.dev.Write(addr-e.base, data)
	return true
}

// lookup finds the device whose range holds all of [addr, addr+n). An access that
// starts inside a device and runs past its end is refused rather than truncated:
// passing it through would hand the device an offset range it does not own.
func (b *Bus) lookup(addr uint64, n int) (entry, bool) {
	switch n {
	case 1, 2, 4, 8:
	default:
		return entry{}, false
	}
	p := b.table.Load()
	if p == nil {
		return entry{}, false
	}
	t := *p
	i := search(t, addr) - 1
	if i < 0 {
		return entry{}, false
	}
	e := t[i]
	if addr > e.last || uint64(n-1) > e.last-addr {
		return entry{}, false
	}
	return e, true
}

// search returns the number of entries whose base is <= addr, i.e. the index at
// which a range starting at addr would be inserted. Written out rather than via
// sort.Search so the hot path has no closure.
func search(t []entry, addr uint64) int {
	lo, hi := 0, len(t)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if t[mid].base <= addr {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}
