package memory

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// hostAddr is the host virtual address of RAM offset 0 (for pagemap, which is
// indexed by virtual address).
func (m *RAM) hostAddr() uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(m.host))) }

// remap mmaps the base file with flags|MAP_FIXED over the whole host range.
func (m *RAM) remap(flags int) error {
	return m.mapAt(0, m.size, m.layers[0].f.Fd(), 0, flags)
}

// mapAt mmaps [fileOff, fileOff+n) of fd with flags|MAP_FIXED over RAM
// offsets [off, off+n). unix.Mmap cannot take an address, hence the raw
// system call; callers pass ranges inside the mapping mapFile created, so no
// Go memory is overwritten.
func (m *RAM) mapAt(off, n uint64, fd uintptr, fileOff uint64, flags int) error {
	if off > m.size || n > m.size-off {
		return fmt.Errorf("map [%#x +%#x) outside RAM of %#x bytes", off, n, m.size)
	}
	addr := m.hostAddr() + uintptr(off)
	r, _, errno := unix.Syscall6(unix.SYS_MMAP, addr, uintptr(n),
		unix.PROT_READ|unix.PROT_WRITE, uintptr(flags|unix.MAP_FIXED), fd, uintptr(fileOff))
	if errno != 0 {
		return errno
	}
	if r != addr {
		return fmt.Errorf("kernel mapped at %#x, asked for %#x", r, addr)
	}
	return nil
}

// pmScanArg is struct pm_scan_arg (linux/fs.h, Linux 6.7+).
type pmScanArg struct {
	size, flags, start, end, walkEnd, vec, vecLen, maxPages       uint64
	categoryInverted, categoryMask, categoryAnyofMask, returnMask uint64
}

// pageRegion is struct page_region.
type pageRegion struct{ start, end, categories uint64 }

const (
	pagemapScan   = 0xc0606610 // _IOWR('f', 16, struct pm_scan_arg)
	pageIsFile    = 1 << 2
	pageIsPresent = 1 << 3
	pageIsSwapped = 1 << 4
)

// scanPrivate asks the kernel (PAGEMAP_SCAN on /proc/self/pagemap) for the
// runs of pages in [start, end) that are present or swapped and not file
// pages: in a MAP_PRIVATE file mapping, exactly the private copies made by
// writes. The kernel walks page tables, skipping unpopulated ones, and
// returns merged runs, so the cost follows the populated pages, not the size.
// vec is reused between calls; a full vec resumes from where the walk ended.
func scanPrivate(pagemapFD int, start, end uintptr, vec []pageRegion, emit func(start, end uint64)) error {
	for start < end {
		arg := pmScanArg{
			start: uint64(start), end: uint64(end),
			vec: uint64(uintptr(unsafe.Pointer(unsafe.SliceData(vec)))), vecLen: uint64(len(vec)),
			categoryInverted: pageIsFile, categoryMask: pageIsFile,
			categoryAnyofMask: pageIsPresent | pageIsSwapped, returnMask: pageIsFile,
		}
		arg.size = uint64(unsafe.Sizeof(arg))
		n, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(pagemapFD), pagemapScan, uintptr(unsafe.Pointer(&arg)))
		runtime.KeepAlive(vec)
		if errno != 0 {
			return errno
		}
		for _, r := range vec[:n] {
			emit(r.start, r.end)
		}
		if arg.walkEnd <= uint64(start) {
			return fmt.Errorf("pagemap scan made no progress at %#x", start)
		}
		start = uintptr(arg.walkEnd)
	}
	return nil
}
