package vsock

import (
	"encoding/binary"
	"fmt"

	"github.com/boxd-dev/boxd/internal/devstate"
)

// stateVersion is the version of the blob SaveState writes.
const stateVersion = 1

// stateLen is the blob's size: version and the guest CID at save time.
const stateLen = 2 + 8

// Pause implements mmio.Snapshotter. The worker finishes its round (it
// holds mu while it touches guest memory) and then leaves the queues alone:
// guest packets wait in the tx ring, host data and new host connections wait
// in the connections' bounded buffers and the notified list. Host sockets
// stay open; a host-initiated connection whose guest answer is due may time
// out if the pause outlasts ConnectTimeout.
func (d *Device) Pause() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.paused = true
}

// Resume implements mmio.Snapshotter: the worker runs a full round over the
// host side and every queue.
func (d *Device) Resume() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.paused = false
	d.kick()
}

// SaveState implements mmio.Snapshotter. Connections are not saved: their
// host peers are sockets of this process, which a restored device does not
// have. The blob records the guest CID for diagnostics only.
func (d *Device) SaveState() ([]byte, error) {
	b := binary.LittleEndian.AppendUint16(make([]byte, 0, stateLen), stateVersion)
	return binary.LittleEndian.AppendUint64(b, d.cfg.GuestCID), nil
}

// RestoreState implements mmio.Snapshotter: after the transport restored
// the queues, it drops every host connection and owes the guest a
// VIRTIO_VSOCK_EVENT_TRANSPORT_RESET (see ResetTransport), delivered on
// Resume before any other packet. The guest then resets its connected
// sockets, keeps its listening ones, and re-reads guest_cid, which is this
// device's Config.GuestCID whatever the saved one was.
func (d *Device) RestoreState(data []byte) error {
	if _, err := decodeState(data); err != nil {
		return fmt.Errorf("vsock: restore: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	d.resetTransport()
	return nil
}

// decodeState checks a blob and returns the guest CID it was saved with.
func decodeState(b []byte) (uint64, error) {
	if err := devstate.Check(b, stateVersion, stateLen); err != nil {
		return 0, err
	}
	cid := binary.LittleEndian.Uint64(b[2:])
	if cid < 3 || cid >= 0xffff_ffff {
		return 0, fmt.Errorf("saved guest CID %d outside [3, 2^32-1)", cid)
	}
	return cid, nil
}
