package net

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// VectorReader is a Backend that can read one frame scattered over several
// buffers (readv). With mergeable receive buffers the device then reads
// each frame straight into the guest's buffers: one copy per byte (the
// kernel's) instead of two (kernel to a staging buffer, staging buffer to
// the guest), which on an emulated or nested host is most of the receive
// path's cost. *TAP is one.
type VectorReader interface {
	// Readv reads one whole frame into iov and returns its length; like
	// Read, an error wrapping unix.EAGAIN at once when none is waiting. The
	// slices alias guest memory: they must not be retained.
	Readv(iov [][]byte) (int, error)
}

// directRx is the outcome of one attempt to receive into guest buffers.
type directRx int

const (
	rxEmpty    directRx = iota // nothing to read, or the backend failed: stop the pass
	rxDone                     // a frame was delivered or dropped: go on
	rxFallback                 // not possible now: use the staging buffer
)

// rxDirect receives one frame straight into held receive chains. It needs
// room for the largest frame in held chains first, so a frame can never
// be cut short; until the guest has posted that much it falls back to
// staging, which can wait for buffers with the frame in hand.
//
// The guest can write its buffers while the kernel fills them; that only
// spoils its own frame. The header is validated and fixed on a copy, then
// written back, so what the device decides on never changes under it.
func (w *worker) rxDirect(vr VectorReader) directRx {
	const need = HeaderLen + MaxFrameLen
	for w.heldCap < need {
		if len(w.held) >= int(w.rx.Size()) || !w.holdRx() {
			return rxFallback
		}
	}
	w.rxIov = w.rxIov[:0]
	left := uint64(need)
	for _, c := range w.held {
		for _, b := range c.Writable {
			if left == 0 {
				break
			}
			if len(w.rxIov) == maxIov {
				return rxFallback
			}
			n := min(left, uint64(b.Len))
			p, err := w.mem.Slice(b.Addr, n)
			if err != nil {
				w.fail(fmt.Errorf("net: receive chain %d: %w", c.Head, err))
				return rxEmpty
			}
			w.rxIov = append(w.rxIov, p)
			left -= n
		}
	}
	n, err := vr.Readv(w.rxIov)
	clear(w.rxIov) // do not keep guest memory reachable from here
	switch {
	case errors.Is(err, unix.EAGAIN):
		return rxEmpty
	case err != nil || n == 0:
		w.d.markBackendDead()
		return rxEmpty
	case n < HeaderLen+minFrameLen || n > need:
		w.d.stats.RxDropped.Add(1)
		return rxDone // the chains stay held for the next frame
	}
	h := hdr(w.rxHdr[:])
	first := w.held[0].Writable
	if err := readChain(w.mem, first, h); err != nil {
		w.fail(fmt.Errorf("net: receive chain %d: %w", w.held[0].Head, err))
		return rxEmpty
	}
	if !w.rxHeaderOK(h) {
		w.d.stats.RxDropped.Add(1)
		return rxDone
	}
	k, rest := 0, uint64(n)
	w.used = w.used[:0]
	for rest > 0 {
		c := w.held[k]
		m := min(rest, c.Writable.Len())
		w.used = append(w.used, usedElem{c.Head, uint32(m)})
		rest -= m
		k++
	}
	h.setNumBuffers(uint16(k))
	if err := writeChain(w.mem, first, h); err != nil {
		w.fail(fmt.Errorf("net: receive chain %d: %w", w.held[0].Head, err))
		return rxEmpty
	}
	w.release(k)
	if err := pushAll(w.mem, w.rx, w.used); err != nil {
		w.fail(err)
		return rxEmpty
	}
	w.delivered(uint64(n))
	w.direct++
	return rxDone
}

// Readv implements VectorReader.
func (t *TAP) Readv(iov [][]byte) (int, error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.closed {
		return 0, fmt.Errorf("net: read %s: %w", t.name, unix.EBADF)
	}
	n, err := unix.Readv(t.fd, iov)
	if err != nil {
		return 0, fmt.Errorf("net: read %s: %w", t.name, err)
	}
	return n, nil
}
