package boot

import (
	"encoding/binary"
	"fmt"
	"testing"
)

// fakeMem is sparse guest RAM for tests: pages are allocated on first write,
// so an 8 GiB guest costs only what is written. Its bounds check is written
// independently of RAMRegions so that the loaders' own checks are tested
// against a second opinion.
type fakeMem struct {
	size  uint64
	pages map[uint64]*[4096]byte
}

func newFakeMem(size uint64) *fakeMem {
	return &fakeMem{size: size, pages: map[uint64]*[4096]byte{}}
}

func (m *fakeMem) Size() uint64 { return m.size }

func (m *fakeMem) check(n int, gpa int64) error {
	if gpa < 0 {
		return fmt.Errorf("negative address %d", gpa)
	}
	a, end := uint64(gpa), uint64(gpa)+uint64(n)
	low := min(m.size, 0xc000_0000)
	if end <= low {
		return nil
	}
	if m.size > 0xc000_0000 && a >= 1<<32 && end <= 1<<32+m.size-0xc000_0000 {
		return nil
	}
	return fmt.Errorf("[%#x, %#x) outside guest RAM of %#x bytes", a, end, m.size)
}

func (m *fakeMem) ReadAt(p []byte, gpa int64) (int, error) {
	if err := m.check(len(p), gpa); err != nil {
		return 0, err
	}
	for done := 0; done < len(p); {
		a := uint64(gpa) + uint64(done)
		n := min(len(p)-done, int(4096-a&0xfff))
		if pg := m.pages[a>>12]; pg != nil {
			copy(p[done:done+n], pg[a&0xfff:])
		} else {
			clear(p[done : done+n])
		}
		done += n
	}
	return len(p), nil
}

func (m *fakeMem) WriteAt(p []byte, gpa int64) (int, error) {
	if err := m.check(len(p), gpa); err != nil {
		return 0, err
	}
	for done := 0; done < len(p); {
		a := uint64(gpa) + uint64(done)
		n := min(len(p)-done, int(4096-a&0xfff))
		src := p[done : done+n]
		pg := m.pages[a>>12]
		if pg == nil && !allZero(src) {
			pg = new([4096]byte)
			m.pages[a>>12] = pg
		}
		if pg != nil {
			copy(pg[a&0xfff:], src)
		}
		done += n
	}
	return len(p), nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func (m *fakeMem) bytes(t *testing.T, gpa uint64, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := m.ReadAt(b, int64(gpa)); err != nil {
		t.Fatalf("read guest memory: %v", err)
	}
	return b
}

func (m *fakeMem) u8(t *testing.T, gpa uint64) uint64 { return uint64(m.bytes(t, gpa, 1)[0]) }
func (m *fakeMem) u16(t *testing.T, gpa uint64) uint64 {
	return uint64(binary.LittleEndian.Uint16(m.bytes(t, gpa, 2)))
}
func (m *fakeMem) u32(t *testing.T, gpa uint64) uint64 {
	return uint64(binary.LittleEndian.Uint32(m.bytes(t, gpa, 4)))
}
func (m *fakeMem) u64(t *testing.T, gpa uint64) uint64 {
	return binary.LittleEndian.Uint64(m.bytes(t, gpa, 8))
}

// dirty fills the pages of [start, start+n) with 0xee, so tests see whether
// the loaders zero what they must instead of relying on fresh memory.
func (m *fakeMem) dirty(start, n uint64) {
	for p := start >> 12; p < (start+n+0xfff)>>12; p++ {
		pg := new([4096]byte)
		for i := range pg {
			pg[i] = 0xee
		}
		m.pages[p] = pg
	}
}
