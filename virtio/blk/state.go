package blk

import (
	"encoding/binary"
	"fmt"

	"github.com/boxd-dev/boxd/internal/devstate"
)

// stateVersion is the version of the blob SaveState writes.
const stateVersion = 1

// stateLen is the blob's size: version, capacity in sectors, read-only flag.
const stateLen = 2 + 8 + 1

// Pause implements mmio.Snapshotter: the worker finishes the request it is
// serving and stops; the requests after it stay in the ring, not started.
// A device activated while paused waits for Resume.
//
// A copy-on-write overlay's cluster map lives in memory between flushes; it
// is written out here so that what is on disk while the machine is paused
// (what a fork or a suspend copies) is the disk the guest sees. A failure
// (counted in IOErrors) leaves the guest's own data intact; only a copy
// taken now could miss its newest clusters.
func (d *Device) Pause() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.paused = true
	d.stopWorker()
	if c, ok := d.backend.(*COW); ok {
		if err := c.Sync(); err != nil {
			d.stats.IOErrors.Add(1)
		}
	}
}

// Resume implements mmio.Snapshotter: the worker starts again and looks at
// the whole ring first.
func (d *Device) Resume() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.paused = false
	if d.w != nil && d.done == nil && !d.closed {
		d.startWorker()
	}
}

// SaveState implements mmio.Snapshotter. A disk keeps no request state
// between requests (the queue positions are the transport's), so the blob
// only identifies the disk the guest sees: its capacity and whether it is
// read-only.
func (d *Device) SaveState() ([]byte, error) {
	b := binary.LittleEndian.AppendUint16(make([]byte, 0, stateLen), stateVersion)
	b = binary.LittleEndian.AppendUint64(b, d.capacity)
	var ro byte
	if d.cfg.ReadOnly {
		ro = 1
	}
	return append(b, ro), nil
}

// RestoreState implements mmio.Snapshotter: it checks that this disk is the
// one the guest knew. Its contents are the caller's business (the disk
// image taken with the snapshot); its size and mode must not change under
// a running guest.
func (d *Device) RestoreState(data []byte) error {
	if err := checkState(data, d.capacity, d.cfg.ReadOnly); err != nil {
		return fmt.Errorf("blk: restore: %w", err)
	}
	return nil
}

func checkState(b []byte, capacity uint64, readOnly bool) error {
	if err := devstate.Check(b, stateVersion, stateLen); err != nil {
		return err
	}
	if c := binary.LittleEndian.Uint64(b[2:]); c != capacity {
		return fmt.Errorf("saved disk has %d sectors, this one %d", c, capacity)
	}
	switch b[10] {
	case 0, 1:
		if (b[10] == 1) != readOnly {
			return fmt.Errorf("saved disk read-only=%v, this one %v", b[10] == 1, readOnly)
		}
	default:
		return fmt.Errorf("read-only flag %d", b[10])
	}
	return nil
}
