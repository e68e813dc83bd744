// Package eventfd holds the few eventfd operations the virtio device workers
// share: waking a worker, swallowing a wake-up, and keeping a private
// duplicate of a queue's ioeventfd (mmio.KickFDUser).
package eventfd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// New returns a non-blocking, close-on-exec eventfd.
func New() (int, error) {
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("eventfd: %w", err)
	}
	return fd, nil
}

// Signal adds one to eventfd fd. A saturated counter (EAGAIN) already wakes
// its reader, so that is not an error.
func Signal(fd int) error {
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	if _, err := unix.Write(fd, one[:]); err != nil && !errors.Is(err, unix.EAGAIN) {
		return err
	}
	return nil
}

// Drain resets eventfd fd to zero (a non-blocking fd that is already zero
// stays so) and reports whether it was signalled.
func Drain(fd int) bool {
	var buf [8]byte
	n, _ := unix.Read(fd, buf[:])
	return n == len(buf)
}

// Dup returns a close-on-exec duplicate of fd that shares its counter, after
// checking that fd is a non-blocking eventfd: a worker that polls it must
// never block reading it.
func Dup(fd int) (int, error) {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return -1, fmt.Errorf("eventfd: fd %d: %w", fd, err)
	}
	if fl&unix.O_NONBLOCK == 0 {
		return -1, fmt.Errorf("eventfd: fd %d is blocking", fd)
	}
	if link, err := readlink(fd); err != nil || link != "anon_inode:[eventfd]" {
		return -1, fmt.Errorf("eventfd: fd %d is not an eventfd (%q)", fd, link)
	}
	d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("eventfd: dup fd %d: %w", fd, err)
	}
	return d, nil
}

func readlink(fd int) (string, error) {
	buf := make([]byte, 64)
	n, err := unix.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd), buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// Waker is an eventfd a device worker sleeps on. Wake may be called from
// any goroutine at any time, also during and after Close, when it does
// nothing: a notification may come from a vCPU while the device closes.
type Waker struct {
	mu     sync.RWMutex // read-held while Wake signals fd; write-held while Close closes it
	fd     int
	closed bool
}

// NewWaker returns a Waker with its eventfd.
func NewWaker() (*Waker, error) {
	fd, err := New()
	if err != nil {
		return nil, err
	}
	return &Waker{fd: fd}, nil
}

// Fd returns the eventfd, for the worker's poll or epoll set.
func (w *Waker) Fd() int { return w.fd }

// Wake makes the worker's poll return.
func (w *Waker) Wake() {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if !w.closed {
		_ = Signal(w.fd)
	}
}

// Drain swallows a pending wake-up.
func (w *Waker) Drain() {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if !w.closed {
		Drain(w.fd)
	}
}

// Close closes the eventfd; later calls do nothing.
func (w *Waker) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	return unix.Close(w.fd)
}
