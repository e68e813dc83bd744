package queue

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/boxd-dev/boxd/virtio"
)

// MaxSize is the largest split-queue size the specification allows.
const MaxSize = 32768

// Features are the ring features this implementation supports; devices
// include them in what they offer.
const Features = virtio.FeatureIndirectDesc | virtio.FeatureEventIdx

// Ring flag bits.
const (
	availFNoInterrupt = 1 // VRING_AVAIL_F_NO_INTERRUPT
)

var (
	// ErrNotReady is returned by Pop and Push on a queue the driver has not
	// enabled.
	ErrNotReady = errors.New("queue not ready")
	// ErrInvalidChain marks a malformed descriptor chain (see ChainError).
	ErrInvalidChain = errors.New("invalid descriptor chain")
	// ErrAvailIdx means the driver's available index is more than the queue
	// size ahead of the device: the ring is corrupt and the device needs a
	// reset.
	ErrAvailIdx = errors.New("available index out of range")
	// ErrRing means a ring could not be accessed in guest memory.
	ErrRing = errors.New("ring not accessible")
	// ErrInvalidState is returned by Restore and New for inconsistent state.
	ErrInvalidState = errors.New("invalid queue state")
	// ErrBadHead is returned by Push for a head the device does not own (a
	// device bug, not a guest error).
	ErrBadHead = errors.New("used head out of range")
)

// State is a queue's configuration and position as plain data: what the
// transport's registers hold before activation, and what a snapshot saves.
type State struct {
	MaxSize   uint16 // largest size the device accepts (QueueNumMax)
	Size      uint16 // size chosen by the driver (QueueNum)
	Ready     bool   // QueueReady
	DescTable uint64 // guest-physical address of the descriptor table
	AvailRing uint64 // driver area
	UsedRing  uint64 // device area
	NextAvail uint16 // next available-ring entry the device will read
	NextUsed  uint16 // next used-ring entry the device will write
	EventIdx  bool   // VIRTIO_F_EVENT_IDX negotiated
}

// Queue is the device side of one split virtqueue. The zero value is not
// ready; build one with New.
type Queue struct {
	maxSize  uint16
	size     uint16
	ready    bool
	desc     uint64
	avail    uint64
	used     uint64
	eventIdx bool

	nextAvail uint16
	nextUsed  uint16
	// availIdx caches the last available index read from the guest, so
	// popping a batch reads it once.
	availIdx uint16
	// signalled is nextUsed when NeedsInterrupt last decided; meaningful only
	// if signalledValid. It makes event-idx suppression exact and avoids
	// interrupting twice for the same used entries.
	signalled      uint16
	signalledValid bool

	scratch [16]byte // descriptor and used-element buffer (avoids allocations)
}

// New validates s as untrusted input and returns a queue in that state.
func New(s State, mem virtio.Memory) (*Queue, error) {
	q := &Queue{}
	if err := q.Restore(s, mem); err != nil {
		return nil, err
	}
	return q, nil
}

// State returns the queue's state as plain data.
func (q *Queue) State() State {
	return State{
		MaxSize: q.maxSize, Size: q.size, Ready: q.ready,
		DescTable: q.desc, AvailRing: q.avail, UsedRing: q.used,
		NextAvail: q.nextAvail, NextUsed: q.nextUsed, EventIdx: q.eventIdx,
	}
}

// Restore replaces the queue's state with s after validating it as untrusted
// (it may come from the guest's register writes or from a snapshot file). On
// error the queue is left unchanged.
func (q *Queue) Restore(s State, mem virtio.Memory) error {
	if err := s.validate(mem); err != nil {
		return err
	}
	q.maxSize, q.size, q.ready = s.MaxSize, s.Size, s.Ready
	q.desc, q.avail, q.used = s.DescTable, s.AvailRing, s.UsedRing
	q.nextAvail, q.nextUsed, q.eventIdx = s.NextAvail, s.NextUsed, s.EventIdx
	q.availIdx = s.NextAvail
	q.signalled, q.signalledValid = 0, false
	return nil
}

func (s State) validate(mem virtio.Memory) error {
	if s.MaxSize == 0 || s.MaxSize > MaxSize {
		return fmt.Errorf("%w: max size %d", ErrInvalidState, s.MaxSize)
	}
	if !s.Ready {
		return nil
	}
	if s.Size == 0 || s.Size > s.MaxSize || s.Size&(s.Size-1) != 0 {
		return fmt.Errorf("%w: size %d (max %d, power of two)", ErrInvalidState, s.Size, s.MaxSize)
	}
	n := uint64(s.Size)
	areas := []struct {
		name       string
		addr, size uint64
		align      uint64
	}{
		{"descriptor table", s.DescTable, 16 * n, 16},
		{"available ring", s.AvailRing, 6 + 2*n, 2},
		{"used ring", s.UsedRing, 6 + 8*n, 4},
	}
	for _, a := range areas {
		if a.addr%a.align != 0 {
			return fmt.Errorf("%w: %s at %#x not %d-aligned", ErrInvalidState, a.name, a.addr, a.align)
		}
		if _, err := mem.Slice(a.addr, a.size); err != nil {
			return fmt.Errorf("%w: %s [%#x, +%#x): %w", ErrInvalidState, a.name, a.addr, a.size, err)
		}
	}
	// The device cannot hold more chains than the ring has entries.
	if inflight := s.NextAvail - s.NextUsed; inflight > s.Size {
		return fmt.Errorf("%w: %d chains in flight, size %d", ErrInvalidState, inflight, s.Size)
	}
	return nil
}

// Ready reports whether the driver enabled the queue.
func (q *Queue) Ready() bool { return q.ready }

// Size returns the queue size chosen by the driver.
func (q *Queue) Size() uint16 { return q.size }

// Pop returns the next available descriptor chain, validated. It returns
// (nil, nil) when the ring is empty; in that case it has re-enabled
// available-buffer notifications (avail_event with VIRTIO_F_EVENT_IDX) and
// re-checked the ring, so the caller may sleep until the next notification
// without missing work.
//
// A malformed chain is consumed and reported as an error wrapping
// ErrInvalidChain; the caller counts it and carries on. If the error is a
// *ChainError (the head itself was a valid index), the caller should Push
// that head with length 0 so the driver gets its descriptors back.
// ErrAvailIdx and ErrRing mean the ring itself is unusable until the device
// is reset.
func (q *Queue) Pop(mem virtio.Memory) (*Chain, error) {
	if !q.ready {
		return nil, ErrNotReady
	}
	if q.nextAvail == q.availIdx {
		if err := q.readAvailIdx(mem); err != nil {
			return nil, err
		}
		if q.nextAvail == q.availIdx {
			if err := q.enableNotification(mem); err != nil {
				return nil, err
			}
			if err := q.readAvailIdx(mem); err != nil {
				return nil, err
			}
			if q.nextAvail == q.availIdx {
				return nil, nil
			}
		}
	}
	slot := uint64(q.nextAvail & (q.size - 1))
	b := q.scratch[:2]
	if _, err := mem.ReadAt(b, int64(q.avail+4+2*slot)); err != nil {
		return nil, fmt.Errorf("%w: available ring entry: %w", ErrRing, err)
	}
	head := binary.LittleEndian.Uint16(b)
	q.nextAvail++
	if head >= q.size {
		// Not a chain the device could hand back: just skip the entry.
		return nil, fmt.Errorf("%w: head %d >= size %d", ErrInvalidChain, head, q.size)
	}
	c, err := q.walk(mem, head)
	if err != nil {
		return nil, &ChainError{Head: head, Err: err}
	}
	return c, nil
}

// readAvailIdx refreshes the cached available index, rejecting one that
// claims more chains than the ring holds.
func (q *Queue) readAvailIdx(mem virtio.Memory) error {
	idx, err := LoadIndex(mem, q.avail+2)
	if err != nil {
		return fmt.Errorf("%w: available index: %w", ErrRing, err)
	}
	if pending := idx - q.nextAvail; pending > q.size {
		return fmt.Errorf("%w: idx %d, device at %d, size %d", ErrAvailIdx, idx, q.nextAvail, q.size)
	}
	// LoadIndex is an atomic (acquire) load: the ring entries and descriptors
	// published before idx are read after it.
	q.availIdx = idx
	return nil
}

// enableNotification asks the driver to notify when it makes entry nextAvail
// available. Without EVENT_IDX the device never sets VRING_USED_F_NO_NOTIFY,
// so notifications are always enabled and there is nothing to do.
func (q *Queue) enableNotification(mem virtio.Memory) error {
	if !q.eventIdx {
		return nil
	}
	// StoreIndex is sequentially consistent: avail_event is visible before the
	// available index is re-read, so a chain added in between is not missed
	// by both sides.
	if err := StoreIndex(mem, q.used+4+8*uint64(q.size), q.nextAvail); err != nil {
		return fmt.Errorf("%w: avail_event: %w", ErrRing, err)
	}
	return nil
}

// Push returns chain head to the driver with written bytes in its writable
// buffers. Heads must come from Pop (or a ChainError) on this queue.
func (q *Queue) Push(mem virtio.Memory, head uint16, written uint32) error {
	if !q.ready {
		return ErrNotReady
	}
	if head >= q.size {
		return fmt.Errorf("%w: %d, size %d", ErrBadHead, head, q.size)
	}
	if q.nextUsed == q.nextAvail {
		return fmt.Errorf("%w: no chain in flight", ErrBadHead)
	}
	slot := uint64(q.nextUsed & (q.size - 1))
	b := q.scratch[:8]
	binary.LittleEndian.PutUint32(b[0:], uint32(head))
	binary.LittleEndian.PutUint32(b[4:], written)
	if _, err := mem.WriteAt(b, int64(q.used+4+8*slot)); err != nil {
		return fmt.Errorf("%w: used ring entry: %w", ErrRing, err)
	}
	q.nextUsed++
	// The atomic store publishes the element written above.
	if err := StoreIndex(mem, q.used+2, q.nextUsed); err != nil {
		return fmt.Errorf("%w: used index: %w", ErrRing, err)
	}
	return nil
}

// NeedsInterrupt reports whether the driver wants a used-buffer notification
// for the entries pushed since the last call: with VIRTIO_F_EVENT_IDX, when
// the used index has passed used_event; otherwise unless the driver set
// VRING_AVAIL_F_NO_INTERRUPT. It returns false when nothing was pushed since
// the last call, and true if the ring cannot be read (a spurious interrupt is
// harmless, a missing one hangs the driver).
func (q *Queue) NeedsInterrupt(mem virtio.Memory) bool {
	if !q.ready {
		return false
	}
	if q.signalledValid && q.signalled == q.nextUsed {
		return false
	}
	old, valid := q.signalled, q.signalledValid
	q.signalled, q.signalledValid = q.nextUsed, true
	// Push's atomic store of the used index is ordered before these atomic
	// loads of the driver's suppression fields, as the spec requires.
	if !q.eventIdx {
		flags, err := LoadIndex(mem, q.avail)
		return err != nil || flags&availFNoInterrupt == 0
	}
	event, err := LoadIndex(mem, q.avail+4+2*uint64(q.size))
	if err != nil || !valid {
		return true
	}
	// vring_need_event: interrupt iff used_event lies in [old, nextUsed).
	return q.nextUsed-event-1 < q.nextUsed-old
}

// Unpop moves the device back over the chains it popped but has not pushed,
// so that the next Pops return them again, as if they had never been taken.
// heads are those chains in the order they were popped. It is how a device
// that holds chains while it waits (net's receive buffers) quiesces for a
// snapshot: the chains go back to the ring instead of into the device's
// memory, which a snapshot does not carry.
//
// It succeeds only when it is exact: heads are every chain in flight and the
// last len(heads) available entries name them in order. Otherwise (a chain
// was completed out of order, or the guest skipped an entry with a bogus
// head) it changes nothing and reports false, and the caller completes the
// chains instead.
func (q *Queue) Unpop(mem virtio.Memory, heads []uint16) (bool, error) {
	if !q.ready {
		return false, ErrNotReady
	}
	if len(heads) == 0 {
		return true, nil
	}
	k := uint16(len(heads))
	if len(heads) > int(q.size) || q.nextAvail-q.nextUsed != k {
		return false, nil
	}
	b := q.scratch[:2]
	for i, h := range heads {
		slot := uint64((q.nextAvail - k + uint16(i)) & (q.size - 1))
		if _, err := mem.ReadAt(b, int64(q.avail+4+2*slot)); err != nil {
			return false, fmt.Errorf("%w: available ring entry: %w", ErrRing, err)
		}
		if binary.LittleEndian.Uint16(b) != h {
			return false, nil
		}
	}
	q.nextAvail -= k
	// The cached index stays valid (it only ever moves forward), and the
	// chains between nextAvail and it are popped again from the ring.
	return true, nil
}

// AvailIdx reads the driver's current available index (how many chains it
// has ever made available, mod 2^16), without consuming anything.
func (q *Queue) AvailIdx(mem virtio.Memory) (uint16, error) {
	if !q.ready {
		return 0, ErrNotReady
	}
	if err := q.readAvailIdx(mem); err != nil {
		return 0, err
	}
	return q.availIdx, nil
}

// WatchAvail asks the driver to notify the device once the available index
// moves past idx (with EVENT_IDX; without it the driver notifies anyway) and
// reports whether it already has: the index is read again after the request
// is published, so a chain added in between is not missed by both sides.
func (q *Queue) WatchAvail(mem virtio.Memory, idx uint16) (moved bool, err error) {
	if !q.ready {
		return false, ErrNotReady
	}
	if q.eventIdx {
		if err := StoreIndex(mem, q.used+4+8*uint64(q.size), idx); err != nil {
			return false, fmt.Errorf("%w: avail_event: %w", ErrRing, err)
		}
	}
	if err := q.readAvailIdx(mem); err != nil {
		return false, err
	}
	return q.availIdx != idx, nil
}
