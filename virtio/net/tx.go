package net

import (
	"errors"

	"golang.org/x/sys/unix"

	"github.com/boxd-dev/boxd/virtio/queue"
)

// maxIov is the most buffers one writev takes (IOV_MAX); a chain with more
// is copied into a bounce buffer first.
const maxIov = 1024

// txPass writes transmit chains to the backend, one write per frame, up to
// budget frames, and reports whether it stopped only because of the budget.
// A write that hits EAGAIN keeps its chain; the worker then waits for the
// backend to become writable instead of retrying.
func (w *worker) txPass() (more bool) {
	if !w.tx.Ready() {
		return false
	}
	defer w.interrupt(w.tx)
	for range budget {
		c := w.txPending
		if c == nil {
			if c = w.pop(w.tx, &w.d.stats.TxInvalid, w.prepareTx); c == nil {
				return false
			}
		}
		n, err := w.d.backend.Writev(w.iov)
		if errors.Is(err, unix.EAGAIN) {
			w.txPending = c
			return false
		}
		w.txPending = nil
		if err != nil {
			// A TAP that is down answers EIO; a bad offload header EINVAL.
			w.d.stats.TxDropped.Add(1)
			w.d.stats.BackendErrors.Add(1)
		} else {
			w.d.stats.TxFrames.Add(1)
			w.d.stats.TxBytes.Add(uint64(max(n-HeaderLen, 0)))
		}
		// The device writes nothing into a transmit chain.
		if !w.push(w.tx, c.Head, 0) {
			return false
		}
	}
	return true
}

// prepareTx validates a transmit chain and points iov at its frame: the
// header as copied and checked here (so the guest cannot change it between
// the check and the write), then the rest straight from guest memory.
func (w *worker) prepareTx(c *queue.Chain) bool {
	if len(c.Writable) != 0 {
		return false // the driver must not give the device writable buffers to send
	}
	total := c.Readable.Len()
	if total < HeaderLen+minFrameLen || total > HeaderLen+MaxFrameLen {
		return false
	}
	h := hdr(w.hdr[:])
	if err := readChain(w.mem, c.Readable, h); err != nil {
		return false
	}
	if !w.txHeaderOK(h, total-HeaderLen) {
		return false
	}
	h.setNumBuffers(0) // meaningless on transmit
	w.iov = append(w.iov[:0], w.hdr[:])
	if len(c.Readable) >= maxIov {
		if w.bounce == nil {
			w.bounce = make([]byte, MaxFrameLen)
		}
		p := w.bounce[:total-HeaderLen]
		rest, err := c.Readable.Range(HeaderLen, uint64(len(p)))
		if err != nil || readChain(w.mem, rest, p) != nil {
			return false
		}
		w.iov = append(w.iov, p)
		return true
	}
	skip := uint64(HeaderLen)
	for _, b := range c.Readable {
		addr, n := b.Addr, uint64(b.Len)
		if skip > 0 {
			s := min(skip, n)
			addr, n, skip = addr+s, n-s, skip-s
			if n == 0 {
				continue
			}
		}
		p, err := w.mem.Slice(addr, n)
		if err != nil {
			return false
		}
		w.iov = append(w.iov, p)
	}
	return true
}

// txHeaderOK checks a transmit header against the specification and the
// negotiated features (virtio 1.2 §5.1.6.2): only NEEDS_CSUM may be set,
// and only with VIRTIO_NET_F_CSUM; the checksum location lies inside the
// frame; a GSO type needs its HOST_TSO feature, NEEDS_CSUM and a segment
// size. The kernel checks again, but the guest should not be able to reach
// it with what the device never offered.
func (w *worker) txHeaderOK(h hdr, frameLen uint64) bool {
	f := h.flags()
	if f&^HdrNeedsCsum != 0 {
		return false
	}
	if f&HdrNeedsCsum != 0 {
		if w.features&FeatureCsum == 0 {
			return false
		}
		if uint64(h.csumStart())+uint64(h.csumOffset())+2 > frameLen {
			return false
		}
	}
	if uint64(h.hdrLen()) > frameLen {
		return false
	}
	var need uint64
	switch h.gsoType() {
	case GSONone:
		return true
	case GSOTCPv4:
		need = FeatureHostTSO4
	case GSOTCPv6:
		need = FeatureHostTSO6
	default:
		return false // UDP, ECN and unknown types were never offered
	}
	return w.features&need != 0 && f&HdrNeedsCsum != 0 && h.gsoSize() != 0
}
