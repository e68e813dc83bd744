package kvm

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ioctl issues an ioctl with an integer argument.
func ioctl(fd int, req uintptr, arg uintptr) (uintptr, error) {
	for {
		r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
		if e == unix.EINTR && req != kvmRun {
			continue
		}
		if e != 0 {
			return r, e
		}
		return r, nil
	}
}

// ioctlPtr issues an ioctl whose argument points at v. v must be a struct whose
// layout matches the kernel's (see TestABISizes) or a byte buffer.
func ioctlPtr[T any](fd int, req uintptr, v *T) (uintptr, error) {
	r, err := ioctl(fd, req, uintptr(unsafe.Pointer(v)))
	// Keep v alive until the kernel has finished with it.
	runtime.KeepAlive(v)
	return r, err
}

// addrOf is the host virtual address of b's first byte, for kernel structures that
// carry user pointers (memory slots, dirty bitmaps).
func addrOf(b []byte) uint64 {
	if len(b) == 0 {
		return 0
	}
	return uint64(uintptr(unsafe.Pointer(&b[0])))
}

// sizeOf reports the in-memory size of a value of type T (for ioctl encoding).
func sizeOf[T any]() uintptr {
	var v T
	return unsafe.Sizeof(v)
}

// runWord returns the first 32-bit word of the kvm_run page, which holds
// request_interrupt_window (byte 0) and immediate_exit (byte 1), for atomic access
// from a goroutine kicking the vCPU.
func runWord(run []byte) *uint32 {
	return (*uint32)(unsafe.Pointer(&run[0]))
}
