package vsock

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/boxd-dev/boxd/virtio"
	"github.com/boxd-dev/boxd/virtio/queue"
)

// run is the device's worker: the only goroutine that touches guest memory
// and the queues. It sleeps on wake and handles whatever changed: queue
// notifications, host sockets (through markReady) and control calls.
func (d *Device) run() {
	defer d.wg.Done()
	for {
		select {
		case <-d.stop:
			return
		case <-d.wake:
		}
		d.mu.Lock()
		more := d.process()
		d.mu.Unlock()
		if more {
			// A budget ran out: let Reset and the host goroutines in, then
			// carry on.
			d.kick()
		}
	}
}

// process does one bounded round of work and reports whether more is
// waiting. mu held.
func (d *Device) process() bool {
	if d.closed || d.paused {
		// Host sides wait too: what they report stays on the notified
		// list, served after Resume.
		return false
	}
	for _, c := range d.takeNotified() {
		d.service(c)
	}
	if d.mem == nil || d.failed {
		return false
	}
	more := d.processTx()
	d.processEvent()
	if d.processRx() {
		more = true
	}
	if d.txStalled && len(d.rsts) < maxPendingRsts {
		d.txStalled = false
		more = true
	}
	return more
}

// processTx consumes the guest's packets. It pauses while too many RSTs are
// owed to the guest: the guest then gets its answers before sending more.
func (d *Device) processTx() (more bool) {
	budget := int(d.txq.Size())
	for ; budget > 0; budget-- {
		if len(d.rsts) >= maxPendingRsts {
			d.txStalled = true
			break
		}
		ch, err := d.txq.Pop(d.mem)
		if err != nil {
			if !d.popError(d.txq, err) {
				return false
			}
			continue
		}
		if ch == nil {
			break
		}
		d.handleTx(ch)
		if err := d.txq.Push(d.mem, ch.Head, 0); err != nil {
			d.fail(err)
			return false
		}
	}
	d.signal(d.txq)
	return budget == 0
}

// processRx fills the guest's rx buffers with owed packets: RSTs for stray
// packets first, then connections round-robin. Without buffers, packets wait
// in their (bounded) connection state until the driver adds some and
// notifies. Nothing is delivered while a transport reset is pending or not
// yet handled by the driver, so the guest sees the reset first.
func (d *Device) processRx() (more bool) {
	if d.evPending {
		return false
	}
	if d.evAwait && !d.resetHandled() {
		if d.rxWaiting() {
			d.stats.RxHeldForReset.Add(1)
		}
		return false
	}
	budget := int(d.rxq.Size())
	for ; budget > 0 && d.rxWaiting(); budget-- {
		ch, err := d.rxq.Pop(d.mem)
		if err != nil {
			if !d.popError(d.rxq, err) {
				return false
			}
			continue
		}
		if ch == nil {
			break
		}
		n := d.fillRx(ch)
		if err := d.rxq.Push(d.mem, ch.Head, n); err != nil {
			d.fail(err)
			return false
		}
	}
	d.signal(d.rxq)
	return budget == 0
}

// rxWaiting reports whether a packet is owed to the guest, dropping
// connections with nothing left to say from the head of rxReady.
func (d *Device) rxWaiting() bool {
	if len(d.rsts) > 0 {
		return true
	}
	for len(d.rxReady) > 0 {
		c := d.rxReady[0]
		if !c.removed && d.nextOp(c) != 0 {
			return true
		}
		c.inRx = false
		d.rxReady = d.rxReady[1:]
	}
	return false
}

// fillRx writes one packet into ch (rxWaiting returned true) and returns the
// bytes written.
func (d *Device) fillRx(ch *queue.Chain) uint32 {
	room := ch.Writable.Len()
	if room < HeaderLen {
		d.stats.RxBufferErrors.Add(1)
		return 0
	}
	if len(d.rsts) > 0 {
		k := d.rsts[0]
		d.rsts = d.rsts[1:]
		h := d.newHeader(k, opRst)
		if !d.writePacket(ch, h, nil, nil) {
			return 0
		}
		d.stats.ResetsSent.Add(1)
		return HeaderLen
	}
	c := d.rxReady[0]
	d.rxReady = d.rxReady[1:]
	c.inRx = false
	n := d.fillConn(c, ch, room)
	d.schedule(c) // to the back of the queue if it has more to say
	return n
}

// processEvent delivers a pending transport-reset event.
func (d *Device) processEvent() {
	for budget := int(d.evq.Size()); d.evPending && budget > 0; budget-- {
		ch, err := d.evq.Pop(d.mem)
		if err != nil {
			if !d.popError(d.evq, err) {
				return
			}
			continue
		}
		if ch == nil {
			return
		}
		// The avail index is read before the event is used: once it is,
		// the driver may handle it and make the buffer available again at
		// any moment, and an index read after that would wait for a move
		// that already happened, holding rx forever.
		idx, err := d.evq.AvailIdx(d.mem)
		if err != nil {
			d.fail(err)
			return
		}
		var n uint32
		if ch.Writable.Len() < eventLen {
			d.stats.RxBufferErrors.Add(1)
		} else {
			var ev [eventLen]byte
			binary.LittleEndian.PutUint32(ev[:], eventTransportReset)
			if _, err := ch.Writable.WriteAt(d.mem, ev[:], 0); err != nil {
				d.stats.InvalidChains.Add(1)
			} else {
				n, d.evPending = eventLen, false
			}
		}
		if err := d.evq.Push(d.mem, ch.Head, n); err != nil {
			d.fail(err)
			return
		}
		if !d.evPending {
			d.evAwait, d.evAwaitIdx = true, idx
		}
		d.signal(d.evq)
	}
}

// resetHandled reports whether the driver has handled the delivered
// transport reset (made an event buffer available again), asking it to
// notify when it does. mu held, evAwait set.
func (d *Device) resetHandled() bool {
	moved, err := d.evq.WatchAvail(d.mem, d.evAwaitIdx)
	if err != nil {
		d.fail(err)
		return false
	}
	if moved {
		d.evAwait = false
	}
	return moved
}

// popError handles a Pop error and reports whether the queue is still
// usable. A malformed chain is counted and handed back empty; a corrupt ring
// fails the device until the driver resets it.
func (d *Device) popError(q *queue.Queue, err error) bool {
	var ce *queue.ChainError
	switch {
	case errors.As(err, &ce):
		d.stats.InvalidChains.Add(1)
		if perr := q.Push(d.mem, ce.Head, 0); perr != nil {
			d.fail(perr)
			return false
		}
		return true
	case errors.Is(err, queue.ErrInvalidChain):
		d.stats.InvalidChains.Add(1)
		return true
	}
	d.fail(err)
	return false
}

// fail stops using the queues and reports DEVICE_NEEDS_RESET.
func (d *Device) fail(err error) {
	d.failed = true
	d.tr.Fail(fmt.Errorf("vsock: %w", err))
}

// signal interrupts the driver if it wants to hear about q's used entries.
func (d *Device) signal(q *queue.Queue) {
	if q.NeedsInterrupt(d.mem) {
		d.stats.Interrupts.Add(1)
		_ = d.tr.Signal(virtio.InterruptUsedBuffer) // the transport counts failures
	}
}

// newHeader returns a packet header from the host for connection k.
func (d *Device) newHeader(k connKey, op uint16) header {
	return header{
		SrcCID: HostCID, DstCID: d.cfg.GuestCID,
		SrcPort: k.host, DstPort: k.guest,
		Type: typeStream, Op: op, BufAlloc: d.cfg.BufferSize,
	}
}

// writePacket writes h and its payload (the concatenation of a and b) at
// the start of ch's writable buffers.
func (d *Device) writePacket(ch *queue.Chain, h header, a, b []byte) bool {
	buf := d.rxScratch[:]
	h.encode(buf)
	_, err := ch.Writable.WriteAt(d.mem, buf, 0)
	if err == nil && len(a) > 0 {
		_, err = ch.Writable.WriteAt(d.mem, a, HeaderLen)
	}
	if err == nil && len(b) > 0 {
		_, err = ch.Writable.WriteAt(d.mem, b, HeaderLen+uint64(len(a)))
	}
	if err != nil {
		d.stats.InvalidChains.Add(1)
		return false
	}
	d.stats.RxPackets.Add(1)
	return true
}
