package net

import (
	"encoding/binary"
	"fmt"

	"github.com/boxd-dev/boxd/internal/devstate"
)

// stateVersion is the version of the blob SaveState writes. The blob holds
// nothing else: the MAC, MTU and backend come from the new device's Config,
// and the queues are the transport's.
const stateVersion = 1

// Pause implements mmio.Snapshotter. The worker stops; receive chains it
// held for frames not yet arrived, and a transmit chain waiting for the
// backend, go back to the ring (queue.Unpop) so that guest memory and the
// queue positions say nothing is in flight. If that cannot be done exactly
// (the guest skipped entries), they are completed instead: receive buffers
// empty, the transmit frame dropped (both counted). A frame already read
// from the backend stays staged in the device for Resume; a snapshot does
// not carry it (as if the wire had dropped it).
func (d *Device) Pause() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.paused = true
	if d.w == nil {
		return
	}
	d.haltWorker()
	d.w.quiesce()
}

// Resume implements mmio.Snapshotter: the worker starts again with a pass
// over both queues and the backend.
func (d *Device) Resume() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.paused = false
	if d.linkChanged {
		d.linkChanged = false
		d.signalLink()
	}
	if d.w != nil && !d.running.Load() && !d.closed {
		d.startWorker()
	}
}

// SaveState implements mmio.Snapshotter.
func (d *Device) SaveState() ([]byte, error) {
	return binary.LittleEndian.AppendUint16(nil, stateVersion), nil
}

// RestoreState implements mmio.Snapshotter: it checks the version; the
// features the driver negotiated were checked against this device's offer
// by the transport.
func (d *Device) RestoreState(data []byte) error {
	if err := checkState(data); err != nil {
		return fmt.Errorf("net: restore: %w", err)
	}
	return nil
}

func checkState(b []byte) error {
	if err := devstate.Check(b, stateVersion, 2); err != nil {
		return err
	}
	return nil
}

// quiesce gives back the chains the worker holds, so none is in flight.
// Called with the worker stopped.
func (w *worker) quiesce() {
	if w.failed {
		return
	}
	if len(w.held) > 0 {
		heads := make([]uint16, len(w.held))
		for i, c := range w.held {
			heads[i] = c.Head
		}
		ok, err := w.rx.Unpop(w.mem, heads)
		switch {
		case err != nil:
			w.fail(err)
			return
		case !ok:
			// Empty receive buffers: the driver counts a length error
			// and posts them again.
			for _, h := range heads {
				if !w.push(w.rx, h, 0) {
					return
				}
			}
			w.interrupt(w.rx)
		}
		w.release(len(w.held))
	}
	if c := w.txPending; c != nil {
		w.txPending = nil
		ok, err := w.tx.Unpop(w.mem, []uint16{c.Head})
		switch {
		case err != nil:
			w.fail(err)
		case !ok:
			w.d.stats.TxDropped.Add(1)
			if w.push(w.tx, c.Head, 0) {
				w.interrupt(w.tx)
			}
		}
	}
}
