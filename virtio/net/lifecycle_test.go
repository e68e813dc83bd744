package net

import (
	"bytes"
	"testing"

	"github.com/boxd-dev/boxd/virtio"
)

// TestResetAndReprobe: a reset in the middle of traffic (with a frame
// staged, waiting for buffers) drops that frame, and a new driver gets a
// working device.
func TestResetAndReprobe(t *testing.T) {
	d, peer := newTestDevice(t, Config{}, false)
	g := newGuest(t, d, guestOptions{features: FeatureMrgRxbuf | virtio.FeatureEventIdx})
	g.fillRx(1, 256)
	peerWrite(t, peer, append(header(0, 0, 0, 0, 0, 0), testFrame(1000, 1)...))
	// The pass that completes this transmit reads the backend after it (tx
	// before rx), when the frame is already queued; Reset waits for that
	// pass to end. So the frame is staged, waiting for buffers, at reset.
	h := g.send(header(0, 0, 0, 0, 0, 0), testFrame(60, 2))
	peerRead(t, peer)
	g.waitTx(h)
	g.reset()
	if d.running.Load() {
		t.Fatal("worker running after reset")
	}
	if d.stats.RxDropped.Load() != 1 || d.stats.RxFrames.Load() != 0 {
		t.Errorf("stats after reset: %s; want the staged frame dropped", d.stats.String())
	}
	g = newGuest(t, d, guestOptions{features: FeatureMrgRxbuf})
	g.fillRx(4, 2048)
	frame := testFrame(1514, 3)
	peerWrite(t, peer, append(header(0, 0, 0, 0, 0, 0), frame...))
	if got := g.recv(); !bytes.Equal(got.frame, frame) {
		t.Error("frame after re-probe differs")
	}
	h = g.send(header(0, 0, 0, 0, 0, 0), frame)
	if got := peerRead(t, peer); !bytes.Equal(got[HeaderLen:], frame) {
		t.Error("transmit after re-probe differs")
	}
	g.waitTx(h)
}

// TestBackendHangup: when the host side goes away the device keeps
// completing transmit chains (dropping them) instead of stalling or
// spinning on a dead descriptor.
func TestBackendHangup(t *testing.T) {
	d, peer := newTestDevice(t, Config{}, false)
	g := newGuest(t, d, guestOptions{features: FeatureMrgRxbuf})
	g.fillRx(4, 2048)
	peer.Close()
	for i := range 3 {
		g.waitTx(g.send(header(0, 0, 0, 0, 0, 0), testFrame(100, byte(i))))
	}
	if d.stats.TxDropped.Load() != 3 || d.stats.BackendErrors.Load() == 0 {
		t.Errorf("stats: %s; want 3 transmit drops and backend errors", d.stats.String())
	}
	if g.needsReset() {
		t.Errorf("a host-side failure set DEVICE_NEEDS_RESET: %v", g.tr.Err())
	}
}

// TestActivateAfterClose: a closed device refuses activation.
func TestActivateAfterClose(t *testing.T) {
	d, _ := newTestDevice(t, Config{}, false)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := probeOnly(t, d, 0); err == nil {
		t.Error("probe of a closed device succeeded")
	}
}

// TestNotifyRacesLifecycle: kicks from another goroutine (the ioeventfd
// path) while the driver resets, re-probes and the device closes; run
// under -race.
func TestNotifyRacesLifecycle(t *testing.T) {
	d, _ := newTestDevice(t, Config{}, false)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
				d.Notify(i % 2)
			}
		}
	}()
	for range 20 {
		g := newGuest(t, d, guestOptions{features: FeatureMrgRxbuf})
		g.fillRx(4, 2048)
		g.reset()
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	close(stop)
	<-done
}
