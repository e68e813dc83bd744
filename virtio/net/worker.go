package net

import (
	"errors"
	"fmt"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/boxd-dev/boxd/internal/threadname"
	"github.com/boxd-dev/boxd/virtio"
	"github.com/boxd-dev/boxd/virtio/internal/eventfd"
	"github.com/boxd-dev/boxd/virtio/queue"
)

// budget is how many frames one direction handles before the worker looks
// at the other one and at its events, so neither starves.
const budget = 64

// worker is the state of one activation. It runs on its own goroutine and
// owns the queues, the backend's I/O and the epoll registration until it
// stops; nothing in it is shared except stop and done.
type worker struct {
	d        *Device
	mem      virtio.Memory
	t        virtio.Transport
	rx, tx   *queue.Queue
	features uint64
	mrg      bool // VIRTIO_NET_F_MRG_RXBUF negotiated

	stop atomic.Bool
	done chan struct{} // closed when run returns; a new one per run

	failed bool // a ring is unusable: idle until reset

	// Receive side. A frame is read from the backend only while at least
	// one receive chain is held, so the kernel keeps frames queued while the
	// guest has no buffers.
	stage   []byte          // the frame being delivered, header first
	staged  int             // its length; 0 when none
	held    []*queue.Chain  // popped receive chains, in ring order
	heldCap uint64          // writable bytes in held
	used    []usedElem      // scratch for pushing a merged frame
	rxHdr   [HeaderLen]byte // a received header, copied out of guest memory (rxdirect.go)
	rxIov   [][]byte        // the guest buffers a frame is read into (rxdirect.go)
	direct  uint64          // frames received straight into guest buffers (for tests)

	// Transmit side.
	txPending *queue.Chain    // chain whose write hit EAGAIN; iov still describes it
	iov       [][]byte        // the frame being written: header copy, then guest memory
	hdr       [HeaderLen]byte // the validated header, copied out of guest memory
	bounce    []byte          // for chains with more buffers than one writev takes
}

func newWorker(d *Device, mem virtio.Memory, rx, tx *queue.Queue, features uint64, t virtio.Transport) *worker {
	return &worker{
		d: d, mem: mem, t: t, rx: rx, tx: tx, features: features,
		mrg:   features&FeatureMrgRxbuf != 0,
		stage: make([]byte, HeaderLen+MaxFrameLen+1),
	}
}

// run serves the queues until stop is set. It sleeps only in epoll_wait,
// on the kick eventfd (Notify, Reset) and on the backend fd with the
// interest pass leaves behind: readable while receive buffers are held,
// writable while a transmit is blocked.
func (w *worker) run() {
	defer close(w.done)
	// Its own named thread: it sleeps only in epoll_wait, and the thread's
	// CPU time is then the device's (top -H, /proc/PID/task).
	defer threadname.Lock("virtio-net")()
	var events [4]unix.EpollEvent
	for !w.stop.Load() {
		more := w.pass()
		w.d.setInterest(w.interest())
		timeout := -1
		if more {
			timeout = 0
		}
		n, err := unix.EpollWait(w.d.epfd, events[:], timeout)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			w.fail(fmt.Errorf("net: epoll_wait: %w", err))
			return
		}
		for _, ev := range events[:n] {
			switch int(ev.Fd) {
			case w.d.waker.Fd():
				w.d.waker.Drain()
			case w.d.backend.Fd():
				if ev.Events&(unix.EPOLLERR|unix.EPOLLHUP) != 0 {
					w.d.markBackendDead()
				}
			default:
				// A queue's ioeventfd (UseKickFDs): the guest kicked.
				eventfd.Drain(int(ev.Fd))
			}
		}
	}
}

// pass serves both queues once, up to budget frames each, and reports
// whether work is left over.
func (w *worker) pass() (more bool) {
	if w.failed {
		return false
	}
	more = w.txPass()
	if w.failed {
		return false
	}
	return w.rxPass() || more
}

// interest returns the epoll events the worker waits for on the backend.
func (w *worker) interest() uint32 {
	var ev uint32
	if w.failed {
		return 0
	}
	if w.rx.Ready() && w.staged == 0 && len(w.held) > 0 {
		ev |= unix.EPOLLIN
	}
	if w.txPending != nil {
		ev |= unix.EPOLLOUT
	}
	return ev
}

// pop returns the next well-formed chain of q, or nil when the ring is
// empty (notifications then re-enabled) or unusable. Malformed chains are
// returned to the driver empty and counted in invalid.
func (w *worker) pop(q *queue.Queue, invalid *atomic.Uint64, ok func(*queue.Chain) bool) *queue.Chain {
	for {
		c, err := q.Pop(w.mem)
		var ce *queue.ChainError
		switch {
		case err == nil && c == nil:
			return nil
		case err == nil && ok(c):
			return c
		case err == nil:
			invalid.Add(1)
			if !w.push(q, c.Head, 0) {
				return nil
			}
		case errors.As(err, &ce):
			invalid.Add(1)
			if !w.push(q, ce.Head, 0) {
				return nil
			}
		case errors.Is(err, queue.ErrInvalidChain):
			invalid.Add(1) // the head itself was out of range: nothing to return
		default:
			w.fail(err)
			return nil
		}
	}
}

// push returns one chain to the driver; false means the device failed.
func (w *worker) push(q *queue.Queue, head uint16, n uint32) bool {
	if err := q.Push(w.mem, head, n); err != nil {
		w.fail(err)
		return false
	}
	return true
}

// interrupt raises a used-buffer interrupt if the driver wants one for what
// was pushed on q since the last call.
func (w *worker) interrupt(q *queue.Queue) {
	if !w.failed && q.NeedsInterrupt(w.mem) {
		w.d.stats.Interrupts.Add(1)
		_ = w.t.Signal(virtio.InterruptUsedBuffer) // counted by the transport
	}
}

// fail stops the worker using its queues until reset and tells the driver
// (DEVICE_NEEDS_RESET).
func (w *worker) fail(err error) {
	if w.failed {
		return
	}
	w.failed = true
	w.t.Fail(err)
}

// writeChain scatters p over bufs, which hold at least len(p) bytes.
func writeChain(mem virtio.Memory, bufs queue.Buffers, p []byte) error {
	for _, b := range bufs {
		if len(p) == 0 {
			break
		}
		n := min(len(p), int(b.Len))
		if _, err := mem.WriteAt(p[:n], int64(b.Addr)); err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

// readChain gathers the first len(p) bytes of bufs into p; bufs hold at
// least that many.
func readChain(mem virtio.Memory, bufs queue.Buffers, p []byte) error {
	for _, b := range bufs {
		if len(p) == 0 {
			break
		}
		n := min(len(p), int(b.Len))
		if _, err := mem.ReadAt(p[:n], int64(b.Addr)); err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}
