package memory

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// remap mmaps the backing file with flags|MAP_FIXED over the existing host
// range. unix.Mmap cannot take an address, hence the raw system call; the
// range is the one mapFile created, so no Go memory is overwritten.
func (m *RAM) remap(flags int) error {
	addr := uintptr(unsafe.Pointer(unsafe.SliceData(m.host)))
	r, _, errno := unix.Syscall6(unix.SYS_MMAP, addr, uintptr(len(m.host)),
		unix.PROT_READ|unix.PROT_WRITE, uintptr(flags|unix.MAP_FIXED), m.file.Fd(), 0)
	if errno != 0 {
		return errno
	}
	if r != addr {
		return fmt.Errorf("kernel mapped at %#x, asked for %#x", r, addr)
	}
	return nil
}
