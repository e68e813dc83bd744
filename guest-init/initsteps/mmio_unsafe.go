package initsteps

import (
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// storeMMIO maps the page holding addr from a /dev/mem-like file and stores v
// there as one 4-byte access. A device register decodes the access width,
// and only an atomic store is guaranteed to be a single 32-bit MOV rather
// than whatever byte stores the compiler chooses.
func storeMMIO(devmem string, addr uint64, v uint32) error {
	if addr%4 != 0 {
		return fmt.Errorf("mmio store at %#x: not 4-byte aligned", addr)
	}
	page := uint64(os.Getpagesize())
	base := addr &^ (page - 1)
	f, err := os.OpenFile(devmem, os.O_RDWR|os.O_SYNC, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), int64(base), int(page), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mmap %s at %#x: %w", devmem, base, err)
	}
	defer unix.Munmap(m)
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&m[addr-base])), v)
	return nil
}
