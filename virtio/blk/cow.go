package blk

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// COW is a copy-on-write disk: a read-only base (a raw image, or a frozen
// overlay, recursively) under an overlay file that holds every cluster the
// guest changed. It implements Backend and Discarder; the device owns it.
//
// Crash safety rests on one ordering: a cluster's data reaches the disk
// before the bitmap state that points at it. State changes live in memory
// until Sync, which fdatasyncs the data, then writes the changed bitmap
// pages, then fdatasyncs again. After a crash the on-disk bitmap holds, for
// each cluster, either its last synced state or a newer one whose data was
// already durable, so a torn bitmap page is as good as either version, and
// what is lost is exactly what the guest had not flushed. A cluster only
// becomes Data by writing all of it (merged with the base or zeros), so
// stale bytes in the data area of a Base or Zero cluster are never read.
type COW struct {
	path     string
	f        *os.File
	h        *cowHeader
	base     layer
	readOnly bool

	mu      sync.RWMutex // write-held to change states or data; read-held to read
	bm      bitmap
	dirty   map[int64]struct{} // bitmap pages (index from 0) changed since Sync
	scratch []byte             // one cluster, for copy-up
	noPunch bool               // the overlay's filesystem cannot punch holes
	closed  bool
}

var (
	_ Backend   = (*COW)(nil)
	_ Discarder = (*COW)(nil)
)

// layer is what a COW reads through to: a raw base file or a frozen COW.
type layer interface {
	io.ReaderAt
	Size() int64
	Close() error
}

// Size returns the virtual disk size.
func (c *COW) Size() int64 { return c.h.size }

// Path returns the overlay file's path.
func (c *COW) Path() string { return c.path }

// span is a run of clusters in one state: [off, off+n) in disk bytes.
type span struct {
	state  byte
	off, n int64
}

// spans splits [off, off+n), which lies inside the disk, into runs of
// clusters of equal state and calls fn for each.
func (c *COW) spans(off, n int64, fn func(span) error) error {
	cs := c.h.clusterSize()
	for n > 0 {
		i := off >> c.h.clusterShift
		st := c.bm.get(i)
		end := (i + 1) * cs
		for end < off+n && c.bm.get(end>>c.h.clusterShift) == st {
			end += cs
		}
		l := min(end, off+n) - off
		if err := fn(span{st, off, l}); err != nil {
			return err
		}
		off += l
		n -= l
	}
	return nil
}

// ReadAt implements io.ReaderAt.
func (c *COW) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("blk: read at %d: %w", off, unix.EINVAL)
	}
	if off >= c.h.size {
		return 0, io.EOF
	}
	want := len(p)
	if int64(want) > c.h.size-off {
		p = p[:c.h.size-off]
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return 0, fmt.Errorf("blk: read %s: %w", c.path, os.ErrClosed)
	}
	err := c.spans(off, int64(len(p)), func(s span) error {
		buf := p[s.off-off : s.off-off+s.n]
		switch s.state {
		case clusterData:
			return readFull(c.f, buf, c.h.dataOff+s.off)
		case clusterZero:
			clear(buf)
			return nil
		}
		return readBase(c.base, buf, s.off)
	})
	if err != nil {
		return 0, fmt.Errorf("blk: read %s at %d: %w", c.path, off, err)
	}
	if len(p) < want {
		return len(p), io.EOF
	}
	return len(p), nil
}

// readBase reads through to the base: zeros past its end.
func readBase(base layer, p []byte, off int64) error {
	inBase := max(0, min(int64(len(p)), base.Size()-off))
	clear(p[inBase:])
	return readFull(base, p[:inBase], off)
}

// readFull is ReadAt that treats a short read as an error: every byte it
// asks for exists (overlay files have their full size, bases were checked).
func readFull(r io.ReaderAt, p []byte, off int64) error {
	if len(p) == 0 {
		return nil
	}
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// WriteAt implements io.WriterAt. Clusters it covers whole are written in
// place; a partly covered cluster that is not yet Data is copied up first.
func (c *COW) WriteAt(p []byte, off int64) (int, error) {
	if err := c.checkWrite(off, int64(len(p))); err != nil {
		return 0, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, fmt.Errorf("blk: write %s: %w", c.path, os.ErrClosed)
	}
	err := c.spans(off, int64(len(p)), func(s span) error {
		buf := p[s.off-off : s.off-off+s.n]
		if s.state == clusterData {
			_, err := c.f.WriteAt(buf, c.h.dataOff+s.off)
			return err
		}
		return c.fill(s, buf)
	})
	if err != nil {
		return 0, fmt.Errorf("blk: write %s at %d: %w", c.path, off, err)
	}
	return len(p), nil
}

// fill makes the clusters of s, which are not Data, hold buf (nil: zeros)
// over s and their old contents elsewhere, and marks them Data: whole
// clusters covered by s in one write, the partial ones at its ends through
// a copy-up.
func (c *COW) fill(s span, buf []byte) error {
	cs := c.h.clusterSize()
	first, last := s.off>>c.h.clusterShift, (s.off+s.n-1)>>c.h.clusterShift
	for i := first; i <= last; {
		cStart, cEnd := i*cs, min((i+1)*cs, c.h.size)
		lo, hi := max(cStart, s.off), min(cEnd, s.off+s.n)
		if lo == cStart && hi == cEnd {
			// Extend over every wholly covered cluster.
			j := i
			for j+1 <= last && min((j+2)*cs, c.h.size) <= s.off+s.n {
				j++
			}
			hi = min((j+1)*cs, c.h.size)
			if buf == nil {
				if err := c.zeroData(lo, hi-lo); err != nil {
					return err
				}
			} else if _, err := c.f.WriteAt(buf[lo-s.off:hi-s.off], c.h.dataOff+lo); err != nil {
				return err
			}
			for k := i; k <= j; k++ {
				c.setState(k, clusterData)
			}
			i = j + 1
			continue
		}
		// Copy-up: the cluster's current contents, merged, written whole.
		cl := c.scratch[:cEnd-cStart]
		if s.state == clusterZero {
			clear(cl)
		} else if err := readBase(c.base, cl, cStart); err != nil {
			return err
		}
		if buf == nil {
			clear(cl[lo-cStart : hi-cStart])
		} else {
			copy(cl[lo-cStart:], buf[lo-s.off:hi-s.off])
		}
		if _, err := c.f.WriteAt(cl, c.h.dataOff+cStart); err != nil {
			return err
		}
		c.setState(i, clusterData)
		i++
	}
	return nil
}

// zeroData makes the data area read zeros over [off, off+n) of the disk,
// cheapest first.
func (c *COW) zeroData(off, n int64) error {
	if ok, err := c.punch(off, n); ok || err != nil {
		return err
	}
	for n > 0 {
		chunk := min(n, int64(len(zeros)))
		if _, err := c.f.WriteAt(zeros[:chunk], c.h.dataOff+off); err != nil {
			return err
		}
		off += chunk
		n -= chunk
	}
	return nil
}

// punch deallocates [off, off+n) of the data area; it reports false if the
// overlay's filesystem cannot.
func (c *COW) punch(off, n int64) (bool, error) {
	if c.noPunch {
		return false, nil
	}
	err := unix.Fallocate(int(c.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, c.h.dataOff+off, n)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		c.noPunch = true
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("punch hole: %w", err)
	}
	return true, nil
}

// PunchHole implements Discarder: [off, off+n) reads as zeros afterwards.
// Whole clusters become Zero (their data area is punched to free space);
// the partly covered ones are zeroed in the data area, after a copy-up if
// they were Base.
func (c *COW) PunchHole(off, n int64) error {
	if err := c.checkWrite(off, n); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fmt.Errorf("blk: discard %s: %w", c.path, os.ErrClosed)
	}
	cs := c.h.clusterSize()
	err := c.spans(off, n, func(s span) error {
		if s.state == clusterZero {
			return nil
		}
		// Whole clusters inside s: [wLo, wHi).
		wLo := alignUp(s.off, cs)
		wHi := (s.off + s.n) / cs * cs
		if s.off+s.n == c.h.size {
			wHi = c.h.size
		}
		if wLo >= wHi {
			wLo, wHi = s.off, s.off // none
		}
		for _, part := range []span{{s.state, s.off, wLo - s.off}, {s.state, wHi, s.off + s.n - wHi}} {
			if part.n <= 0 {
				continue
			}
			var err error
			if s.state == clusterData {
				err = c.zeroData(part.off, part.n)
			} else {
				err = c.fill(part, nil)
			}
			if err != nil {
				return err
			}
		}
		if wHi > wLo {
			for i := wLo / cs; i*cs < wHi; i++ {
				c.setState(i, clusterZero)
			}
			// Only to give the space back: Zero clusters are never read.
			if s.state == clusterData {
				if _, err := c.punch(wLo, wHi-wLo); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("blk: discard %s [%d, +%d): %w", c.path, off, n, err)
	}
	return nil
}

func (c *COW) checkWrite(off, n int64) error {
	if c.readOnly {
		return fmt.Errorf("blk: %s is read-only: %w", c.path, unix.EROFS)
	}
	if off < 0 || n < 0 || off > c.h.size || n > c.h.size-off {
		return fmt.Errorf("blk: [%d, +%d) outside the %d-byte disk %s: %w", off, n, c.h.size, c.path, unix.EINVAL)
	}
	return nil
}

func (c *COW) setState(i int64, s byte) {
	if c.bm.get(i) == s {
		return
	}
	c.bm.set(i, s)
	c.dirty[(i>>2)/cowHeaderSize] = struct{}{}
}

// Sync makes every completed write durable: data, then the bitmap pages
// that point at it.
func (c *COW) Sync() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fmt.Errorf("blk: sync %s: %w", c.path, os.ErrClosed)
	}
	return c.sync()
}

func (c *COW) sync() error {
	if c.readOnly {
		return nil
	}
	if err := unix.Fdatasync(int(c.f.Fd())); err != nil {
		return fmt.Errorf("blk: fdatasync %s: %w", c.path, err)
	}
	if len(c.dirty) == 0 {
		return nil
	}
	for pg := range c.dirty {
		lo := pg * cowHeaderSize
		hi := min(lo+cowHeaderSize, int64(len(c.bm)))
		if _, err := c.f.WriteAt(c.bm[lo:hi], c.h.bitmapOff+lo); err != nil {
			return fmt.Errorf("blk: write bitmap of %s: %w", c.path, err)
		}
	}
	if err := unix.Fdatasync(int(c.f.Fd())); err != nil {
		return fmt.Errorf("blk: fdatasync %s: %w", c.path, err)
	}
	clear(c.dirty)
	return nil
}

// Close syncs a writable overlay and closes it and its base.
func (c *COW) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	err := c.sync()
	return errors.Join(err, c.f.Close(), c.base.Close())
}
