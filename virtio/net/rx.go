package net

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/boxd-dev/boxd/virtio"
	"github.com/boxd-dev/boxd/virtio/queue"
)

// rxPass moves frames from the backend into receive chains, up to budget
// frames, and reports whether it stopped only because of the budget.
//
// The order is what keeps frames from being lost: a chain is popped before
// the backend is read, so a frame is only taken from the kernel when the
// guest has somewhere to put it. When the ring runs dry, Pop has re-enabled
// notifications, the worker drops its interest in the backend, and the
// guest's next kick resumes reception; the frames wait in the kernel's
// queue meanwhile.
func (w *worker) rxPass() (more bool) {
	if !w.rx.Ready() {
		return false
	}
	defer w.interrupt(w.rx)
	for range budget {
		if w.staged == 0 && w.d.backendDead.Load() {
			return false
		}
		// A frame staged before a pause may have lost its chains to Unpop:
		// it needs one again before it can be delivered.
		if len(w.held) == 0 && !w.holdRx() {
			return false
		}
		if vr, ok := w.d.backend.(VectorReader); ok && w.mrg && w.staged == 0 {
			switch w.rxDirect(vr) {
			case rxEmpty:
				return false
			case rxDone:
				continue
			}
		}
		if w.staged == 0 {
			if !w.readFrame() {
				return false
			}
			if w.staged == 0 {
				continue // dropped
			}
		}
		if !w.deliver() {
			return false
		}
	}
	return true
}

// holdRx pops one more receive chain into held; false if there is none.
func (w *worker) holdRx() bool {
	c := w.pop(w.rx, &w.d.stats.RxInvalid, rxChainOK)
	if c == nil {
		return false
	}
	w.held = append(w.held, c)
	w.heldCap += c.Writable.Len()
	return true
}

// rxChainOK: a receive chain is device-writable only and has room for at
// least the header (virtio 1.2 §5.1.6.3.1 asks that much of every buffer).
func rxChainOK(c *queue.Chain) bool {
	return len(c.Readable) == 0 && c.Writable.Len() >= HeaderLen
}

// readFrame reads one frame into stage and checks it. It returns false if
// the backend has nothing (or failed); staged is 0 if the frame was dropped.
func (w *worker) readFrame() bool {
	n, err := w.d.backend.Read(w.stage)
	switch {
	case errors.Is(err, unix.EAGAIN):
		return false
	case err != nil || n == 0:
		// Not EAGAIN and no frame: the backend is gone (a TAP whose
		// device was deleted, a socket whose peer closed).
		w.d.markBackendDead()
		return false
	case n < HeaderLen+minFrameLen || n > HeaderLen+MaxFrameLen:
		w.d.stats.RxDropped.Add(1)
		return true
	case !w.rxHeaderOK(hdr(w.stage[:HeaderLen])):
		w.d.stats.RxDropped.Add(1)
		return true
	}
	w.staged = n
	return true
}

// rxHeaderOK checks a received header against what the driver accepted and
// clears the flags it did not. A frame the guest cannot take (an offload it
// did not negotiate, which a backend may still hold from before a reset) is
// refused.
func (w *worker) rxHeaderOK(h hdr) bool {
	var allowed uint8
	if w.features&FeatureGuestCsum != 0 {
		allowed = HdrNeedsCsum | HdrDataValid
	}
	f := h.flags()
	if f&HdrNeedsCsum != 0 && allowed&HdrNeedsCsum == 0 {
		return false
	}
	h.setFlags(f & allowed)
	switch h.gsoType() {
	case GSONone:
		return true
	case GSOTCPv4:
		return w.features&FeatureGuestTSO4 != 0
	case GSOTCPv6:
		return w.features&FeatureGuestTSO6 != 0
	}
	return false
}

// deliver places the staged frame into held chains, popping more with
// mergeable buffers. It returns false when it must wait for the guest to
// add buffers (the frame stays staged).
func (w *worker) deliver() bool {
	frame := w.stage[:w.staged]
	need := uint64(len(frame))
	h := hdr(frame[:HeaderLen])
	if !w.mrg {
		// The whole frame goes into one chain; a driver without mergeable
		// buffers posts chains big enough for what it negotiated.
		c := w.held[0]
		if c.Writable.Len() < need {
			w.drop()
			return true
		}
		h.setNumBuffers(1)
		if err := writeChain(w.mem, c.Writable, frame); err != nil {
			w.fail(fmt.Errorf("net: receive chain %d: %w", c.Head, err))
			return false
		}
		w.release(1)
		if !w.push(w.rx, c.Head, uint32(need)) {
			return false
		}
		w.delivered(need)
		return true
	}
	for w.heldCap < need {
		if len(w.held) >= int(w.rx.Size()) {
			// Every chain the ring can hold is not enough: the frame can
			// never be delivered. Keep the chains for the next one.
			w.drop()
			return true
		}
		if !w.holdRx() {
			return false
		}
	}
	k, left := 0, need
	for left > 0 {
		left -= min(left, w.held[k].Writable.Len())
		k++
	}
	h.setNumBuffers(uint16(k))
	w.used = w.used[:0]
	rest := frame
	for _, c := range w.held[:k] {
		n := min(uint64(len(rest)), c.Writable.Len())
		if err := writeChain(w.mem, c.Writable, rest[:n]); err != nil {
			w.fail(fmt.Errorf("net: receive chain %d: %w", c.Head, err))
			return false
		}
		w.used = append(w.used, usedElem{c.Head, uint32(n)})
		rest = rest[n:]
	}
	w.release(k)
	if err := pushAll(w.mem, w.rx, w.used); err != nil {
		w.fail(err)
		return false
	}
	w.delivered(need)
	return true
}

// release forgets the first k held chains.
func (w *worker) release(k int) {
	for _, c := range w.held[:k] {
		w.heldCap -= c.Writable.Len()
	}
	n := copy(w.held, w.held[k:])
	clear(w.held[n:])
	w.held = w.held[:n]
}

func (w *worker) delivered(n uint64) {
	w.staged = 0
	w.d.stats.RxFrames.Add(1)
	w.d.stats.RxBytes.Add(n - HeaderLen)
}

func (w *worker) drop() {
	w.staged = 0
	w.d.stats.RxDropped.Add(1)
}

// usedElem is one used-ring entry.
type usedElem struct {
	head uint16
	len  uint32
}

// pushAll returns chains to the driver in order, publishing the used index
// once at the end. A merged frame must appear whole: Linux reads
// num_buffers from the first buffer and counts the frame as an error if the
// others are not yet in the used ring, which can happen when its NAPI poll
// runs on another vCPU while the device pushes one by one.
//
// queue.Queue has no batched push, so this writes the elements itself past
// the published used index (where the driver does not look), moves the
// queue's position with Restore, then publishes the index. Restore forgets
// the interrupt-suppression history, which costs at most one extra
// interrupt per pass.
func pushAll(mem virtio.Memory, q *queue.Queue, elems []usedElem) error {
	if len(elems) == 1 {
		return q.Push(mem, elems[0].head, elems[0].len)
	}
	s := q.State()
	if !s.Ready || uint16(len(elems)) > s.NextAvail-s.NextUsed {
		return fmt.Errorf("net: pushing %d chains with %d in flight", len(elems), s.NextAvail-s.NextUsed)
	}
	var b [8]byte
	for i, e := range elems {
		if e.head >= s.Size {
			return fmt.Errorf("%w: %d, size %d", queue.ErrBadHead, e.head, s.Size)
		}
		slot := uint64((s.NextUsed + uint16(i)) & (s.Size - 1))
		binary.LittleEndian.PutUint32(b[0:], uint32(e.head))
		binary.LittleEndian.PutUint32(b[4:], e.len)
		if _, err := mem.WriteAt(b[:], int64(s.UsedRing+4+8*slot)); err != nil {
			return fmt.Errorf("%w: used ring entry: %w", queue.ErrRing, err)
		}
	}
	s.NextUsed += uint16(len(elems))
	if err := q.Restore(s, mem); err != nil {
		return err
	}
	// An atomic store, ordered after the elements above, as Push does.
	if err := queue.StoreIndex(mem, s.UsedRing+2, s.NextUsed); err != nil {
		return fmt.Errorf("%w: used index: %w", queue.ErrRing, err)
	}
	return nil
}
