package memory

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/boxd-dev/boxd/vmm/boot"
)

// ErrOutOfRange is returned for an access that is not wholly inside guest RAM.
var ErrOutOfRange = errors.New("memory: guest address out of range")

// Region is one contiguous run of guest RAM.
type Region struct {
	GPA    uint64 // guest-physical start
	Size   uint64
	Offset uint64 // offset in the backing file (and in the host mapping)
}

// Layout returns the RAM regions for a guest of size bytes, as boot.RAMRegions
// places them (so the loaders' memory maps and the KVM slots agree), with each
// region's offset in the backing file.
func Layout(size uint64) []Region {
	var out []Region
	var off uint64
	for _, r := range boot.RAMRegions(size) {
		out = append(out, Region{GPA: r.Start, Size: r.Size, Offset: off})
		off += r.Size
	}
	return out
}

// RAM is a guest's memory.
type RAM struct {
	file    *os.File
	host    []byte // the whole file, mapped
	regions []Region
	size    uint64
	private bool // host mapping is MAP_PRIVATE (copy-on-write over file)
}

// Options choose how RAM is backed.
type Options struct {
	// Dir, when set, backs RAM with a file created in this folder (a tmpfs, so that
	// a snapshot can later reuse the file); otherwise RAM is a memfd.
	Dir string
}

// New allocates size bytes of guest RAM (a multiple of 4 KiB, at least 1 MiB).
func New(size uint64, opt Options) (*RAM, error) {
	if size < 1<<20 || size%4096 != 0 {
		return nil, fmt.Errorf("memory: size %d: must be a multiple of 4 KiB and at least 1 MiB", size)
	}
	var f *os.File
	if opt.Dir != "" {
		var err error
		f, err = os.CreateTemp(opt.Dir, "guest-ram-*")
		if err != nil {
			return nil, fmt.Errorf("memory: %w", err)
		}
		// The file is reached through the fd (and /proc/self/fd) from now on.
		os.Remove(f.Name())
	} else {
		fd, err := unix.MemfdCreate("boxd-guest-ram", unix.MFD_CLOEXEC)
		if err != nil {
			return nil, fmt.Errorf("memory: memfd_create: %w", err)
		}
		f = os.NewFile(uintptr(fd), "memfd:boxd-guest-ram")
	}
	if err := f.Truncate(int64(size)); err != nil {
		f.Close()
		return nil, fmt.Errorf("memory: size backing file: %w", err)
	}
	return Map(f, size)
}

// Map maps an existing backing file of size bytes MAP_SHARED as guest RAM. RAM
// takes ownership of f.
func Map(f *os.File, size uint64) (*RAM, error) {
	return mapFile(f, size, false)
}

func mapFile(f *os.File, size uint64, private bool) (*RAM, error) {
	if size < 1<<20 || size%4096 != 0 {
		f.Close()
		return nil, fmt.Errorf("memory: size %d: must be a multiple of 4 KiB and at least 1 MiB", size)
	}
	host, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, mapFlags(private))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("memory: mmap %d bytes: %w", size, err)
	}
	// Ask for transparent huge pages: every guest page the host maps is a
	// nested-paging entry, and 2 MiB ones make the guest's memory-heavy work
	// (page-table walks on TLB misses) several times cheaper. For a memfd or
	// tmpfs file this takes effect when the host allows it
	// (/sys/kernel/mm/transparent_hugepage/shmem_enabled = advise); it is a
	// hint either way, so a refusal is not an error.
	_ = unix.Madvise(host, unix.MADV_HUGEPAGE)
	return &RAM{file: f, host: host, regions: Layout(size), size: size, private: private}, nil
}

// Close unmaps RAM and closes the backing file.
func (m *RAM) Close() error {
	err := unix.Munmap(m.host)
	if cerr := m.file.Close(); err == nil {
		err = cerr
	}
	return err
}

// Size is the total amount of guest RAM in bytes.
func (m *RAM) Size() uint64 { return m.size }

// Regions lists the guest-physical RAM regions.
func (m *RAM) Regions() []Region { return append([]Region(nil), m.regions...) }

// Host returns the host mapping of region r (for KVM memory slots).
func (m *RAM) Host(r Region) []byte { return m.host[r.Offset : r.Offset+r.Size] }

// File is the backing file (for snapshots).
func (m *RAM) File() *os.File { return m.file }

// Slice returns host memory aliasing guest range [gpa, gpa+n).
func (m *RAM) Slice(gpa, n uint64) ([]byte, error) {
	for _, r := range m.regions {
		if gpa >= r.GPA && gpa-r.GPA < r.Size && n <= r.Size-(gpa-r.GPA) {
			off := r.Offset + gpa - r.GPA
			return m.host[off : off+n : off+n], nil
		}
	}
	return nil, fmt.Errorf("%w: [%#x, +%#x)", ErrOutOfRange, gpa, n)
}

// ReadAt copies len(p) bytes from guest-physical address gpa.
func (m *RAM) ReadAt(p []byte, gpa int64) (int, error) {
	if gpa < 0 {
		return 0, fmt.Errorf("%w: negative address", ErrOutOfRange)
	}
	s, err := m.Slice(uint64(gpa), uint64(len(p)))
	if err != nil {
		return 0, err
	}
	return copy(p, s), nil
}

// WriteAt copies p to guest-physical address gpa.
func (m *RAM) WriteAt(p []byte, gpa int64) (int, error) {
	if gpa < 0 {
		return 0, fmt.Errorf("%w: negative address", ErrOutOfRange)
	}
	s, err := m.Slice(uint64(gpa), uint64(len(p)))
	if err != nil {
		return 0, err
	}
	return copy(s, p), nil
}
