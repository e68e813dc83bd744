package blk

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/boxd-dev/boxd/internal/threadname"
	"github.com/boxd-dev/boxd/virtio"
	"github.com/boxd-dev/boxd/virtio/internal/eventfd"
	"github.com/boxd-dev/boxd/virtio/queue"
)

// Stats counts a disk's activity; all fields are atomic and may be read at
// any time.
type Stats struct {
	Requests        atomic.Uint64 // requests completed (any status)
	ReadBytes       atomic.Uint64 // bytes read from the backend into the guest
	WriteBytes      atomic.Uint64 // bytes written from the guest to the backend
	Flushes         atomic.Uint64
	Discards        atomic.Uint64 // discard segments applied
	WriteZeroes     atomic.Uint64 // write-zeroes segments applied
	InvalidRequests atomic.Uint64 // malformed chains or requests (guest errors)
	IOErrors        atomic.Uint64 // backend errors
	Unsupported     atomic.Uint64 // requests answered with UNSUPP
	Interrupts      atomic.Uint64 // used-buffer interrupts raised
}

// Device is a virtio-blk device. It implements mmio.Device.
type Device struct {
	backend  Backend
	cfg      Config
	capacity uint64 // in sectors
	offered  uint64
	config   []byte // encoded struct virtio_blk_config, immutable
	id       [IDLen]byte
	stats    Stats

	// The worker sleeps in poll(2) on waker (which Notify and stopWorker
	// signal) and on kickfd, the request queue's ioeventfd when the monitor
	// handed it over (UseKickFDs; else -1), so a guest kick wakes it
	// straight from KVM. Both live until Close.
	waker  *eventfd.Waker
	kickfd int

	mu     sync.Mutex    // guards the worker lifecycle below
	w      *worker       // the current activation; nil when not active
	done   chan struct{} // non-nil while w's goroutine runs
	paused bool          // Pause: w (if any) does not run until Resume
	closed bool
}

// New returns a disk over backend. The device owns backend from now on and
// closes it in Close if it is an io.Closer.
func New(backend Backend, cfg Config) (*Device, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	size := backend.Size()
	if size < 0 {
		return nil, fmt.Errorf("blk: negative backend size %d", size)
	}
	d := &Device{
		backend:  backend,
		cfg:      cfg,
		capacity: uint64(size) / SectorSize,
		offered:  features(backend, cfg),
		kickfd:   -1,
	}
	var err error
	if d.waker, err = eventfd.NewWaker(); err != nil {
		return nil, fmt.Errorf("blk: %w", err)
	}
	copy(d.id[:], cfg.ID)
	d.config = encodeConfig(d.capacity, cfg, d.offered)
	return d, nil
}

// Stats returns the device's counters.
func (d *Device) Stats() *Stats { return &d.stats }

// Capacity returns the disk size in 512-byte sectors.
func (d *Device) Capacity() uint64 { return d.capacity }

// Type implements mmio.Device.
func (d *Device) Type() uint32 { return virtio.DeviceBlock }

// Features implements mmio.Device.
func (d *Device) Features() uint64 { return d.offered }

// QueueSizes implements mmio.Device: one request queue.
func (d *Device) QueueSizes() []uint16 { return []uint16{d.cfg.QueueSize} }

// ReadConfig implements mmio.Device.
func (d *Device) ReadConfig(offset uint64, data []byte) {
	clear(data)
	if offset < uint64(len(d.config)) {
		copy(data, d.config[offset:])
	}
}

// WriteConfig implements mmio.Device. Nothing in the configuration is
// writable (VIRTIO_BLK_F_CONFIG_WCE is not offered).
func (d *Device) WriteConfig(offset uint64, data []byte) {}

// Activate implements mmio.Device: it starts the worker on queue 0.
func (d *Device) Activate(mem virtio.Memory, queues []*queue.Queue, features uint64, t virtio.Transport) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.closed:
		return errors.New("blk: device closed")
	case d.w != nil:
		return errors.New("blk: already active")
	case len(queues) != 1:
		return fmt.Errorf("blk: %d queues, want 1", len(queues))
	case !queues[0].Ready():
		return errors.New("blk: request queue not enabled")
	}
	d.w = &worker{
		d: d, mem: mem, q: queues[0], t: t, features: features,
		maxData: uint64(d.cfg.QueueSize-2) * SizeMax,
	}
	if !d.paused {
		d.startWorker()
	}
	return nil
}

// startWorker runs w on a new goroutine. mu held, w set, none running.
func (d *Device) startWorker() {
	d.done = make(chan struct{})
	d.w.stop.Store(false)
	go d.w.run(d.done)
}

// Notify implements mmio.Device: it wakes the worker. It never blocks.
func (d *Device) Notify(q int) { d.waker.Wake() }

// UseKickFDs implements mmio.KickFDUser: the worker polls a duplicate of
// the request queue's ioeventfd beside its own wake-up eventfd.
func (d *Device) UseKickFDs(fds []int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.closed:
		return errors.New("blk: device closed")
	case len(fds) != 1:
		return fmt.Errorf("blk: %d kick fds, want 1", len(fds))
	case d.kickfd >= 0:
		return errors.New("blk: kick fd already set")
	case d.done != nil:
		return errors.New("blk: kick fd set while the worker runs")
	}
	fd, err := eventfd.Dup(fds[0])
	if err != nil {
		return fmt.Errorf("blk: %w", err)
	}
	d.kickfd = fd
	return nil
}

// Reset implements mmio.Device: it stops the worker and waits for it, so the
// device no longer touches guest memory when Reset returns.
func (d *Device) Reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopWorker()
	d.w = nil
}

// stopWorker ends the worker's goroutine, if any: the request it is serving
// completes, the ones after it wait in the ring. mu held.
func (d *Device) stopWorker() {
	if d.done == nil {
		return
	}
	d.w.stop.Store(true)
	d.waker.Wake()
	<-d.done
	d.done = nil
	d.waker.Drain() // drop a stale wake-up
}

// Close stops the device for good and closes the backend.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopWorker()
	d.w = nil
	if d.closed {
		return nil
	}
	d.closed = true
	d.waker.Close()
	if d.kickfd >= 0 {
		unix.Close(d.kickfd)
	}
	if c, ok := d.backend.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// worker is the state of one activation, owned by its goroutine.
type worker struct {
	d        *Device
	mem      virtio.Memory
	q        *queue.Queue
	t        virtio.Transport
	features uint64
	maxData  uint64 // largest data part of a read or write request
	failed   bool   // the ring is unusable; wait for reset

	stop atomic.Bool // set by stopWorker: finish the request in hand and return

	// Scratch space reused across requests to keep the data path free of
	// allocations.
	hdr    [headerLen]byte
	status [1]byte
	bufs   queue.Buffers
	iov    [][]byte
}

func (w *worker) run(done chan struct{}) {
	defer close(done)
	// Its own named thread: it sleeps only in poll, and the thread's CPU
	// time is then the device's (top -H, /proc/PID/task).
	defer threadname.Lock("virtio-blk")()
	fds := []unix.PollFd{{Fd: int32(w.d.waker.Fd()), Events: unix.POLLIN}}
	if w.d.kickfd >= 0 {
		fds = append(fds, unix.PollFd{Fd: int32(w.d.kickfd), Events: unix.POLLIN})
	}
	// The driver may have queued requests before its first kick arrived (or
	// before a snapshot was restored): look once before sleeping.
	w.process()
	for !w.stop.Load() {
		if _, err := unix.Poll(fds, -1); err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			w.fail(fmt.Errorf("poll: %w", err))
			return
		}
		// Swallow the wake-ups before looking at the ring: a kick that
		// comes while process runs wakes the next poll.
		for _, f := range fds {
			if f.Revents != 0 {
				eventfd.Drain(int(f.Fd))
			}
		}
		w.process()
	}
}

// process completes every available request, interrupting as the driver
// asks. Pop re-enables notifications when the ring runs dry, so returning
// here never strands a request.
func (w *worker) process() {
	if w.failed {
		return
	}
	for {
		if w.stop.Load() {
			// Pause or reset: the requests left in the ring have not
			// started; the next worker (or driver) finds them there.
			return
		}
		c, err := w.q.Pop(w.mem)
		if err != nil {
			if !w.popError(err) {
				return
			}
			continue
		}
		if c == nil {
			return
		}
		written := w.handle(c)
		w.d.stats.Requests.Add(1)
		w.complete(c.Head, written)
		if w.failed {
			return
		}
	}
}

// popError handles a Pop failure and reports whether processing can go on:
// a malformed chain is counted (and handed back if its head is valid), a
// broken ring fails the device.
func (w *worker) popError(err error) bool {
	var ce *queue.ChainError
	switch {
	case errors.As(err, &ce):
		w.d.stats.InvalidRequests.Add(1)
		w.complete(ce.Head, 0)
		return !w.failed
	case errors.Is(err, queue.ErrInvalidChain):
		w.d.stats.InvalidRequests.Add(1)
		return true
	}
	w.fail(err)
	return false
}

func (w *worker) complete(head uint16, written uint32) {
	if err := w.q.Push(w.mem, head, written); err != nil {
		w.fail(err)
		return
	}
	if w.q.NeedsInterrupt(w.mem) {
		w.d.stats.Interrupts.Add(1)
		// A failed trigger is counted by the transport; the driver will
		// find the completion on its next interrupt or poll.
		_ = w.t.Signal(virtio.InterruptUsedBuffer)
	}
}

func (w *worker) fail(err error) {
	w.failed = true
	w.t.Fail(fmt.Errorf("blk: %w", err))
}
