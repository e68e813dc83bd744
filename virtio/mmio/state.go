package mmio

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/boxd-dev/boxd/internal/devstate"
	"github.com/boxd-dev/boxd/virtio"
	"github.com/boxd-dev/boxd/virtio/queue"
)

// Snapshotter is a Device that can be quiesced and whose own state can be
// saved and restored. The transport calls every method with its register
// lock held.
type Snapshotter interface {
	// Pause stops the device touching guest memory, its queues and its
	// interrupt: work in progress finishes (or is put back so that it never
	// started) before Pause returns. It holds across Reset and Activate:
	// a device activated while paused stays idle until Resume. Notify while
	// paused must be harmless; Resume re-examines every queue anyway.
	Pause()
	// Resume undoes Pause and looks at every queue, so that notifications
	// that arrived meanwhile are not lost.
	Resume()
	// SaveState returns the device's own state (beyond the transport's
	// registers and queue positions) as a versioned blob. Called paused.
	SaveState() ([]byte, error)
	// RestoreState applies a blob from SaveState to a device that was just
	// activated (or left inactive) from the same snapshot, paused. The blob
	// is untrusted: it is validated and an error leaves the device as the
	// transport's reset will find it.
	RestoreState(data []byte) error
}

// ErrNotPaused is returned by SaveState and RestoreState on a transport that
// is not paused.
var ErrNotPaused = errors.New("mmio: transport not paused")

// stateVersion is the version of the blob SaveState writes.
const stateVersion = 1

// Sizes of the fixed parts of the blob.
const (
	stateHeaderLen = 2 + 4 + 4 + 1 + 4 + 4 + 4 + 4 + 8 + 4 + 2 // through the queue count
	stateQueueLen  = 2 + 2 + 1 + 8 + 8 + 8 + 2 + 2 + 1
	// maxDeviceState bounds a device's own blob inside the transport's.
	maxDeviceState = 1 << 20
)

// Flag bits of the blob.
const (
	flagNeedsReset = 1 << 0
	flagActive     = 1 << 1
)

// statusKnown are the status bits a driver can set.
const statusKnown = virtio.StatusAcknowledge | virtio.StatusDriver | virtio.StatusFeaturesOK |
	virtio.StatusDriverOK | virtio.StatusFailed

// Pause quiesces the transport and its device: queue notifications are
// ignored (Resume re-examines every queue) and, for a Snapshotter, the
// device stops touching guest memory. When Pause returns, the registers and
// queue positions are stable until Resume. A second Pause does nothing.
func (t *Transport) Pause() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.paused.Swap(true) {
		return
	}
	if s, ok := t.dev.(Snapshotter); ok {
		s.Pause()
	}
}

// Resume undoes Pause and notifies every queue of a running device, so a
// kick that arrived while paused is served now.
func (t *Transport) Resume() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.paused.Swap(false) {
		return
	}
	if s, ok := t.dev.(Snapshotter); ok {
		s.Resume()
	}
	if t.active.Load() && !t.needsReset.Load() {
		for q := range t.sizes {
			t.dev.Notify(q)
		}
	}
}

// Paused reports whether the transport is paused.
func (t *Transport) Paused() bool { return t.paused.Load() }

// SaveState returns the transport's registers, its queues' configuration and
// positions, and the device's own state, as a versioned blob. The transport
// must be paused and its device a Snapshotter.
func (t *Transport) SaveState() ([]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.paused.Load() {
		return nil, ErrNotPaused
	}
	s, ok := t.dev.(Snapshotter)
	if !ok {
		return nil, fmt.Errorf("mmio: device type %d cannot be saved", t.dev.Type())
	}
	devState, err := s.SaveState()
	if err != nil {
		return nil, fmt.Errorf("mmio: save device type %d: %w", t.dev.Type(), err)
	}
	if len(devState) > maxDeviceState {
		return nil, fmt.Errorf("mmio: device type %d state of %d bytes, limit %d", t.dev.Type(), len(devState), maxDeviceState)
	}
	var flags byte
	if t.needsReset.Load() {
		flags |= flagNeedsReset
	}
	if t.active.Load() {
		flags |= flagActive
	}
	le := binary.LittleEndian
	b := make([]byte, 0, stateHeaderLen+stateQueueLen*len(t.queues)+4+len(devState))
	b = le.AppendUint16(b, stateVersion)
	b = le.AppendUint32(b, t.dev.Type())
	b = le.AppendUint32(b, t.status.Load())
	b = append(b, flags)
	b = le.AppendUint32(b, t.isr.Load())
	b = le.AppendUint32(b, t.generation.Load())
	b = le.AppendUint32(b, t.devFeatSel)
	b = le.AppendUint32(b, t.drvFeatSel)
	b = le.AppendUint64(b, t.drvFeat)
	b = le.AppendUint32(b, t.queueSel)
	b = le.AppendUint16(b, uint16(len(t.queues)))
	for i, q := range t.queues {
		if t.live != nil {
			// The device owns the live queues, but it is paused: their
			// positions are stable and were published by its Pause.
			q = t.live[i].State()
			q.MaxSize = t.sizes[i]
		}
		b = le.AppendUint16(b, q.MaxSize)
		b = le.AppendUint16(b, q.Size)
		b = append(b, boolByte(q.Ready))
		b = le.AppendUint64(b, q.DescTable)
		b = le.AppendUint64(b, q.AvailRing)
		b = le.AppendUint64(b, q.UsedRing)
		b = le.AppendUint16(b, q.NextAvail)
		b = le.AppendUint16(b, q.NextUsed)
		b = append(b, boolByte(q.EventIdx))
	}
	b = le.AppendUint32(b, uint32(len(devState)))
	return append(b, devState...), nil
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// savedState is a decoded, validated blob.
type savedState struct {
	status, isr, generation uint32
	needsReset, active      bool
	devFeatSel, drvFeatSel  uint32
	drvFeat                 uint64
	queueSel                uint32
	queues                  []queue.State
	device                  []byte
}

// decodeState parses a blob and checks it against this transport's device:
// same type and queues, features it offers, a status the state machine can
// reach. Addresses are checked against guest memory when queues are built.
func (t *Transport) decodeState(b []byte) (*savedState, error) {
	le := binary.LittleEndian
	if err := devstate.CheckMin(b, stateVersion, stateHeaderLen); err != nil {
		return nil, err
	}
	if typ := le.Uint32(b[2:]); typ != t.dev.Type() {
		return nil, fmt.Errorf("state of device type %d, this device is type %d", typ, t.dev.Type())
	}
	s := &savedState{status: le.Uint32(b[6:])}
	flags := b[10]
	s.isr = le.Uint32(b[11:])
	s.generation = le.Uint32(b[15:])
	s.devFeatSel = le.Uint32(b[19:])
	s.drvFeatSel = le.Uint32(b[23:])
	s.drvFeat = le.Uint64(b[27:])
	s.queueSel = le.Uint32(b[35:])
	nq := int(le.Uint16(b[39:]))
	if flags&^(flagNeedsReset|flagActive) != 0 {
		return nil, fmt.Errorf("unknown flags %#x", flags)
	}
	s.needsReset, s.active = flags&flagNeedsReset != 0, flags&flagActive != 0
	if nq != len(t.sizes) {
		return nil, fmt.Errorf("state has %d queues, this device %d", nq, len(t.sizes))
	}
	rest := b[stateHeaderLen:]
	if len(rest) < nq*stateQueueLen+4 {
		return nil, fmt.Errorf("state of %d bytes is too short for %d queues", len(b), nq)
	}
	for i := range nq {
		q := rest[i*stateQueueLen:]
		st := queue.State{
			MaxSize: le.Uint16(q[0:]), Size: le.Uint16(q[2:]), Ready: q[4] != 0,
			DescTable: le.Uint64(q[5:]), AvailRing: le.Uint64(q[13:]), UsedRing: le.Uint64(q[21:]),
			NextAvail: le.Uint16(q[29:]), NextUsed: le.Uint16(q[31:]), EventIdx: q[33] != 0,
		}
		if q[4] > 1 || q[33] > 1 {
			return nil, fmt.Errorf("queue %d: flag bytes %d, %d", i, q[4], q[33])
		}
		if st.MaxSize != t.sizes[i] {
			return nil, fmt.Errorf("queue %d: saved max size %d, this device %d", i, st.MaxSize, t.sizes[i])
		}
		if st.Size > st.MaxSize || st.Size&(st.Size-1) != 0 || (st.Ready && st.Size == 0) {
			return nil, fmt.Errorf("queue %d: size %d (max %d)", i, st.Size, st.MaxSize)
		}
		s.queues = append(s.queues, st)
	}
	rest = rest[nq*stateQueueLen:]
	n := le.Uint32(rest)
	rest = rest[4:]
	if n > maxDeviceState || uint64(n) != uint64(len(rest)) {
		return nil, fmt.Errorf("device state of %d bytes, %d follow", n, len(rest))
	}
	s.device = rest
	if err := t.checkSaved(s); err != nil {
		return nil, err
	}
	return s, nil
}

// checkSaved checks the register values of s the way the state machine
// would have produced them.
func (t *Transport) checkSaved(s *savedState) error {
	st := s.status
	switch {
	case st&^statusKnown != 0:
		return fmt.Errorf("status %#x has unknown bits", st)
	case st&virtio.StatusDriver != 0 && st&virtio.StatusAcknowledge == 0,
		st&virtio.StatusFeaturesOK != 0 && st&virtio.StatusDriver == 0,
		st&virtio.StatusDriverOK != 0 && st&virtio.StatusFeaturesOK == 0:
		return fmt.Errorf("status %#x skips a step", st)
	case s.drvFeat&^t.offers != 0:
		return fmt.Errorf("driver features %#x not offered by this device (offers %#x)", s.drvFeat&^t.offers, t.offers)
	case st&virtio.StatusFeaturesOK != 0 && s.drvFeat&virtio.FeatureVersion1 == 0:
		return errors.New("features accepted without VIRTIO_F_VERSION_1")
	case s.isr&^(virtio.InterruptUsedBuffer|virtio.InterruptConfigChange) != 0:
		return fmt.Errorf("interrupt status %#x has unknown bits", s.isr)
	case s.active && st&virtio.StatusDriverOK == 0:
		return fmt.Errorf("active device with status %#x", st)
	}
	return nil
}

// RestoreState loads a blob from SaveState into a paused transport that
// the driver has not touched since it was created or reset. If the saved
// device was running, the device is activated on the saved queues (and
// stays idle until Resume). The blob is untrusted: it is validated against
// this device and guest memory first, and on any error the transport is
// left reset.
func (t *Transport) RestoreState(data []byte) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.paused.Load() {
		return ErrNotPaused
	}
	if t.status.Load() != 0 || t.active.Load() {
		return errors.New("mmio: restore into a transport the driver already set up")
	}
	s, err := t.decodeState(data)
	if err != nil {
		return fmt.Errorf("mmio: restore: %w", err)
	}
	// A device that failed stays down: the driver will see
	// DEVICE_NEEDS_RESET and reset it, as it would have.
	activate := s.active && !s.needsReset
	eventIdx := s.drvFeat&virtio.FeatureEventIdx != 0
	var live []*queue.Queue
	if activate {
		for i, qs := range s.queues {
			qs.EventIdx = eventIdx
			q, err := queue.New(qs, t.mem)
			if err != nil {
				return fmt.Errorf("mmio: restore: queue %d: %w", i, err)
			}
			live = append(live, q)
		}
	}
	t.status.Store(s.status)
	t.isr.Store(s.isr)
	t.generation.Store(s.generation)
	t.needsReset.Store(s.needsReset)
	t.devFeatSel, t.drvFeatSel, t.drvFeat, t.queueSel = s.devFeatSel, s.drvFeatSel, s.drvFeat, s.queueSel
	t.queues = s.queues
	if activate {
		if err := t.dev.Activate(t.mem, live, s.drvFeat, t); err != nil {
			t.reset()
			return fmt.Errorf("mmio: restore: activate device type %d: %w", t.dev.Type(), err)
		}
		t.live = live
		t.active.Store(true)
	}
	if sn, ok := t.dev.(Snapshotter); ok {
		err = sn.RestoreState(s.device)
	} else {
		err = fmt.Errorf("device type %d cannot be restored", t.dev.Type())
	}
	if err != nil {
		t.reset()
		return fmt.Errorf("mmio: restore device type %d: %w", t.dev.Type(), err)
	}
	return nil
}
