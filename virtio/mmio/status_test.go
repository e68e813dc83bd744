package mmio_test

import (
	"errors"
	"testing"

	"github.com/boxd-dev/boxd/virtio"
	"github.com/boxd-dev/boxd/virtio/mmio"
	"github.com/boxd-dev/boxd/virtio/virtiotest"
)

func TestFeatureNegotiation(t *testing.T) {
	tests := []struct {
		name     string
		lo, hi   uint32
		wantOK   bool
		moreSets func(tr *mmio.Transport)
	}{
		{"version 1 only", 0, 1, true, nil},
		{"offered device bit", 1 << 5, 1, true, nil},
		{"not offered bit", 1 << 6, 1, false, nil},
		{"no version 1", 1 << 5, 0, false, nil},
		{"select 2 ignored", 0, 1, true, func(tr *mmio.Transport) {
			write(tr, mmio.RegDriverFeaturesSel, 2)
			write(tr, mmio.RegDriverFeatures, 0xffffffff)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, _, _ := newTransport(t, newFake())
			write(tr, mmio.RegStatus, 1)
			write(tr, mmio.RegStatus, 3)
			write(tr, mmio.RegDriverFeaturesSel, 0)
			write(tr, mmio.RegDriverFeatures, tt.lo)
			write(tr, mmio.RegDriverFeaturesSel, 1)
			write(tr, mmio.RegDriverFeatures, tt.hi)
			if tt.moreSets != nil {
				tt.moreSets(tr)
			}
			write(tr, mmio.RegStatus, 0xb)
			got := read(tr, mmio.RegStatus)&virtio.StatusFeaturesOK != 0
			if got != tt.wantOK {
				t.Errorf("FEATURES_OK accepted = %v, want %v (err %v)", got, tt.wantOK, tr.Err())
			}
		})
	}
}

func TestFeaturesFrozenAfterFeaturesOK(t *testing.T) {
	dev := newFake()
	tr, mem, _ := newTransport(t, dev)
	probe(t, tr, mem, 0)
	write(tr, mmio.RegDriverFeaturesSel, 0)
	before := tr.Stats().InvalidAccesses.Load()
	write(tr, mmio.RegDriverFeatures, 1<<5)
	if got := tr.Stats().InvalidAccesses.Load(); got != before+1 {
		t.Errorf("late feature write not refused: invalid accesses %d -> %d", before, got)
	}
	if dev.negotiate != virtio.FeatureVersion1 {
		t.Errorf("negotiated = %#x", dev.negotiate)
	}
}

func TestStatusStateMachine(t *testing.T) {
	tests := []struct {
		name      string
		writes    []uint32
		want      uint32
		activates int
	}{
		{"in order", []uint32{1, 3, 0xb, 0xf}, 0xf, 1},
		{"driver before acknowledge", []uint32{2}, 0, 0},
		{"features ok before driver", []uint32{1, 9}, 1, 0},
		{"driver ok before features ok", []uint32{1, 3, 7}, 3, 0},
		{"clearing a bit", []uint32{1, 3, 1}, 3, 0},
		{"all at once, no features written", []uint32{0xf}, 0x3, 0},
		{"failed", []uint32{1, 3, 0x83}, 0x83, 0},
		{"driver after failed", []uint32{1, 0x81, 0x83}, 0x81, 0},
		{"needs-reset bit from driver ignored", []uint32{0x41}, 1, 0},
		{"unknown bit", []uint32{0x11}, 0, 0},
		{"rewrite same", []uint32{1, 3, 0xb, 0xf, 0xf}, 0xf, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dev := newFake()
			tr, _, _ := newTransport(t, dev)
			write(tr, mmio.RegDriverFeaturesSel, 1)
			for _, w := range tt.writes {
				if w&virtio.StatusDriver != 0 {
					write(tr, mmio.RegDriverFeatures, 1) // VERSION_1 while allowed
				}
				write(tr, mmio.RegStatus, w)
			}
			if got := read(tr, mmio.RegStatus); got != tt.want {
				t.Errorf("status = %#x, want %#x", got, tt.want)
			}
			if dev.activates != tt.activates {
				t.Errorf("activates = %d, want %d", dev.activates, tt.activates)
			}
		})
	}
}

func TestQueueConfigRules(t *testing.T) {
	tr, _, _ := newTransport(t, newFake())
	write(tr, mmio.RegQueueSel, 0)
	write(tr, mmio.RegQueueNum, 8) // before FEATURES_OK: ignored
	write(tr, mmio.RegQueueReady, 1)
	if read(tr, mmio.RegQueueReady) != 0 {
		t.Error("queue enabled before FEATURES_OK")
	}
	write(tr, mmio.RegStatus, 1)
	write(tr, mmio.RegStatus, 3)
	write(tr, mmio.RegDriverFeaturesSel, 1)
	write(tr, mmio.RegDriverFeatures, 1)
	write(tr, mmio.RegStatus, 0xb)
	write(tr, mmio.RegQueueReady, 1) // no size yet
	if read(tr, mmio.RegQueueReady) != 0 {
		t.Error("queue enabled without a size")
	}
	for _, bad := range []uint32{0, 12, 32} {
		write(tr, mmio.RegQueueNum, bad)
	}
	write(tr, mmio.RegQueueSel, 7)
	if read(tr, mmio.RegQueueNumMax) != 0 {
		t.Error("QueueNumMax of a missing queue is not 0")
	}
	write(tr, mmio.RegQueueNum, 8) // missing queue: ignored
	if got := tr.Stats().InvalidAccesses.Load(); got != 7 {
		t.Errorf("invalid accesses = %d, want 7", got)
	}
}

// Queue addresses are only checked against guest RAM at DRIVER_OK; bad ones
// make the device need a reset instead of activating it.
func TestActivateWithBadRings(t *testing.T) {
	dev := newFake()
	tr, _, irq := newTransport(t, dev)
	write(tr, mmio.RegStatus, 1)
	write(tr, mmio.RegStatus, 3)
	write(tr, mmio.RegDriverFeaturesSel, 1)
	write(tr, mmio.RegDriverFeatures, 1)
	write(tr, mmio.RegStatus, 0xb)
	write(tr, mmio.RegQueueSel, 0)
	write(tr, mmio.RegQueueNum, 16)
	write(tr, mmio.RegQueueDescLow, 0x1000) // below RAM
	write(tr, mmio.RegQueueReady, 1)
	write(tr, mmio.RegStatus, 0xf)
	if got := read(tr, mmio.RegStatus); got != 0x4f {
		t.Errorf("status = %#x, want DEVICE_NEEDS_RESET|0xf", got)
	}
	if dev.activates != 0 || tr.Err() == nil {
		t.Errorf("activates = %d, err = %v", dev.activates, tr.Err())
	}
	if irq.Count() != 1 || read(tr, mmio.RegInterruptStatus) != virtio.InterruptConfigChange {
		t.Error("no config-change interrupt for DEVICE_NEEDS_RESET")
	}
	write(tr, mmio.RegQueueNotify, 0)
	if len(dev.notifies) != 0 {
		t.Error("notify forwarded to a device that was not activated")
	}
}

func TestActivateError(t *testing.T) {
	dev := newFake()
	dev.activateErr = errors.New("boom")
	tr, mem, _ := newTransport(t, dev)
	if _, err := virtiotest.Probe(tr, mem, virtiotest.ProbeOptions{Region: memBase, RegionSize: regionSize}); err == nil {
		t.Fatal("Probe succeeded with a failing device")
	}
	if read(tr, mmio.RegStatus)&virtio.StatusDeviceNeedsReset == 0 {
		t.Error("DEVICE_NEEDS_RESET not set")
	}
	if !errors.Is(tr.Err(), dev.activateErr) {
		t.Errorf("Err = %v", tr.Err())
	}
}

func TestReset(t *testing.T) {
	dev := newFake()
	tr, mem, _ := newTransport(t, dev)
	probe(t, tr, mem, virtio.FeatureEventIdx)
	if err := tr.Signal(virtio.InterruptUsedBuffer); err != nil {
		t.Fatal(err)
	}
	tr.Fail(errors.New("ring corrupt"))
	write(tr, mmio.RegStatus, 0)
	if dev.resets != 1 {
		t.Errorf("device resets = %d", dev.resets)
	}
	for _, r := range []struct {
		name string
		off  uint64
	}{{"status", mmio.RegStatus}, {"interrupt status", mmio.RegInterruptStatus}, {"queue ready", mmio.RegQueueReady}} {
		if got := read(tr, r.off); got != 0 {
			t.Errorf("%s after reset = %#x", r.name, got)
		}
	}
	// Linux's del_vqs writes QueueReady=0 after resetting: accepted quietly.
	before := tr.Stats().InvalidAccesses.Load()
	write(tr, mmio.RegQueueReady, 0)
	if tr.Stats().InvalidAccesses.Load() != before {
		t.Error("QueueReady=0 after reset counted as invalid")
	}
	write(tr, mmio.RegQueueNotify, 0)
	if len(dev.notifies) != 0 {
		t.Error("notify reached a reset device")
	}
	// The device comes back with a second probe, as after a driver reload.
	g := probe(t, tr, mem, 0)
	if dev.activates != 2 || g.Features != virtio.FeatureVersion1 {
		t.Errorf("activates = %d, features = %#x", dev.activates, g.Features)
	}
}
