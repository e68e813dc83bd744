package mmio

import (
	"encoding/binary"
	"fmt"

	"github.com/boxd-dev/boxd/virtio"
	"github.com/boxd-dev/boxd/virtio/queue"
)

// Read handles a guest read of data (1-8 bytes) at offset in the window.
// Registers below ConfigOffset must be read as aligned 32-bit words (the spec
// requires it); anything else reads as zeros.
func (t *Transport) Read(offset uint64, data []byte) {
	clear(data)
	if offset >= ConfigOffset {
		if offset >= Size || uint64(len(data)) > Size-offset {
			t.stats.InvalidAccesses.Add(1)
			return
		}
		t.mu.Lock()
		t.dev.ReadConfig(offset-ConfigOffset, data)
		t.mu.Unlock()
		return
	}
	if len(data) != 4 || offset%4 != 0 {
		t.stats.InvalidAccesses.Add(1)
		return
	}
	v, ok := t.readReg(offset)
	if !ok {
		t.stats.InvalidAccesses.Add(1)
	}
	binary.LittleEndian.PutUint32(data, v)
}

func (t *Transport) readReg(offset uint64) (uint32, bool) {
	// Registers the device worker also touches are atomics; read them
	// without the lock.
	switch offset {
	case RegMagic:
		return MagicValue, true
	case RegVersion:
		return Version, true
	case RegDeviceID:
		return t.dev.Type(), true
	case RegVendorID:
		return VendorID, true
	case RegInterruptStatus:
		return t.isr.Load(), true
	case RegStatus:
		s := t.status.Load()
		if t.needsReset.Load() {
			s |= virtio.StatusDeviceNeedsReset
		}
		return s, true
	case RegConfigGeneration:
		return t.generation.Load(), true
	case RegSHMLenLow, RegSHMLenHigh, RegSHMBaseLow, RegSHMBaseHigh:
		// No shared memory regions: length and base read as all ones.
		return 0xffff_ffff, true
	case RegQueueReset:
		return 0, true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	switch offset {
	case RegDeviceFeatures:
		switch t.devFeatSel {
		case 0:
			return uint32(t.offers), true
		case 1:
			return uint32(t.offers >> 32), true
		}
		return 0, true
	case RegQueueNumMax:
		if q := t.selected(); q != nil {
			return uint32(q.MaxSize), true
		}
		return 0, true
	case RegQueueReady:
		if q := t.selected(); q != nil && q.Ready {
			return 1, true
		}
		return 0, true
	}
	// Write-only or undefined.
	return 0, false
}

// selected returns the queue QueueSel points at, or nil. mu held.
func (t *Transport) selected() *queue.State {
	if t.queueSel >= uint32(len(t.queues)) {
		return nil
	}
	return &t.queues[t.queueSel]
}

// Write handles a guest write of data (1-8 bytes) at offset in the window.
func (t *Transport) Write(offset uint64, data []byte) {
	if offset >= ConfigOffset {
		if offset >= Size || uint64(len(data)) > Size-offset {
			t.stats.InvalidAccesses.Add(1)
			return
		}
		t.mu.Lock()
		t.dev.WriteConfig(offset-ConfigOffset, data)
		t.mu.Unlock()
		return
	}
	if len(data) != 4 || offset%4 != 0 {
		t.stats.InvalidAccesses.Add(1)
		return
	}
	v := le32(data)
	switch offset {
	case RegQueueNotify:
		// Without VIRTIO_F_NOTIFICATION_DATA the value is the queue index.
		t.Notify(int(v))
		return
	case RegInterruptACK:
		t.isr.And(^v)
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.writeReg(offset, v) {
		t.stats.InvalidAccesses.Add(1)
	}
}

// writeReg applies a register write and reports whether it was acceptable.
// mu held.
func (t *Transport) writeReg(offset uint64, v uint32) bool {
	status := t.status.Load()
	switch offset {
	case RegStatus:
		t.setStatus(v)
		return true
	case RegDeviceFeaturesSel:
		t.devFeatSel = v
		return true
	case RegDriverFeaturesSel:
		t.drvFeatSel = v
		return true
	case RegQueueSel:
		t.queueSel = v
		return true
	case RegSHMSel:
		return true
	case RegDriverFeatures:
		if status&virtio.StatusDriver == 0 || status&(virtio.StatusFeaturesOK|virtio.StatusDriverOK|virtio.StatusFailed) != 0 {
			return false
		}
		switch t.drvFeatSel {
		case 0:
			t.drvFeat = t.drvFeat&^0xffff_ffff | uint64(v)
		case 1:
			t.drvFeat = t.drvFeat&0xffff_ffff | uint64(v)<<32
		default:
			return v == 0 // bits beyond 63 do not exist
		}
		return true
	}

	q := t.selected()
	if q == nil {
		return false
	}
	if offset == RegQueueReady && v == 0 {
		// Linux writes 0 when tearing queues down, also after a reset.
		// Stopping a live queue needs VIRTIO_F_RING_RESET, not offered.
		if status&virtio.StatusDriverOK != 0 && q.Ready {
			return false
		}
		q.Ready = false
		return true
	}
	// Queue configuration belongs between FEATURES_OK and DRIVER_OK, on a
	// queue that is not yet enabled.
	if status&virtio.StatusFeaturesOK == 0 || status&(virtio.StatusDriverOK|virtio.StatusFailed) != 0 || q.Ready {
		return false
	}
	switch offset {
	case RegQueueNum:
		if v == 0 || v > uint32(q.MaxSize) || v&(v-1) != 0 {
			return false
		}
		q.Size = uint16(v)
	case RegQueueReady:
		if v != 1 || q.Size == 0 {
			return false
		}
		q.Ready = true
	case RegQueueDescLow:
		q.DescTable = setLow(q.DescTable, v)
	case RegQueueDescHigh:
		q.DescTable = setHigh(q.DescTable, v)
	case RegQueueDriverLow:
		q.AvailRing = setLow(q.AvailRing, v)
	case RegQueueDriverHigh:
		q.AvailRing = setHigh(q.AvailRing, v)
	case RegQueueDeviceLow:
		q.UsedRing = setLow(q.UsedRing, v)
	case RegQueueDeviceHigh:
		q.UsedRing = setHigh(q.UsedRing, v)
	default:
		return false
	}
	return true
}

func setLow(x uint64, v uint32) uint64  { return x&^0xffff_ffff | uint64(v) }
func setHigh(x uint64, v uint32) uint64 { return x&0xffff_ffff | uint64(v)<<32 }

// setStatus runs the device status state machine (virtio 1.2 §3.1.1). mu held.
func (t *Transport) setStatus(v uint32) {
	if v == 0 {
		t.reset()
		return
	}
	old := t.status.Load()
	// DEVICE_NEEDS_RESET is the device's bit; the driver never sets it.
	v &^= virtio.StatusDeviceNeedsReset
	added := v &^ old
	if v&old != old {
		// The driver must not clear bits except by resetting.
		t.stats.RejectedStatus.Add(1)
		return
	}
	if added == 0 {
		return
	}
	if old&virtio.StatusFailed != 0 {
		// After FAILED only a reset brings the device back.
		t.stats.RejectedStatus.Add(1)
		return
	}
	if added&virtio.StatusFailed != 0 {
		// The driver gave up; accept whatever else it says without acting.
		t.status.Store(old | virtio.StatusFailed)
		return
	}
	ok := true
	switch {
	case added&virtio.StatusDriver != 0 && v&virtio.StatusAcknowledge == 0,
		added&virtio.StatusFeaturesOK != 0 && v&virtio.StatusDriver == 0,
		added&virtio.StatusDriverOK != 0 && v&virtio.StatusFeaturesOK == 0:
		ok = false
	}
	if !ok || added&^(virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusFeaturesOK|virtio.StatusDriverOK) != 0 {
		t.stats.RejectedStatus.Add(1)
		return
	}
	if added&virtio.StatusFeaturesOK != 0 {
		if err := t.checkFeatures(); err != nil {
			// Refuse FEATURES_OK: the driver reads Status back and gives up.
			t.setErr(err)
			t.stats.RejectedStatus.Add(1)
			v &^= virtio.StatusFeaturesOK | virtio.StatusDriverOK
		}
	}
	if v&virtio.StatusDriverOK != 0 && added&virtio.StatusDriverOK != 0 {
		t.status.Store(v)
		t.activate()
		return
	}
	t.status.Store(v)
}

func (t *Transport) checkFeatures() error {
	if extra := t.drvFeat &^ t.offers; extra != 0 {
		return fmt.Errorf("mmio: driver accepted features %#x not offered", extra)
	}
	if t.drvFeat&virtio.FeatureVersion1 == 0 {
		return fmt.Errorf("mmio: driver did not accept VIRTIO_F_VERSION_1")
	}
	return nil
}

// activate builds validated queues and starts the device. mu held, status
// already includes DRIVER_OK.
func (t *Transport) activate() {
	eventIdx := t.drvFeat&virtio.FeatureEventIdx != 0
	qs := make([]*queue.Queue, len(t.queues))
	for i, st := range t.queues {
		st.EventIdx = eventIdx
		q, err := queue.New(st, t.mem)
		if err != nil {
			t.activateFailed(fmt.Errorf("mmio: queue %d: %w", i, err))
			return
		}
		qs[i] = q
	}
	if err := t.dev.Activate(t.mem, qs, t.drvFeat, t); err != nil {
		t.activateFailed(fmt.Errorf("mmio: activate device type %d: %w", t.dev.Type(), err))
		return
	}
	t.live = qs
	t.active.Store(true)
}

func (t *Transport) activateFailed(err error) {
	t.stats.ActivateErrors.Add(1)
	t.setErr(err)
	t.needsReset.Store(true)
	_ = t.Signal(virtio.InterruptConfigChange)
}

func (t *Transport) setErr(err error) { t.lastErr.Store(&err) }

// reset stops the device and clears every register. mu held.
func (t *Transport) reset() {
	// Stop notifications first so the ioeventfd path stops forwarding.
	t.active.Store(false)
	if t.status.Load()&virtio.StatusDriverOK != 0 {
		// Only a device that was (or tried to be) activated has anything to
		// stop; Linux resets every device before probing it.
		t.dev.Reset()
	}
	t.resetRegisters()
}
