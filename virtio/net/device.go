package net

import (
	"errors"
	"fmt"
	stdnet "net"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/boxd-dev/boxd/virtio"
	"github.com/boxd-dev/boxd/virtio/internal/eventfd"
	"github.com/boxd-dev/boxd/virtio/queue"
)

// Device is a virtio-net device (one receive and one transmit queue) over a
// Backend. It implements mmio.Device.
type Device struct {
	cfg     Config
	backend Backend
	offl    Offloader // the backend, if it is one; else nil
	offers  uint64
	stats   Stats
	linkUp  atomic.Bool

	// epfd waits for waker (which Notify signals), for the queues'
	// ioeventfds when the monitor handed them over (qfds, UseKickFDs), so a
	// guest kick wakes the worker straight from KVM, and for readiness of
	// the backend's fd. All live until Close.
	epfd  int
	waker *eventfd.Waker
	qfds  []int
	// running is true while a worker runs, so Notify skips the syscall
	// when nobody listens.
	running atomic.Bool
	// backendDead is set by a worker when the backend hung up or failed a
	// read; its fd is then out of the epoll set for good.
	backendDead atomic.Bool

	mu     sync.Mutex // guards the lifecycle below
	w      *worker    // the current activation, nil when not activated
	paused bool       // Pause: w (if any) does not run until Resume
	// linkChanged: SetLinkUp while paused; Resume tells the driver.
	linkChanged bool
	closed      bool
	interest    uint32 // epoll events registered for the backend fd; owned by w while it runs
}

// New returns a network device for cfg. On success the device owns
// cfg.Backend; on error the caller still does.
func New(cfg Config) (*Device, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.MAC = append(stdnet.HardwareAddr(nil), cfg.MAC...)
	d := &Device{cfg: cfg, backend: cfg.Backend, offers: offered(cfg), epfd: -1}
	d.offl, _ = cfg.Backend.(Offloader)
	d.linkUp.Store(true)
	var err error
	if d.waker, err = eventfd.NewWaker(); err != nil {
		return nil, fmt.Errorf("net: %w", err)
	}
	if d.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		d.waker.Close()
		return nil, fmt.Errorf("net: epoll_create1: %w", err)
	}
	fd := cfg.Backend.Fd()
	for _, r := range []struct {
		fd     int
		events uint32
	}{{d.waker.Fd(), unix.EPOLLIN}, {fd, 0}} {
		// The backend starts with no interest: the worker asks for
		// readability only while the guest has receive buffers.
		ev := unix.EpollEvent{Events: r.events, Fd: int32(r.fd)}
		if err := unix.EpollCtl(d.epfd, unix.EPOLL_CTL_ADD, r.fd, &ev); err != nil {
			unix.Close(d.epfd)
			d.waker.Close()
			return nil, fmt.Errorf("net: epoll_ctl add fd %d: %w", r.fd, err)
		}
	}
	if d.offl != nil {
		if err := d.offl.SetOffload(0); err != nil {
			unix.Close(d.epfd)
			d.waker.Close()
			return nil, fmt.Errorf("net: %w", err)
		}
	}
	return d, nil
}

// MAC returns the guest's MAC address.
func (d *Device) MAC() stdnet.HardwareAddr { return append(stdnet.HardwareAddr(nil), d.cfg.MAC...) }

// Stats returns the device's counters.
func (d *Device) Stats() *Stats { return &d.stats }

// Type implements mmio.Device.
func (d *Device) Type() uint32 { return virtio.DeviceNet }

// Features implements mmio.Device.
func (d *Device) Features() uint64 { return d.offers }

// QueueSizes implements mmio.Device: receive queue 0, transmit queue 1.
func (d *Device) QueueSizes() []uint16 { return []uint16{d.cfg.QueueSize, d.cfg.QueueSize} }

// ReadConfig implements mmio.Device.
func (d *Device) ReadConfig(offset uint64, data []byte) {
	clear(data)
	var b [configLen]byte
	encodeConfig(b[:], d.cfg, d.linkUp.Load())
	if offset < configLen {
		copy(data, b[offset:])
	}
}

// WriteConfig implements mmio.Device. A VERSION_1 driver writes nothing
// here (the MAC is writable only for legacy drivers), so writes are ignored.
func (d *Device) WriteConfig(offset uint64, data []byte) {}

// SetLinkUp sets the link status the guest reads (VIRTIO_NET_S_LINK_UP) and,
// if the driver negotiated VIRTIO_NET_F_STATUS, tells it with a
// configuration-change interrupt. The link starts up. Frames still flow
// while the link is down; the guest stops using it.
func (d *Device) SetLinkUp(up bool) {
	if d.linkUp.Swap(up) == up {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.paused {
		// No interrupts while paused: Resume tells the driver.
		d.linkChanged = true
		return
	}
	d.signalLink()
}

// signalLink tells a driver that negotiated VIRTIO_NET_F_STATUS that the
// link status changed. mu held.
func (d *Device) signalLink() {
	if d.w != nil && d.w.features&FeatureStatus != 0 {
		_ = d.w.t.Signal(virtio.InterruptConfigChange)
	}
}

// Activate implements mmio.Device: it applies the negotiated offloads to
// the backend and starts the worker.
func (d *Device) Activate(mem virtio.Memory, queues []*queue.Queue, features uint64, t virtio.Transport) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.closed:
		return ErrClosed
	case d.w != nil:
		return errors.New("net: already active")
	case len(queues) != 2:
		return fmt.Errorf("net: %d queues, want 2", len(queues))
	}
	if err := checkFeatures(features); err != nil {
		return err
	}
	if d.offl != nil {
		if err := d.offl.SetOffload(rxOffload(features)); err != nil {
			// The backend then hands over plain frames only, which every
			// driver accepts: carry on.
			d.stats.BackendErrors.Add(1)
		}
	}
	d.w = newWorker(d, mem, queues[RxQueue], queues[TxQueue], features, t)
	if !d.paused {
		d.startWorker()
	}
	return nil
}

// startWorker runs d.w on a new goroutine. mu held, d.w set and not running.
func (d *Device) startWorker() {
	w := d.w
	w.stop.Store(false)
	w.done = make(chan struct{})
	d.running.Store(true)
	go w.run()
}

// Notify implements mmio.Device: it wakes the worker. It never blocks on
// the guest or the backend.
func (d *Device) Notify(q int) {
	if (q != RxQueue && q != TxQueue) || !d.running.Load() {
		return
	}
	d.waker.Wake()
}

// UseKickFDs implements mmio.KickFDUser: duplicates of the receive and
// transmit queues' ioeventfds join the worker's epoll set.
func (d *Device) UseKickFDs(fds []int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.closed:
		return ErrClosed
	case len(fds) != 2:
		return fmt.Errorf("net: %d kick fds, want 2", len(fds))
	case d.qfds != nil:
		return errors.New("net: kick fds already set")
	}
	var qfds []int
	for _, fd := range fds {
		q, err := eventfd.Dup(fd)
		if err == nil {
			ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(q)}
			if err = unix.EpollCtl(d.epfd, unix.EPOLL_CTL_ADD, q, &ev); err != nil {
				unix.Close(q)
				err = fmt.Errorf("epoll_ctl add fd %d: %w", q, err)
			}
		}
		if err != nil {
			for _, q := range qfds {
				unix.Close(q) // closing it also takes it out of the epoll set
			}
			return fmt.Errorf("net: %w", err)
		}
		qfds = append(qfds, q)
	}
	// A worker already running finds the new fds in its next epoll_wait.
	d.qfds = qfds
	return nil
}

// Reset implements mmio.Device: it stops the worker and waits for it, so
// the device no longer touches guest memory when Reset returns. A frame read
// from the backend but not yet delivered is dropped.
func (d *Device) Reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopWorker()
	if d.offl != nil {
		// Until the next driver says what it accepts, frames the backend
		// queues must be plain.
		if err := d.offl.SetOffload(0); err != nil {
			d.stats.BackendErrors.Add(1)
		}
	}
}

// stopWorker ends the activation, if any. mu held.
func (d *Device) stopWorker() {
	w := d.w
	if w == nil {
		return
	}
	d.haltWorker()
	d.w = nil
	if w.staged > 0 {
		d.stats.RxDropped.Add(1)
	}
}

// haltWorker stops d.w's goroutine, if it runs, and waits for it; the
// worker's state stays for a later startWorker. mu held.
func (d *Device) haltWorker() {
	w := d.w
	if w == nil || !d.running.Load() {
		return
	}
	w.stop.Store(true)
	d.waker.Wake()
	<-w.done
	d.running.Store(false)
	// Interest from this run must not wake the next one.
	d.setInterest(0)
	d.waker.Drain() // drop a stale kick
}

// setInterest registers events for the backend fd. Called by the running
// worker, or with mu held when none runs.
func (d *Device) setInterest(ev uint32) {
	if ev == d.interest || d.backendDead.Load() {
		return
	}
	fd := d.backend.Fd()
	e := unix.EpollEvent{Events: ev, Fd: int32(fd)}
	if err := unix.EpollCtl(d.epfd, unix.EPOLL_CTL_MOD, fd, &e); err != nil {
		d.stats.BackendErrors.Add(1)
		return
	}
	d.interest = ev
}

// markBackendDead takes the backend out of the epoll set for good: a
// hung-up fd polls ready forever and would make the worker spin.
func (d *Device) markBackendDead() {
	if d.backendDead.Swap(true) {
		return
	}
	d.stats.BackendErrors.Add(1)
	fd := d.backend.Fd()
	_ = unix.EpollCtl(d.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	d.interest = 0
}

// Close stops the device for good, releases its descriptors and closes the
// backend. It must not race with the transport's calls (stop the vCPUs
// first); a second Close does nothing.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopWorker()
	if d.closed {
		return nil
	}
	d.closed = true
	d.waker.Close()
	unix.Close(d.epfd)
	for _, fd := range d.qfds {
		unix.Close(fd)
	}
	if err := d.backend.Close(); err != nil {
		return fmt.Errorf("net: close backend: %w", err)
	}
	return nil
}
