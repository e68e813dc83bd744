package queue

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/boxd-dev/boxd/virtio"
)

// Descriptor flag bits (virtio 1.2 §2.7.5).
const (
	descFNext     = 1 // VIRTQ_DESC_F_NEXT
	descFWrite    = 2 // VIRTQ_DESC_F_WRITE
	descFIndirect = 4 // VIRTQ_DESC_F_INDIRECT

	descSize = 16
)

// ErrTooLarge is returned by Chain.ReadAll when the readable part exceeds
// the caller's bound.
var ErrTooLarge = errors.New("buffer too large")

// ChainError is a malformed descriptor chain whose head index is valid
// (< queue size), so the device can return it with Push(Head, 0).
type ChainError struct {
	Head uint16
	Err  error // describes the defect; wraps ErrInvalidChain
}

func (e *ChainError) Error() string { return fmt.Sprintf("chain %d: %v", e.Head, e.Err) }
func (e *ChainError) Unwrap() error { return e.Err }

// Buffer is one guest-physical range of a chain. Pop has checked that it lies
// inside guest RAM (one region, so Memory.Slice on it succeeds).
type Buffer struct {
	Addr uint64
	Len  uint32
}

// Buffers is an ordered list of buffers read or written as one byte stream.
type Buffers []Buffer

// Chain is a validated descriptor chain: the device-readable buffers (in
// order) followed by the device-writable ones. Zero-length descriptors are
// dropped. Readable.Len()+Writable.Len() <= math.MaxUint32.
type Chain struct {
	Head     uint16
	Readable Buffers
	Writable Buffers
}

// walk follows the chain starting at head and validates it:
//   - every index is inside its table, and the walk visits at most as many
//     descriptors as the table has entries (so a loop is an error, not a hang);
//   - an indirect descriptor has neither NEXT nor another indirect inside its
//     table, its length is a non-zero multiple of 16 with at most Size entries
//     (a chain is never longer than the queue size), and it lies in RAM; it may
//     end a chain of normal descriptors (spec §2.7.5.3.2);
//   - buffers lie inside guest RAM without wrapping;
//   - no readable buffer follows a writable one;
//   - the total length is below 2^32 bytes.
func (q *Queue) walk(mem virtio.Memory, head uint16) (*Chain, error) {
	c := &Chain{Head: head}
	table, entries := q.desc, uint32(q.size)
	idx, budget := uint32(head), uint32(q.size)
	indirect, writable := false, false
	var total uint64
	for {
		if budget == 0 {
			return nil, fmt.Errorf("%w: longer than its table (%d entries): loop", ErrInvalidChain, entries)
		}
		budget--
		b := q.scratch[:descSize]
		if _, err := mem.ReadAt(b, int64(table+uint64(idx)*descSize)); err != nil {
			return nil, fmt.Errorf("%w: descriptor %d: %w", ErrInvalidChain, idx, err)
		}
		addr := binary.LittleEndian.Uint64(b[0:])
		length := binary.LittleEndian.Uint32(b[8:])
		flags := binary.LittleEndian.Uint16(b[12:])
		next := binary.LittleEndian.Uint16(b[14:])

		if flags&descFIndirect != 0 {
			switch {
			case indirect:
				return nil, fmt.Errorf("%w: indirect descriptor inside an indirect table", ErrInvalidChain)
			case flags&descFNext != 0:
				return nil, fmt.Errorf("%w: indirect descriptor with NEXT", ErrInvalidChain)
			case length == 0 || length%descSize != 0:
				return nil, fmt.Errorf("%w: indirect table length %d", ErrInvalidChain, length)
			case length/descSize > uint32(q.size):
				return nil, fmt.Errorf("%w: indirect table of %d entries, queue size %d", ErrInvalidChain, length/descSize, q.size)
			}
			if err := inRAM(mem, addr, length); err != nil {
				return nil, fmt.Errorf("%w: indirect table: %w", ErrInvalidChain, err)
			}
			indirect = true
			table, entries = addr, length/descSize
			idx, budget = 0, entries
			continue
		}

		if length > 0 {
			if err := inRAM(mem, addr, length); err != nil {
				return nil, fmt.Errorf("%w: descriptor %d: %w", ErrInvalidChain, idx, err)
			}
		}
		total += uint64(length)
		if total > math.MaxUint32 {
			return nil, fmt.Errorf("%w: chain longer than 4 GiB", ErrInvalidChain)
		}
		if flags&descFWrite != 0 {
			writable = true
			if length > 0 {
				c.Writable = append(c.Writable, Buffer{addr, length})
			}
		} else {
			if writable {
				return nil, fmt.Errorf("%w: readable descriptor after a writable one", ErrInvalidChain)
			}
			if length > 0 {
				c.Readable = append(c.Readable, Buffer{addr, length})
			}
		}
		if flags&descFNext == 0 {
			return c, nil
		}
		idx = uint32(next)
		if idx >= entries {
			return nil, fmt.Errorf("%w: next %d >= %d", ErrInvalidChain, idx, entries)
		}
	}
}

func inRAM(mem virtio.Memory, addr uint64, n uint32) error {
	if addr > math.MaxUint64-uint64(n) {
		return fmt.Errorf("range [%#x, +%#x) wraps", addr, n)
	}
	_, err := mem.Slice(addr, uint64(n))
	return err
}

// Len returns the total length of the buffers.
func (bs Buffers) Len() uint64 {
	var n uint64
	for _, b := range bs {
		n += uint64(b.Len)
	}
	return n
}

// Range returns the buffers covering bytes [off, off+n) of the stream,
// trimmed at both ends. It fails if the range is past the end.
func (bs Buffers) Range(off, n uint64) (Buffers, error) {
	return bs.AppendRange(nil, off, n)
}

// AppendRange is Range appending to dst, so a caller can reuse one slice
// across requests.
func (bs Buffers) AppendRange(dst Buffers, off, n uint64) (Buffers, error) {
	err := bs.each(off, n, func(b Buffer, _ uint64) error {
		dst = append(dst, b)
		return nil
	})
	return dst, err
}

// each calls fn for every piece of stream bytes [off, off+n), with the
// piece's offset from off. It fails before calling fn if the range is past
// the end.
func (bs Buffers) each(off, n uint64, fn func(b Buffer, done uint64) error) error {
	if total := bs.Len(); off > total || n > total-off {
		return fmt.Errorf("range [%d, +%d) outside %d bytes", off, n, total)
	}
	var done uint64
	for _, b := range bs {
		if n == 0 {
			break
		}
		if off >= uint64(b.Len) {
			off -= uint64(b.Len)
			continue
		}
		take := min(uint64(b.Len)-off, n)
		if err := fn(Buffer{b.Addr + off, uint32(take)}, done); err != nil {
			return err
		}
		done += take
		n -= take
		off = 0
	}
	return nil
}

// ReadAt copies stream bytes [off, off+len(p)) from guest memory into p.
func (bs Buffers) ReadAt(mem virtio.Memory, p []byte, off uint64) (int, error) {
	n := 0
	err := bs.each(off, uint64(len(p)), func(b Buffer, done uint64) error {
		k, err := mem.ReadAt(p[done:done+uint64(b.Len)], int64(b.Addr))
		n += k
		return err
	})
	return n, err
}

// WriteAt copies p into stream bytes [off, off+len(p)) in guest memory.
func (bs Buffers) WriteAt(mem virtio.Memory, p []byte, off uint64) (int, error) {
	n := 0
	err := bs.each(off, uint64(len(p)), func(b Buffer, done uint64) error {
		k, err := mem.WriteAt(p[done:done+uint64(b.Len)], int64(b.Addr))
		n += k
		return err
	})
	return n, err
}

// ReadAll returns a copy of the whole readable part, or ErrTooLarge if it is
// longer than max bytes (so a guest cannot make the device allocate 4 GiB).
func (c *Chain) ReadAll(mem virtio.Memory, max int) ([]byte, error) {
	n := c.Readable.Len()
	if max < 0 || n > uint64(max) {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, n, max)
	}
	p := make([]byte, n)
	if _, err := c.Readable.ReadAt(mem, p, 0); err != nil {
		return nil, err
	}
	return p, nil
}
