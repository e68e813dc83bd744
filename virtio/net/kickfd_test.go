package net

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/boxd-dev/boxd/virtio/mmio"
)

var _ mmio.KickFDUser = (*Device)(nil)

// Frames flow both ways when the guest's kicks arrive only through the
// queues' ioeventfds, as in a VM, never through Notify; and Close releases
// the duplicates the device kept.
func TestKickThroughIOEventFDs(t *testing.T) {
	before := openFDs(t)
	var kicks []int
	for range 2 {
		fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		kicks = append(kicks, fd)
	}
	be, peer := newSockPair(t)
	d, err := New(Config{Backend: be})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.UseKickFDs(kicks[:1]); err == nil {
		t.Error("one kick fd for two queues accepted")
	}
	if err := d.UseKickFDs(kicks); err != nil {
		t.Fatal(err)
	}
	if err := d.UseKickFDs(kicks); err == nil {
		t.Error("a second UseKickFDs succeeded")
	}
	g := newGuest(t, d, guestOptions{features: FeatureMrgRxbuf})
	for q, drv := range []*struct{ notify *func() }{{&g.rx.Notify}, {&g.tx.Notify}} {
		*drv.notify = func() {
			one := [8]byte{1}
			if _, err := unix.Write(kicks[q], one[:]); err != nil {
				t.Error(err)
			}
		}
	}

	for i := range 3 {
		frame := testFrame(1000+i, byte(i))
		h := g.send(header(0, 0, 0, 0, 0, 0), frame)
		g.waitTx(h)
		if got := peerRead(t, peer); !bytes.Equal(got[HeaderLen:], frame) {
			t.Fatalf("tx frame %d: the peer got %d bytes, want %d", i, len(got)-HeaderLen, len(frame))
		}
	}
	g.fillRx(4, 2048)
	for i := range 3 {
		frame := testFrame(60+i, byte(i))
		peerWrite(t, peer, append(header(0, 0, 0, 0, 0, 0), frame...))
		if got := g.recv(); !bytes.Equal(got.frame, frame) {
			t.Fatalf("rx frame %d: got %d bytes, want %d", i, len(got.frame), len(frame))
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.UseKickFDs(kicks); err == nil {
		t.Error("UseKickFDs after Close succeeded")
	}
	peer.Close()
	unix.Close(kicks[0])
	unix.Close(kicks[1])
	if after := openFDs(t); after != before {
		t.Errorf("open descriptors: %d before, %d after the device and its kick fds were closed", before, after)
	}
}
