package virtiotest

import (
	"errors"
	"fmt"
	"math"
	"sync/atomic"
)

// ErrFault is returned for accesses outside the fake RAM.
var ErrFault = errors.New("guest address not in RAM")

// Memory is fake guest RAM: Size bytes starting at guest-physical Base, minus
// any holes. It implements virtio.Memory. Holes split RAM into regions, so a
// Slice across a hole fails just as it would across the real MMIO gap.
type Memory struct {
	base  uint64
	data  []byte
	holes [][2]uint64 // [start, end) guest-physical
}

// NewMemory returns size bytes of zeroed fake RAM at guest-physical base.
func NewMemory(base, size uint64) *Memory {
	return &Memory{base: base, data: make([]byte, size)}
}

// Base returns the first guest-physical address of the fake RAM.
func (m *Memory) Base() uint64 { return m.base }

// Size returns the length of the fake RAM, holes included.
func (m *Memory) Size() uint64 { return uint64(len(m.data)) }

// Bytes returns the backing slice (index 0 is guest-physical Base), for tests
// that fill or inspect memory wholesale.
func (m *Memory) Bytes() []byte { return m.data }

// AddHole makes [gpa, gpa+n) inaccessible.
func (m *Memory) AddHole(gpa, n uint64) { m.holes = append(m.holes, [2]uint64{gpa, gpa + n}) }

// check returns the offset of [gpa, gpa+n) in data, or an error if any byte
// of it is not RAM.
func (m *Memory) check(gpa, n uint64) (uint64, error) {
	if gpa < m.base || n > math.MaxUint64-gpa {
		return 0, fmt.Errorf("%w: [%#x, +%#x)", ErrFault, gpa, n)
	}
	off := gpa - m.base
	if off > uint64(len(m.data)) || n > uint64(len(m.data))-off {
		return 0, fmt.Errorf("%w: [%#x, +%#x)", ErrFault, gpa, n)
	}
	for _, h := range m.holes {
		if gpa < h[1] && gpa+n > h[0] || n == 0 && gpa >= h[0] && gpa < h[1] {
			return 0, fmt.Errorf("%w: [%#x, +%#x) hits hole [%#x, %#x)", ErrFault, gpa, n, h[0], h[1])
		}
	}
	return off, nil
}

// ReadAt implements virtio.Memory.
func (m *Memory) ReadAt(p []byte, gpa int64) (int, error) {
	if gpa < 0 {
		return 0, fmt.Errorf("%w: negative address", ErrFault)
	}
	off, err := m.check(uint64(gpa), uint64(len(p)))
	if err != nil {
		return 0, err
	}
	return copy(p, m.data[off:]), nil
}

// WriteAt implements virtio.Memory.
func (m *Memory) WriteAt(p []byte, gpa int64) (int, error) {
	if gpa < 0 {
		return 0, fmt.Errorf("%w: negative address", ErrFault)
	}
	off, err := m.check(uint64(gpa), uint64(len(p)))
	if err != nil {
		return 0, err
	}
	return copy(m.data[off:], p), nil
}

// Slice implements virtio.Memory.
func (m *Memory) Slice(gpa, n uint64) ([]byte, error) {
	off, err := m.check(gpa, n)
	if err != nil {
		return nil, err
	}
	return m.data[off : off+n : off+n], nil
}

// Interrupt is a fake interrupt line: it counts triggers and wakes a waiter.
// It implements virtio.Interrupt.
type Interrupt struct {
	n   atomic.Uint64
	c   chan struct{}
	err atomic.Pointer[error]
}

// NewInterrupt returns an interrupt line with no triggers.
func NewInterrupt() *Interrupt { return &Interrupt{c: make(chan struct{}, 1)} }

// Trigger implements virtio.Interrupt.
func (i *Interrupt) Trigger() error {
	if e := i.err.Load(); e != nil {
		return *e
	}
	i.n.Add(1)
	select {
	case i.c <- struct{}{}:
	default:
	}
	return nil
}

// Count returns how many times Trigger succeeded.
func (i *Interrupt) Count() uint64 { return i.n.Load() }

// C receives (at least) once after each Trigger; waiters re-check their
// condition after each receive.
func (i *Interrupt) C() <-chan struct{} { return i.c }

// FailWith makes Trigger return err (nil restores success).
func (i *Interrupt) FailWith(err error) {
	if err == nil {
		i.err.Store(nil)
		return
	}
	i.err.Store(&err)
}
