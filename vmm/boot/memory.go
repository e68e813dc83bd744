package boot

import (
	"errors"
	"fmt"
	"io"
)

// Memory is guest-physical memory as the loaders see it. ReadAt and WriteAt
// take guest-physical addresses and fail (never panic) on a range that is not
// wholly inside guest RAM. Size is the total RAM in bytes, laid out as
// RAMRegions(Size()).
type Memory interface {
	ReadAt(p []byte, gpa int64) (int, error)
	WriteAt(p []byte, gpa int64) (int, error)
	Size() uint64
}

// inRAM reports whether [gpa, gpa+n) lies wholly inside one RAM region of a
// guest with size bytes of RAM. It never overflows.
func inRAM(size, gpa, n uint64) bool {
	for _, r := range RAMRegions(size) {
		if gpa >= r.Start && gpa-r.Start <= r.Size && n <= r.Size-(gpa-r.Start) {
			return true
		}
	}
	return false
}

// lowRAMEnd is the end of the RAM region that starts at 0 (below the gap).
func lowRAMEnd(size uint64) uint64 {
	return RAMRegions(size)[0].End()
}

// writeAt writes b at gpa, checking the range against the RAM layout first so
// that the error names the range whatever the Memory implementation says.
func writeAt(mem Memory, gpa uint64, b []byte) error {
	if !inRAM(mem.Size(), gpa, uint64(len(b))) {
		return fmt.Errorf("%w: [%#x, %#x+%#x) is not in guest RAM", ErrNoSpace, gpa, gpa, len(b))
	}
	n, err := mem.WriteAt(b, int64(gpa))
	if err == nil && n != len(b) {
		err = io.ErrShortWrite
	}
	if err != nil {
		return fmt.Errorf("write guest memory at %#x: %w", gpa, err)
	}
	return nil
}

// chunk bounds the host buffer used to stream images into guest memory.
const chunk = 1 << 20

// Slicer is a Memory that can hand out host memory aliasing a guest range
// (memory.RAM does). copyIn then reads images straight into guest memory:
// no bounce buffer, and one pass over the bytes instead of two, which in the
// nested harness is a measurable part of a boot's setup.
type Slicer interface {
	Slice(gpa, n uint64) ([]byte, error)
}

// copyIn copies n bytes at offset off of r to guest address gpa: straight
// into guest memory when mem is a Slicer, otherwise in bounded chunks so that
// a large kernel or initrd never needs a host buffer its size.
func copyIn(mem Memory, gpa uint64, r io.ReaderAt, off, n int64) error {
	if !inRAM(mem.Size(), gpa, uint64(n)) {
		return fmt.Errorf("%w: [%#x, %#x+%#x) is not in guest RAM", ErrNoSpace, gpa, gpa, n)
	}
	if sl, ok := mem.(Slicer); ok {
		if dst, err := sl.Slice(gpa, uint64(n)); err == nil && int64(len(dst)) == n {
			return readFull(r, dst, off)
		}
	}
	buf := make([]byte, min(n, chunk))
	for done := int64(0); done < n; {
		b := buf[:min(n-done, chunk)]
		if err := readFull(r, b, off+done); err != nil {
			return err
		}
		if err := writeAt(mem, gpa+uint64(done), b); err != nil {
			return err
		}
		done += int64(len(b))
	}
	return nil
}

// zeroFill zeroes n bytes of guest memory at gpa (an ELF segment's bss: guest
// memory may be a reused file, so it is not assumed to be zero).
func zeroFill(mem Memory, gpa, n uint64) error {
	if !inRAM(mem.Size(), gpa, n) {
		return fmt.Errorf("%w: [%#x, %#x+%#x) is not in guest RAM", ErrNoSpace, gpa, gpa, n)
	}
	zero := make([]byte, min(n, chunk))
	for done := uint64(0); done < n; {
		b := zero[:min(n-done, chunk)]
		if err := writeAt(mem, gpa+done, b); err != nil {
			return err
		}
		done += uint64(len(b))
	}
	return nil
}

// readFull reads exactly len(b) bytes at off. A ReaderAt may return io.EOF
// together with a full read at the end of the file; that is success.
func readFull(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("read image at offset %#x: %w", off, err)
}
