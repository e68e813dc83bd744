package agent

import (
	"encoding/binary"
	"unsafe"

	"golang.org/x/sys/unix"
)

// addEntropy issues RNDADDENTROPY, crediting all of seed. The argument is
// struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; },
// built as bytes in the machine's order; the ioctl needs its address.
func addEntropy(fd int, seed []byte) error {
	b := make([]byte, 8+len(seed))
	binary.NativeEndian.PutUint32(b[0:4], uint32(len(seed)*8))
	binary.NativeEndian.PutUint32(b[4:8], uint32(len(seed)))
	copy(b[8:], seed)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.RNDADDENTROPY, uintptr(unsafe.Pointer(&b[0])))
	if errno != 0 {
		return errno
	}
	return nil
}
