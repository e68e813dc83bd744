package net

import (
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// TAP is a Linux TAP interface opened through /dev/net/tun with
// IFF_TAP|IFF_NO_PI|IFF_VNET_HDR: each read and write is one Ethernet frame
// prefixed by a HeaderLen-byte virtio_net_hdr_v1, exactly what the guest
// exchanges with the device. Its file descriptor is non-blocking. It
// implements Offloader.
//
// Creating the link's configuration (up, addresses, bridge) is the
// caller's business; OpenTAP only attaches to (or creates) the interface.
type TAP struct {
	name string

	mu     sync.RWMutex // write-held by Close; read-held around fd use
	fd     int
	closed bool
}

var _ Offloader = (*TAP)(nil)

// OpenTAP opens the TAP interface name, creating it if it does not exist
// (in the calling thread's network namespace); a name like "tap%d" lets
// the kernel pick one, see Name. An existing interface must be a TAP that
// is not multi-queue.
func OpenTAP(name string) (*TAP, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("net: open /dev/net/tun: %w", err)
	}
	t, err := attachTAP(fd, name)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return t, nil
}

func attachTAP(fd int, name string) (*TAP, error) {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return nil, fmt.Errorf("net: TAP name %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return nil, fmt.Errorf("net: TUNSETIFF %q: %w", name, err)
	}
	t := &TAP{name: ifr.Name(), fd: fd}
	// The header carries num_buffers (12 bytes, not the default 10) and is
	// little endian as virtio 1.x requires, whatever the host's order.
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, HeaderLen); err != nil {
		return nil, fmt.Errorf("net: TUNSETVNETHDRSZ on %s: %w", t.name, err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETLE, 1); err != nil {
		return nil, fmt.Errorf("net: TUNSETVNETLE on %s: %w", t.name, err)
	}
	if err := t.SetOffload(0); err != nil {
		return nil, err
	}
	return t, nil
}

// Name returns the interface name the kernel gave the TAP.
func (t *TAP) Name() string { return t.name }

// Fd returns the TAP's non-blocking file descriptor (valid until Close).
func (t *TAP) Fd() int { return t.fd }

// Read reads one frame, header first. It returns an error wrapping
// unix.EAGAIN when none is queued.
func (t *TAP) Read(p []byte) (int, error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.closed {
		return 0, fmt.Errorf("net: read %s: %w", t.name, unix.EBADF)
	}
	n, err := unix.Read(t.fd, p)
	if err != nil {
		return 0, fmt.Errorf("net: read %s: %w", t.name, err)
	}
	return n, nil
}

// Writev writes one frame, header first, gathered from iov. The kernel
// completes a partial checksum and segments a GSO frame as the header asks.
func (t *TAP) Writev(iov [][]byte) (int, error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.closed {
		return 0, fmt.Errorf("net: write %s: %w", t.name, unix.EBADF)
	}
	n, err := unix.Writev(t.fd, iov)
	if err != nil {
		return 0, fmt.Errorf("net: write %s: %w", t.name, err)
	}
	return n, nil
}

// SetOffload implements Offloader with TUNSETOFFLOAD: the kernel may then
// hand over frames with partial checksums and TSO frames of the given
// kinds; without a flag it completes or segments them itself first.
func (t *TAP) SetOffload(o Offload) error {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.closed {
		return fmt.Errorf("net: TUNSETOFFLOAD on %s: %w", t.name, unix.EBADF)
	}
	if err := unix.IoctlSetInt(t.fd, unix.TUNSETOFFLOAD, int(o)); err != nil {
		return fmt.Errorf("net: TUNSETOFFLOAD %#x on %s: %w", uint(o), t.name, err)
	}
	return nil
}

// Close detaches from the interface; a TAP the kernel created for OpenTAP
// (not made persistent) disappears with it.
func (t *TAP) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	if err := unix.Close(t.fd); err != nil {
		return fmt.Errorf("net: close %s: %w", t.name, err)
	}
	return nil
}
