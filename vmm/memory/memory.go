package memory

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

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

// RAM is a guest's memory: a host mapping of size bytes built from layers.
// layers[0], the base, is mapped over the whole range; each extent maps part
// of a layer over it. A fresh RAM is one layer (its own file, MAP_SHARED); a
// restored or forked one is MAP_PRIVATE over its snapshot's layers, plus the
// private copies of the pages written since (see Dirty and Freeze).
type RAM struct {
	host    []byte // the whole range, mapped
	regions []Region
	size    uint64
	private bool // host mapping is MAP_PRIVATE (copy-on-write over the layers)
	layers  []*layer
	extents []extent // sorted, not overlapping, page-aligned
	// linkDirs are the absolute folders (Options.Dir, Options.LayerDir)
	// where the RAM gives its layer files names of its own: each layer goes
	// to the first one on its filesystem.
	linkDirs []string
}

// layer is one file RAM maps.
type layer struct {
	f *os.File
	// owned is the RAM's own name for the file, an absolute path in one of
	// its link folders; Close removes it. It lets the file be linked again
	// (Freeze) after the snapshot folder it came from is gone, and is how a
	// snapshot folder on another filesystem refers to the file.
	owned string
}

// extent maps [fileOff, fileOff+n) of layers[layer] at RAM offset off.
type extent struct {
	off, n, fileOff uint64
	layer           int
}

// Options choose how RAM is backed and where it keeps its layer files.
type Options struct {
	// Dir, when set, backs RAM with a file created in this folder (a tmpfs, so that
	// a snapshot can later reuse the file); otherwise RAM is a memfd. A
	// layered RAM (MapManifest) links there each layer on Dir's filesystem.
	Dir string
	// LayerDir, when set, is a second folder, on the filesystem where
	// snapshots on disk live: a layer mapped from such a snapshot (which
	// cannot be linked into Dir, a tmpfs) is linked here, so the RAM still
	// has it, and can name it in its forks' manifests, after the snapshot
	// is deleted. The RAM removes its links when it is closed.
	LayerDir string
}

// linkDirs lists the folders of o, absolute, in the order layers try them.
func (o Options) linkDirs() ([]string, error) {
	var out []string
	for _, d := range []string{o.Dir, o.LayerDir} {
		if d == "" {
			continue
		}
		a, err := filepath.Abs(d)
		if err != nil {
			return nil, fmt.Errorf("memory: %w", err)
		}
		out = append(out, a)
	}
	return out, nil
}

// New allocates size bytes of guest RAM (a multiple of 4 KiB, at least 1 MiB).
func New(size uint64, opt Options) (*RAM, error) {
	if size < 1<<20 || size%4096 != 0 {
		return nil, fmt.Errorf("memory: size %d: must be a multiple of 4 KiB and at least 1 MiB", size)
	}
	dirs, err := opt.linkDirs()
	if err != nil {
		return nil, err
	}
	var f *os.File
	if opt.Dir != "" {
		if f, err = tmpFile(opt.Dir); err != nil {
			return nil, err
		}
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
	m, err := Map(f, size)
	if err != nil {
		return nil, err
	}
	m.linkDirs = dirs
	return m, nil
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
	return &RAM{host: host, regions: Layout(size), size: size, private: private, layers: []*layer{{f: f}}}, nil
}

// tmpFile creates a nameless file in dir that can later be linked into a
// snapshot folder (O_TMPFILE without O_EXCL). Where the filesystem has no
// O_TMPFILE the file is created and unlinked at once: it works as RAM, but
// cannot be forked to another process.
func tmpFile(dir string) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err == nil {
		return os.NewFile(uintptr(fd), filepath.Join(dir, "guest-ram")), nil
	}
	f, err := os.CreateTemp(dir, "guest-ram-*")
	if err != nil {
		return nil, fmt.Errorf("memory: %w", err)
	}
	// The file is reached through the fd from now on.
	os.Remove(f.Name())
	return f, nil
}

// Close unmaps RAM, closes its files and removes the names it made for them.
func (m *RAM) Close() error {
	err := unix.Munmap(m.host)
	for _, l := range m.layers {
		err = errors.Join(err, l.close())
	}
	return err
}

func (l *layer) close() error {
	err := l.f.Close()
	if l.owned != "" {
		err = errors.Join(err, os.Remove(l.owned))
	}
	return err
}

// Size is the total amount of guest RAM in bytes.
func (m *RAM) Size() uint64 { return m.size }

// Regions lists the guest-physical RAM regions.
func (m *RAM) Regions() []Region { return append([]Region(nil), m.regions...) }

// Host returns the host mapping of region r (for KVM memory slots).
func (m *RAM) Host(r Region) []byte { return m.host[r.Offset : r.Offset+r.Size] }

// File is the backing file of a fresh RAM, the base layer of a layered one.
func (m *RAM) File() *os.File { return m.layers[0].f }

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
