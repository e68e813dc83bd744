package memory

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Run is a range of RAM offsets, in whole pages.
type Run struct{ Offset, Len uint64 }

// Pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst).
const (
	pmPresent  = 1 << 63
	pmSwapped  = 1 << 62
	pmFileOrSh = 1 << 61 // file page or shared anonymous
)

// Dirty returns the runs of pages this process holds private copies of: for a
// RAM mapped MAP_PRIVATE, the pages written (by the guest through KVM, or by
// the monitor) since the mapping was made. A shared RAM has none. Runs are
// sorted and merged. The RAM must not be written during the call.
//
// The kernel's PAGEMAP_SCAN (Linux 6.7+) returns the runs directly, walking
// only populated page tables; on older kernels /proc/self/pagemap is read, 8
// bytes per page of the whole range (2 MiB per GiB of guest), which costs in
// proportion to the guest's size.
func (m *RAM) Dirty() ([]Run, error) {
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return nil, fmt.Errorf("memory: dirty pages: %w", err)
	}
	defer f.Close()
	runs, err := m.dirtyScan(f)
	if errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EINVAL) {
		runs, err = m.dirtyPagemap(f)
	}
	if err != nil {
		return nil, fmt.Errorf("memory: dirty pages: %w", err)
	}
	return runs, nil
}

// appendRun adds [off, off+n) to sorted runs, merging with the last.
func appendRun(runs []Run, off, n uint64) []Run {
	if k := len(runs) - 1; k >= 0 && runs[k].Offset+runs[k].Len == off {
		runs[k].Len += n
		return runs
	}
	return append(runs, Run{off, n})
}

func (m *RAM) dirtyScan(f *os.File) ([]Run, error) {
	base := m.hostAddr()
	var runs []Run
	vec := make([]pageRegion, 512)
	err := scanPrivate(int(f.Fd()), base, base+uintptr(m.size), vec, func(s, e uint64) {
		runs = appendRun(runs, s-uint64(base), e-s)
	})
	return runs, err
}

// dirtyPagemap is the fallback: pagemap entries read a chunk at a time.
func (m *RAM) dirtyPagemap(f *os.File) ([]Run, error) {
	const chunk = 64 << 10 // pages per read: 512 KiB of entries
	base := uint64(m.hostAddr())
	buf := make([]byte, 8*chunk)
	var runs []Run
	for off := uint64(0); off < m.size; off += chunk * PageSize {
		n := min(chunk, (m.size-off)/PageSize)
		b := buf[:8*n]
		if _, err := f.ReadAt(b, int64((base+off)/PageSize*8)); err != nil {
			return nil, err
		}
		for i := range n {
			e := binary.LittleEndian.Uint64(b[8*i:])
			if e&(pmPresent|pmSwapped) != 0 && e&pmFileOrSh == 0 {
				runs = appendRun(runs, off+i*PageSize, PageSize)
			}
		}
	}
	return runs, nil
}
