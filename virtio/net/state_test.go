package net

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/boxd-dev/boxd/virtio"
)

// Pause puts the receive chain the worker holds (waiting for a frame) back
// on the ring, so nothing is in flight; after Resume reception goes on with
// the same buffers.
func TestPauseReturnsHeldChains(t *testing.T) {
	d, peer := newTestDevice(t, Config{}, false)
	g := newGuest(t, d, guestOptions{features: FeatureMrgRxbuf | virtio.FeatureEventIdx})
	g.fillRx(4, 2048)
	first := testFrame(200, 1)
	peerWrite(t, peer, append(header(0, 0, 0, 0, 0, 0), first...))
	if got := g.recv(); !bytes.Equal(got.frame, first) {
		t.Fatal("first frame differs")
	}
	// The pass that delivered the frame went on to hold the next chain;
	// Pause waits for that pass.
	g.tr.Pause()
	d.mu.Lock()
	rx := d.w.rx.State()
	held := len(d.w.held)
	d.mu.Unlock()
	if rx.NextAvail != rx.NextUsed || held != 0 {
		t.Fatalf("after pause: next avail %d, next used %d, %d held; want nothing in flight", rx.NextAvail, rx.NextUsed, held)
	}
	if _, err := g.tr.SaveState(); err != nil {
		t.Fatal(err)
	}
	second := testFrame(300, 2)
	peerWrite(t, peer, append(header(0, 0, 0, 0, 0, 0), second...))
	g.tr.Resume()
	if got := g.recv(); !bytes.Equal(got.frame, second) {
		t.Error("frame after resume differs")
	}
	if d.stats.RxDropped.Load() != 0 {
		t.Errorf("stats: %s", d.stats.String())
	}
}

// A link change while paused raises its interrupt only on Resume.
func TestPauseHoldsLinkChange(t *testing.T) {
	d, _ := newTestDevice(t, Config{}, false)
	g := newGuest(t, d, guestOptions{features: FeatureStatus})
	g.tr.Pause()
	before := g.irq.Count()
	d.SetLinkUp(false)
	if n := g.irq.Count() - before; n != 0 {
		t.Errorf("%d interrupts while paused", n)
	}
	g.tr.Resume()
	g.waitConfigChange()
}

func TestRestoreStateRejects(t *testing.T) {
	d, _ := newTestDevice(t, Config{}, false)
	for _, tc := range []struct {
		blob []byte
		want string
	}{
		{nil, "too short"},
		{[]byte{2, 0}, "unknown state version 2"},
		{[]byte{1, 0, 0}, "want 2"},
	} {
		if err := d.RestoreState(tc.blob); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("RestoreState(%x) = %v, want an error with %q", tc.blob, err, tc.want)
		}
	}
}

func FuzzRestoreState(f *testing.F) {
	f.Add(binary.LittleEndian.AppendUint16(nil, stateVersion))
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		if checkState(b) == nil && !bytes.Equal(b, []byte{1, 0}) {
			t.Fatalf("accepted %x", b)
		}
	})
}
