package memory

import (
	"bytes"
	"fmt"
	"os"
	"slices"

	"golang.org/x/sys/unix"
)

// WriteSparse writes m's whole contents to f at their RAM offsets, with every
// all-zero page left as a hole, and sizes f to the RAM size: a memory file
// that depends on nothing else (suspend to disk). It returns the bytes of
// data written. Only ranges that can hold data are read: the base file's
// data (SEEK_DATA), the extents, and the private pages; reading the rest
// would allocate memory for holes.
func (m *RAM) WriteSparse(f *os.File) (uint64, error) {
	if err := f.Truncate(0); err != nil {
		return 0, fmt.Errorf("memory: write sparse: %w", err)
	}
	if err := f.Truncate(int64(m.size)); err != nil {
		return 0, fmt.Errorf("memory: write sparse: %w", err)
	}
	ranges, err := m.dataRanges()
	if err != nil {
		return 0, fmt.Errorf("memory: write sparse: %w", err)
	}
	var zero [PageSize]byte
	var written uint64
	for _, r := range ranges {
		// Coalesce consecutive non-zero pages into one write.
		start := r.Offset
		flush := func(end uint64) error {
			if end > start {
				if _, err := f.WriteAt(m.host[start:end], int64(start)); err != nil {
					return fmt.Errorf("memory: write sparse: %w", err)
				}
				written += end - start
			}
			return nil
		}
		for off := r.Offset; off < r.Offset+r.Len; off += PageSize {
			if bytes.Equal(m.host[off:off+PageSize], zero[:]) {
				if err := flush(off); err != nil {
					return written, err
				}
				start = off + PageSize
			}
		}
		if err := flush(r.Offset + r.Len); err != nil {
			return written, err
		}
	}
	return written, nil
}

// dataRanges is a sorted, merged superset of the RAM offsets that can hold
// anything but zeros.
func (m *RAM) dataRanges() ([]Run, error) {
	var all []Run
	base := m.layers[0].f
	for off := int64(0); off < int64(m.size); {
		d, err := unix.Seek(int(base.Fd()), off, unix.SEEK_DATA)
		if err == unix.ENXIO || (err == nil && d >= int64(m.size)) {
			break
		}
		if err != nil {
			return nil, err
		}
		h, err := unix.Seek(int(base.Fd()), d, unix.SEEK_HOLE)
		if err != nil {
			return nil, err
		}
		h = min(h, int64(m.size))
		all = append(all, pageRun(uint64(d), uint64(h)))
		off = h
	}
	for _, e := range m.extents {
		all = append(all, Run{e.off, e.n})
	}
	dirty, err := m.Dirty()
	if err != nil {
		return nil, err
	}
	all = append(all, dirty...)
	slices.SortFunc(all, func(a, b Run) int { return cmpU64(a.Offset, b.Offset) })
	var out []Run
	for _, r := range all {
		if k := len(out) - 1; k >= 0 && r.Offset <= out[k].Offset+out[k].Len {
			out[k].Len = max(out[k].Len, r.Offset+r.Len-out[k].Offset)
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

// pageRun widens [start, end) to whole pages.
func pageRun(start, end uint64) Run {
	s := start &^ (PageSize - 1)
	e := (end + PageSize - 1) &^ (PageSize - 1)
	return Run{s, e - s}
}
