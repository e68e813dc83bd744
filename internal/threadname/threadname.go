// Package threadname names the OS thread a goroutine is locked to, so that
// top -H, ps -L and /proc/PID/task/*/comm tell a monitor's vCPU threads
// and device workers apart (as QEMU's "CPU 0/KVM" threads are).
package threadname

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// Lock locks the calling goroutine to its OS thread and names the thread
// (Linux keeps the first 15 bytes). The returned function gives the thread
// its old name back and unlocks it; call it before the goroutine moves on
// to other work. A name the kernel refuses leaves the thread as it was.
func Lock(name string) (unlock func()) {
	runtime.LockOSThread()
	var old [16]byte
	errGet := unix.Prctl(unix.PR_GET_NAME, uintptr(ptr(old[:])), 0, 0, 0)
	set(name)
	return func() {
		if errGet == nil {
			n := 0
			for n < len(old) && old[n] != 0 {
				n++
			}
			set(string(old[:n]))
		}
		runtime.UnlockOSThread()
	}
}

func set(name string) {
	b := make([]byte, 16)
	copy(b[:15], name)
	_ = unix.Prctl(unix.PR_SET_NAME, uintptr(ptr(b)), 0, 0, 0)
}
