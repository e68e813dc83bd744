package blk

import (
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// CreateCOW creates an overlay at path over base, size bytes long (a
// multiple of 512; it may exceed the base's size: the rest reads as
// zeros), with clusters of clusterSize bytes (a power of two from 4 KiB to
// 16 MiB; 0 means CowDefaultClusterSize). The overlay costs a few KiB:
// it is sparse and its bitmap starts all Base.
//
// base is stored as given; a relative base is relative to path's
// directory. It is a raw image, or an overlay that FreezeCOW froze, so
// that overlays can be chained (a fork's disk: freeze the parent's
// overlay, put one new overlay on it for each of parent and child).
// path must not exist; it appears complete or not at all.
func CreateCOW(path, base string, size int64, clusterSize int) error {
	if clusterSize == 0 {
		clusterSize = CowDefaultClusterSize
	}
	shift := uint32(bits.TrailingZeros(uint(clusterSize)))
	if clusterSize&(clusterSize-1) != 0 || shift < cowMinClusterSh || shift > cowMaxClusterSh {
		return fmt.Errorf("blk: cluster size %d: want a power of two from 4 KiB to 16 MiB", clusterSize)
	}
	if size <= 0 || size%SectorSize != 0 || size > cowMaxSize {
		return fmt.Errorf("blk: overlay size %d: want a positive multiple of %d", size, SectorSize)
	}
	if len(base) == 0 || len(base) > cowMaxPath {
		return fmt.Errorf("blk: base path %q: want 1 to %d bytes", base, cowMaxPath)
	}
	// Opening the base validates it, and the whole chain under it.
	bl, st, err := openBase(resolveBase(path, base), 0)
	if err != nil {
		return err
	}
	bl.Close()
	h := &cowHeader{
		clusterShift: shift,
		size:         size,
		baseSize:     st.Size(),
		baseMtime:    st.ModTime().UnixNano(),
		basePath:     base,
	}
	h.layout()
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("blk: create overlay: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename, a no-op
	err = tmp.Truncate(h.dataOff + h.size)
	if err == nil {
		_, err = tmp.WriteAt(h.marshal(), 0)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("blk: create overlay %s: %w", path, err)
	}
	if err := unix.Renameat2(unix.AT_FDCWD, tmp.Name(), unix.AT_FDCWD, path, unix.RENAME_NOREPLACE); err != nil {
		return fmt.Errorf("blk: create overlay %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

// OpenCOW opens the overlay at path and the chain of bases under it. A
// writable open takes an exclusive lock on the overlay (one monitor per
// disk) and refuses a frozen overlay; every base is opened read-only under
// a shared lock.
func OpenCOW(path string, readOnly bool) (*COW, error) {
	c, err := openCOW(path, readOnly, 0)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func openCOW(path string, readOnly bool, depth int) (*COW, error) {
	if depth > cowMaxDepth {
		return nil, fmt.Errorf("blk: overlay chain deeper than %d at %s", cowMaxDepth, path)
	}
	flag, lock := os.O_RDWR, unix.LOCK_EX
	if readOnly {
		flag, lock = os.O_RDONLY, unix.LOCK_SH
	}
	f, err := os.OpenFile(path, flag|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("blk: %w", err)
	}
	c, err := loadCOW(f, path, readOnly, lock, depth)
	if err != nil {
		f.Close()
		return nil, err
	}
	return c, nil
}

func loadCOW(f *os.File, path string, readOnly bool, lock, depth int) (*COW, error) {
	if err := unix.Flock(int(f.Fd()), lock|unix.LOCK_NB); err != nil {
		return nil, fmt.Errorf("blk: %s is in use by another process: %w", path, err)
	}
	hb := make([]byte, cowHeaderSize)
	if err := readFull(f, hb, 0); err != nil {
		return nil, fmt.Errorf("blk: overlay %s: header: %w (%w)", path, err, ErrCorrupt)
	}
	h, err := parseCOWHeader(hb)
	if err != nil {
		return nil, fmt.Errorf("blk: overlay %s: %w", path, err)
	}
	if !readOnly && h.flags&cowFlagFrozen != 0 {
		return nil, fmt.Errorf("blk: overlay %s: %w (it is the base of other overlays); open it read-only", path, errFrozen)
	}
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("blk: %w", err)
	}
	if st.Size() != h.dataOff+h.size {
		return nil, fmt.Errorf("blk: overlay %s is %d bytes, its header says %d: %w", path, st.Size(), h.dataOff+h.size, ErrCorrupt)
	}
	bm := make(bitmap, h.bitmapLen)
	if err := readFull(f, bm, h.bitmapOff); err != nil {
		return nil, fmt.Errorf("blk: overlay %s: bitmap: %w", path, err)
	}
	if err := bm.validate(h.clusters()); err != nil {
		return nil, fmt.Errorf("blk: overlay %s: %w", path, err)
	}
	basePath := resolveBase(path, h.basePath)
	base, bst, err := openBase(basePath, depth)
	if err != nil {
		return nil, fmt.Errorf("blk: overlay %s: %w", path, err)
	}
	if bst.Size() != h.baseSize || bst.ModTime().UnixNano() != h.baseMtime {
		base.Close()
		return nil, fmt.Errorf("blk: overlay %s: base %s is %d bytes modified %s, was %d bytes modified %d ns: %w",
			path, basePath, bst.Size(), bst.ModTime().UTC().Format("2006-01-02T15:04:05.999999999Z"), h.baseSize, h.baseMtime, ErrBaseChanged)
	}
	return &COW{
		path:     path,
		f:        f,
		h:        h,
		base:     base,
		readOnly: readOnly,
		bm:       bm,
		dirty:    make(map[int64]struct{}),
		scratch:  make([]byte, h.clusterSize()),
	}, nil
}

func resolveBase(overlay, base string) string {
	if filepath.IsAbs(base) {
		return base
	}
	return filepath.Join(filepath.Dir(overlay), base)
}

// openBase opens a base read-only under a shared lock: a frozen overlay
// (recursively) or a raw image. It returns the base's file info as well,
// for the staleness check.
func openBase(path string, depth int) (layer, os.FileInfo, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("base: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("base: %w", err)
	}
	magic := make([]byte, len(cowMagic))
	n, _ := f.ReadAt(magic, 0)
	if isCOW(magic[:n]) {
		c, err := loadCOW(f, path, true, unix.LOCK_SH, depth+1)
		if err != nil {
			f.Close()
			return nil, nil, err
		}
		if c.h.flags&cowFlagFrozen == 0 {
			c.Close()
			return nil, nil, fmt.Errorf("blk: base overlay %s is not frozen; freeze it (FreezeCOW) before layering on it", path)
		}
		return c, st, nil
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("blk: base %s is locked by a writer: %w", path, err)
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("base: %w", err)
	}
	return &rawLayer{f: f, size: size}, st, nil
}

// rawLayer is a raw base image.
type rawLayer struct {
	f    *os.File
	size int64
}

func (r *rawLayer) ReadAt(p []byte, off int64) (int, error) { return r.f.ReadAt(p, off) }
func (r *rawLayer) Size() int64                             { return r.size }
func (r *rawLayer) Close() error                            { return r.f.Close() }

// FreezeCOW marks the overlay at path frozen: from then on it only opens
// read-only, and overlays may use it as their base. It fails while another
// process has the overlay open. Freezing a frozen overlay does nothing.
func FreezeCOW(path string) error {
	c, err := OpenCOW(path, false)
	if errors.Is(err, errFrozen) {
		return nil
	}
	if err != nil {
		return err
	}
	c.h.flags |= cowFlagFrozen
	_, err = c.f.WriteAt(c.h.marshal(), 0)
	return errors.Join(err, c.Close())
}

var errFrozen = errors.New("overlay is frozen")

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("blk: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("blk: sync %s: %w", dir, err)
	}
	return nil
}
