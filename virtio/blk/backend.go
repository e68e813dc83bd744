package blk

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// Backend is the storage behind a disk. ReadAt and WriteAt follow io.ReaderAt
// and io.WriterAt; they may be called with slices that alias guest memory.
type Backend interface {
	io.ReaderAt
	io.WriterAt
	// Sync makes completed writes durable (VIRTIO_BLK_T_FLUSH).
	Sync() error
	// Size returns the disk size in bytes; the device exposes whole sectors.
	Size() int64
}

// Discarder is a Backend that can deallocate a range; reads of it return
// zeros afterwards. It returns an error wrapping errors.ErrUnsupported if the
// underlying storage cannot.
type Discarder interface {
	PunchHole(off, n int64) error
}

// Zeroer is a Backend that can zero a range without writing zeros and
// without deallocating it. It returns an error wrapping errors.ErrUnsupported
// if the underlying storage cannot.
type Zeroer interface {
	ZeroRange(off, n int64) error
}

// File is a Backend over a regular file (or block device).
type File struct {
	f    *os.File
	size int64
}

var (
	_ Backend   = (*File)(nil)
	_ Discarder = (*File)(nil)
	_ Zeroer    = (*File)(nil)
)

// OpenFile opens path as a disk, read-only or read-write.
func OpenFile(path string, readOnly bool) (*File, error) {
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("blk: %w", err)
	}
	b, err := NewFile(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return b, nil
}

// NewFile wraps an open file; the File takes ownership of f. The size is
// fixed when it is wrapped.
func NewFile(f *os.File) (*File, error) {
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, fmt.Errorf("blk: size of %s: %w", f.Name(), err)
	}
	return &File{f: f, size: size}, nil
}

// ReadAt implements io.ReaderAt (pread).
func (b *File) ReadAt(p []byte, off int64) (int, error) { return b.f.ReadAt(p, off) }

// WriteAt implements io.WriterAt (pwrite).
func (b *File) WriteAt(p []byte, off int64) (int, error) { return b.f.WriteAt(p, off) }

// Sync flushes written data to stable storage (fdatasync: metadata that
// does not affect reading the data back, such as mtime, can wait).
func (b *File) Sync() error {
	if err := unix.Fdatasync(int(b.f.Fd())); err != nil {
		return fmt.Errorf("blk: fdatasync %s: %w", b.f.Name(), err)
	}
	return nil
}

// Size returns the file size when it was opened.
func (b *File) Size() int64 { return b.size }

// PunchHole deallocates [off, off+n) without changing the file size.
func (b *File) PunchHole(off, n int64) error {
	return b.fallocate(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
}

// ZeroRange zeroes [off, off+n) keeping it allocated (unwritten extents on
// ext4 and XFS: no data is written).
func (b *File) ZeroRange(off, n int64) error {
	return b.fallocate(unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, off, n)
}

func (b *File) fallocate(mode uint32, off, n int64) error {
	err := unix.Fallocate(int(b.f.Fd()), mode, off, n)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		return fmt.Errorf("blk: fallocate(%#x) on %s: %w", mode, b.f.Name(), errors.ErrUnsupported)
	}
	if err != nil {
		return fmt.Errorf("blk: fallocate(%#x) on %s: %w", mode, b.f.Name(), err)
	}
	return nil
}

// Close closes the file.
func (b *File) Close() error { return b.f.Close() }

// Vectored is a Backend that moves a whole request's segments in one system
// call. Linux splits a 1 MiB request into up to 256 page-sized segments; one
// preadv/pwritev instead of one pread/pwrite per segment is most of the
// difference between a slow and a fast sequential disk.
type Vectored interface {
	ReadvAt(bufs [][]byte, off int64) error
	WritevAt(bufs [][]byte, off int64) error
}

var _ Vectored = (*File)(nil)

// ReadvAt fills bufs from off with preadv, looping over short reads.
func (b *File) ReadvAt(bufs [][]byte, off int64) error {
	return vectored(bufs, off, func(iov [][]byte, off int64) (int, error) {
		return unix.Preadv(int(b.f.Fd()), iov, off)
	})
}

// WritevAt writes bufs at off with pwritev, looping over short writes.
func (b *File) WritevAt(bufs [][]byte, off int64) error {
	return vectored(bufs, off, func(iov [][]byte, off int64) (int, error) {
		return unix.Pwritev(int(b.f.Fd()), iov, off)
	})
}

// maxIOV is IOV_MAX: the most segments one preadv/pwritev takes.
const maxIOV = 1024

func vectored(bufs [][]byte, off int64, op func([][]byte, int64) (int, error)) error {
	for len(bufs) > 0 {
		iov := bufs[:min(len(bufs), maxIOV)]
		n, err := op(iov, off)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return err
		}
		if n == 0 {
			return io.ErrUnexpectedEOF
		}
		off += int64(n)
		// Drop what was done, possibly part of a buffer.
		for n > 0 && len(bufs) > 0 {
			if n >= len(bufs[0]) {
				n -= len(bufs[0])
				bufs = bufs[1:]
				continue
			}
			bufs = append([][]byte{bufs[0][n:]}, bufs[1:]...)
			n = 0
		}
	}
	return nil
}
