package net

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/boxd-dev/boxd/virtio"
	"github.com/boxd-dev/boxd/virtio/queue"
)

// splitEvery returns split offsets every n bytes below total.
func splitEvery(n, total int) []int {
	var s []int
	for i := n; i < total; i += n {
		s = append(s, i)
	}
	return s
}

func TestTxFrames(t *testing.T) {
	plain := header(0, GSONone, 0, 0, 0, 0)
	tests := []struct {
		name     string
		features uint64
		hdr      []byte
		size     int
		splits   []int
	}{
		{"minimum frame, one descriptor", 0, plain, 14, nil},
		{"60 bytes, header apart", 0, plain, 60, []int{HeaderLen}},
		{"1514 bytes, split inside the header", 0, plain, 1514, []int{5, 700}},
		{"1514 bytes over 16 descriptors", 0, plain, 1514, splitEvery(100, HeaderLen+1514)},
		{"largest frame", 0, plain, MaxFrameLen, []int{HeaderLen, 4096}},
		{"partial checksum", FeatureCsum, header(HdrNeedsCsum, GSONone, 0, 0, 34, 6), 1514, nil},
		{"TSO4", FeatureCsum | FeatureHostTSO4, header(HdrNeedsCsum, GSOTCPv4, 54, 1448, 34, 16), 30000, []int{HeaderLen, HeaderLen + 54}},
		{"TSO6", FeatureCsum | FeatureHostTSO6, header(HdrNeedsCsum, GSOTCPv6, 74, 1428, 54, 16), 65000, nil},
		{"event idx", virtio.FeatureEventIdx, plain, 1000, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, peer := newTestDevice(t, Config{}, true)
			g := newGuest(t, d, guestOptions{features: tt.features})
			for i := range 3 {
				frame := testFrame(tt.size, byte(i))
				h := append([]byte(nil), tt.hdr...)
				h[10], h[11] = 0xaa, 0xbb // num_buffers: the device zeroes it on transmit
				head := g.send(h, frame, tt.splits...)
				got := peerRead(t, peer)
				want := append(append([]byte(nil), tt.hdr...), frame...)
				if !bytes.Equal(got, want) {
					t.Fatalf("frame %d: backend got %d bytes, want %d (first difference at %d)", i, len(got), len(want), firstDiff(got, want))
				}
				g.waitTx(head)
			}
			if got := d.stats.TxFrames.Load(); got != 3 {
				t.Errorf("TxFrames = %d, want 3", got)
			}
			if got, want := d.stats.TxBytes.Load(), uint64(3*tt.size); got != want {
				t.Errorf("TxBytes = %d, want %d", got, want)
			}
			if d.stats.TxInvalid.Load()+d.stats.TxDropped.Load() != 0 {
				t.Errorf("stats: %s", d.stats.String())
			}
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func TestTxIndirect(t *testing.T) {
	d, peer := newTestDevice(t, Config{}, false)
	g := newGuest(t, d, guestOptions{features: virtio.FeatureIndirectDesc})
	frame := testFrame(1514, 9)
	data := append(header(0, 0, 0, 0, 0, 0), frame...)
	var bufs []queue.Buffer
	for i := 0; i < len(data); i += 300 {
		end := min(i+300, len(data))
		b := g.tx.Buf(uint32(end-i), data[i:end])
		bufs = append(bufs, b)
	}
	head, err := g.tx.AddIndirect(bufs, nil)
	if err != nil {
		t.Fatal(err)
	}
	g.tx.Kick()
	if got := peerRead(t, peer); !bytes.Equal(got, data) {
		t.Fatalf("indirect frame differs at byte %d", firstDiff(got, data))
	}
	g.wait("indirect chain", func() bool { return g.tx.Free() == int(g.tx.Size()) })
	_ = head
}

// TestTxStream sends many frames through a small queue, so the rings wrap
// and the device meets EAGAIN from a peer that reads slowly.
func TestTxStream(t *testing.T) {
	for _, eventIdx := range []bool{false, true} {
		t.Run(fmt.Sprintf("eventidx=%v", eventIdx), func(t *testing.T) {
			var f uint64
			if eventIdx {
				f = virtio.FeatureEventIdx
			}
			d, peer := newTestDevice(t, Config{QueueSize: 16}, false)
			g := newGuest(t, d, guestOptions{features: f})
			const n = 500
			errc := make(chan error, 1)
			go func() {
				for i := range n {
					got, err := peerReadErr(peer)
					if err != nil {
						errc <- err
						return
					}
					if want := append(header(0, 0, 0, 0, 0, 0), testFrame(64+i%1400, byte(i))...); !bytes.Equal(got, want) {
						errc <- fmt.Errorf("frame %d: got %d bytes, want %d", i, len(got), len(want))
						return
					}
				}
				errc <- nil
			}()
			for i := range n {
				g.wait("a free descriptor", func() bool { return g.tx.Free() > 0 })
				g.send(header(0, 0, 0, 0, 0, 0), testFrame(64+i%1400, byte(i)))
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			g.wait("all chains back", func() bool { return g.tx.Free() == int(g.tx.Size()) })
			if got := d.stats.TxFrames.Load(); got != n {
				t.Errorf("TxFrames = %d, want %d", got, n)
			}
		})
	}
}

// TestTxEAGAIN drives the worker by hand: a full backend leaves the chain
// pending with interest in writability, and the next pass sends it.
func TestTxEAGAIN(t *testing.T) {
	be, peer := newSockPair(t)
	d, err := New(Config{Backend: be})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	x := newDirect(t, d, 0, 16, 1<<20)
	// Fill the peer's receive queue from the device's side.
	filler := append(header(0, 0, 0, 0, 0, 0), testFrame(60, 0xff)...)
	fill := 0
	for {
		if _, err := unix.Write(be.fd, filler); errors.Is(err, unix.EAGAIN) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		fill++
	}
	var want [][]byte
	for i := range 3 {
		frame := append(header(0, 0, 0, 0, 0, 0), testFrame(100, byte(i))...)
		b := x.tx.Buf(uint32(len(frame)), frame)
		if _, err := x.tx.Add([]queue.Buffer{b}, nil); err != nil {
			t.Fatal(err)
		}
		want = append(want, frame)
	}
	if more := x.w.txPass(); more {
		t.Error("txPass reports more work while blocked")
	}
	if x.w.txPending == nil || x.w.interest()&unix.EPOLLOUT == 0 {
		t.Fatalf("after EAGAIN: pending %v, interest %#x; want the chain kept and EPOLLOUT", x.w.txPending, x.w.interest())
	}
	if x.tx.UsedIdx() != 0 {
		t.Errorf("used idx %d while the first frame is still blocked", x.tx.UsedIdx())
	}
	for range fill {
		peerRead(t, peer)
	}
	x.w.txPass()
	if x.w.txPending != nil || x.w.interest()&unix.EPOLLOUT != 0 {
		t.Errorf("after draining: pending %v, interest %#x", x.w.txPending, x.w.interest())
	}
	for i, w := range want {
		if got := peerRead(t, peer); !bytes.Equal(got, w) {
			t.Errorf("frame %d differs at byte %d", i, firstDiff(got, w))
		}
	}
	if u, err := x.tx.Reap(); err != nil || len(u) != 3 {
		t.Errorf("reaped %v, %v; want 3 entries", u, err)
	}
	if d.stats.TxFrames.Load() != 3 || d.stats.TxDropped.Load() != 0 {
		t.Errorf("stats: %s", d.stats.String())
	}
}

func TestTxMalformed(t *testing.T) {
	plain := header(0, 0, 0, 0, 0, 0)
	csum := FeatureCsum
	tso := FeatureCsum | FeatureHostTSO4 | FeatureHostTSO6
	tests := []struct {
		name     string
		features uint64
		chain    func(g *guest) // makes one bad chain available
		noUsed   bool           // the head itself is invalid: nothing comes back
	}{
		{"writable buffer", 0, func(g *guest) {
			r := g.tx.Buf(HeaderLen+60, append(plain, testFrame(60, 0)...))
			g.tx.Add([]queue.Buffer{r}, []queue.Buffer{g.tx.Buf(64, nil)})
		}, false},
		{"only writable", 0, func(g *guest) { g.tx.Add(nil, []queue.Buffer{g.tx.Buf(100, nil)}) }, false},
		{"short header", 0, func(g *guest) { g.tx.Add([]queue.Buffer{g.tx.Buf(11, plain)}, nil) }, false},
		{"header only", 0, func(g *guest) { g.tx.Add([]queue.Buffer{g.tx.Buf(HeaderLen, plain)}, nil) }, false},
		{"runt frame", 0, func(g *guest) { g.tx.Add([]queue.Buffer{g.tx.Buf(HeaderLen+13, plain)}, nil) }, false},
		{"frame too long", 0, func(g *guest) {
			g.tx.Add([]queue.Buffer{g.tx.Buf(HeaderLen+MaxFrameLen, plain), g.tx.Buf(1, nil)}, nil)
		}, false},
		{"data valid flag", 0, bad(header(HdrDataValid, 0, 0, 0, 0, 0)), false},
		{"rsc flag", csum, bad(header(HdrRSCInfo, 0, 0, 0, 0, 0)), false},
		{"csum not negotiated", 0, bad(header(HdrNeedsCsum, 0, 0, 0, 34, 6)), false},
		{"csum past the frame", csum, bad(header(HdrNeedsCsum, 0, 0, 0, 1500, 16)), false},
		{"hdr_len past the frame", csum, bad(header(0, 0, 2000, 0, 0, 0)), false},
		{"TSO4 not negotiated", csum, bad(header(HdrNeedsCsum, GSOTCPv4, 54, 1448, 34, 16)), false},
		{"TSO without NEEDS_CSUM", tso, bad(header(0, GSOTCPv4, 54, 1448, 0, 0)), false},
		{"TSO with gso_size 0", tso, bad(header(HdrNeedsCsum, GSOTCPv6, 74, 0, 54, 16)), false},
		{"UFO", tso, bad(header(HdrNeedsCsum, GSOUDP, 42, 1400, 34, 6)), false},
		{"TSO with ECN", tso, bad(header(HdrNeedsCsum, GSOTCPv4|GSOECN, 54, 1448, 34, 16)), false},
		{"unknown GSO type", tso, bad(header(HdrNeedsCsum, 9, 54, 1448, 34, 16)), false},
		{"buffer outside RAM", 0, func(g *guest) {
			g.tx.Add([]queue.Buffer{{Addr: 0x1000, Len: 100}}, nil)
		}, false},
		{"head out of range", 0, func(g *guest) { g.tx.PushAvail(g.tx.Size() + 3) }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, peer := newTestDevice(t, Config{}, true)
			g := newGuest(t, d, guestOptions{features: tt.features})
			tt.chain(g)
			g.tx.Kick()
			if !tt.noUsed {
				g.wait("the bad chain back", func() bool { return g.tx.Free() == int(g.tx.Size()) })
			}
			// The device carries on: the next good frame is the first
			// thing the backend sees.
			frame := testFrame(60, 7)
			head := g.send(plain, frame)
			if got, want := peerRead(t, peer), append(plain, frame...); !bytes.Equal(got, want) {
				t.Errorf("backend got %d bytes, want the %d-byte good frame", len(got), len(want))
			}
			g.waitTx(head)
			if d.stats.TxInvalid.Load() != 1 || d.stats.TxFrames.Load() != 1 || d.stats.TxDropped.Load() != 0 {
				t.Errorf("stats: %s; want one invalid and one sent", d.stats.String())
			}
			if g.needsReset() {
				t.Errorf("device needs reset after a bad chain: %v", g.tr.Err())
			}
		})
	}
}

// bad returns a chain maker for a 1514-byte frame behind header h.
func bad(h []byte) func(g *guest) {
	return func(g *guest) {
		data := append(append([]byte(nil), h...), testFrame(1514, 3)...)
		g.tx.Add([]queue.Buffer{g.tx.Buf(uint32(len(data)), data)}, nil)
	}
}

// TestCorruptRing: an available index too far ahead is not a bad chain but
// a broken ring; the device asks for a reset and stops.
func TestCorruptRing(t *testing.T) {
	d, _ := newTestDevice(t, Config{}, false)
	g := newGuest(t, d, guestOptions{})
	g.tx.SetAvailIdx(g.tx.Size() + 5)
	g.tx.Kick()
	g.waitConfigChange()
	if !g.needsReset() {
		t.Fatal("no DEVICE_NEEDS_RESET after a corrupt available index")
	}
	g.reset()
	g = newGuest(t, d, guestOptions{})
	if g.needsReset() {
		t.Error("still needs reset after re-probe")
	}
}
