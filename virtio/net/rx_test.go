package net

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/boxd-dev/boxd/virtio"
	"github.com/boxd-dev/boxd/virtio/queue"
)

// rep returns n copies of size.
func rep(n int, size uint32) [][]uint32 {
	var c [][]uint32
	for range n {
		c = append(c, []uint32{size})
	}
	return c
}

func TestRxFrames(t *testing.T) {
	mrg := FeatureMrgRxbuf
	tests := []struct {
		name     string
		features uint64
		chains   [][]uint32 // receive chains posted, buffer sizes each
		sizes    []int      // frames the host sends
		buffers  []int      // used entries each frame takes
	}{
		{"mergeable, one buffer each", mrg, rep(8, 2048), []int{14, 60, 1514}, []int{1, 1, 1}},
		{"mergeable, frame of exactly one buffer", mrg, rep(4, 1526), []int{1514, 1515}, []int{1, 2}},
		{"mergeable, 1514 over 512-byte buffers", mrg, rep(8, 512), []int{1514, 60}, []int{3, 1}},
		{"mergeable, header-only buffers", mrg, rep(16, HeaderLen), []int{14, 20}, []int{3, 3}},
		{"mergeable, largest frame over 129 buffers", mrg, rep(140, 512), []int{MaxFrameLen}, []int{129}},
		{"mergeable, multi-descriptor chains", mrg, [][]uint32{{6, 6, 100}, {50, 50}, {2000}}, []int{150, 1000}, []int{2, 1}},
		{"plain, one buffer", 0, rep(2, 1526), []int{1514, 60}, []int{1, 1}},
		{"plain, chain of three descriptors", 0, [][]uint32{{HeaderLen, 100, 2000}}, []int{1514}, []int{1}},
		{"plain, header split across descriptors", 0, [][]uint32{{4, 4, 4, 1600}}, []int{1514}, []int{1}},
		{"plain, largest frame", 0, rep(1, HeaderLen+MaxFrameLen), []int{MaxFrameLen}, []int{1}},
		{"event idx", mrg | virtio.FeatureEventIdx, rep(8, 512), []int{1514, 1514}, []int{3, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, peer := newTestDevice(t, Config{}, false)
			g := newGuest(t, d, guestOptions{features: tt.features})
			for _, c := range tt.chains {
				g.postRx(c...)
			}
			g.rx.Kick()
			for i, size := range tt.sizes {
				frame := testFrame(size, byte(i))
				peerWrite(t, peer, append(header(0, 0, 0, 0, 0, 0), frame...))
				got := g.recv()
				if !bytes.Equal(got.frame, frame) {
					t.Fatalf("frame %d: got %d bytes, want %d (first difference at %d)", i, len(got.frame), len(frame), firstDiff(got.frame, frame))
				}
				wantHdr := header(0, 0, 0, 0, 0, 0)
				wantHdr[10] = 1
				if tt.features&FeatureMrgRxbuf != 0 {
					wantHdr[10] = byte(tt.buffers[i])
				}
				if diff := cmp.Diff(wantHdr, got.hdr); diff != "" {
					t.Errorf("frame %d header (-want +got):\n%s", i, diff)
				}
				if got.buffers != tt.buffers[i] {
					t.Errorf("frame %d took %d buffers, want %d", i, got.buffers, tt.buffers[i])
				}
			}
			if d.stats.RxFrames.Load() != uint64(len(tt.sizes)) || d.stats.RxDropped.Load() != 0 || d.stats.RxInvalid.Load() != 0 {
				t.Errorf("stats: %s", d.stats.String())
			}
		})
	}
}

// TestRxHeader: what the backend says in the header reaches the guest only
// as far as the guest negotiated it.
func TestRxHeader(t *testing.T) {
	csum := FeatureGuestCsum | FeatureMrgRxbuf
	tso := FeatureGuestCsum | FeatureGuestTSO4 | FeatureGuestTSO6 | FeatureMrgRxbuf
	tests := []struct {
		name     string
		features uint64
		in       []byte
		want     []byte // nil: dropped
	}{
		{"data valid cleared", FeatureMrgRxbuf, header(HdrDataValid, 0, 0, 0, 0, 0), header(0, 0, 0, 0, 0, 0)},
		{"data valid kept", csum, header(HdrDataValid, 0, 0, 0, 0, 0), header(HdrDataValid, 0, 0, 0, 0, 0)},
		{"partial csum without GUEST_CSUM", FeatureMrgRxbuf, header(HdrNeedsCsum, 0, 0, 0, 34, 6), nil},
		{"partial csum", csum, header(HdrNeedsCsum, 0, 0, 0, 34, 6), header(HdrNeedsCsum, 0, 0, 0, 34, 6)},
		{"rsc info cleared", csum, header(HdrRSCInfo|HdrDataValid, 0, 0, 0, 0, 0), header(HdrDataValid, 0, 0, 0, 0, 0)},
		{"TSO4 without GUEST_TSO4", csum, header(HdrNeedsCsum, GSOTCPv4, 54, 1448, 34, 16), nil},
		{"TSO4", tso, header(HdrNeedsCsum, GSOTCPv4, 54, 1448, 34, 16), header(HdrNeedsCsum, GSOTCPv4, 54, 1448, 34, 16)},
		{"TSO6", tso, header(HdrNeedsCsum, GSOTCPv6, 74, 1428, 54, 16), header(HdrNeedsCsum, GSOTCPv6, 74, 1428, 54, 16)},
		{"ECN", tso, header(HdrNeedsCsum, GSOTCPv4|GSOECN, 54, 1448, 34, 16), nil},
		{"UFO", tso, header(HdrNeedsCsum, GSOUDP, 42, 1400, 34, 6), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, peer := newTestDevice(t, Config{}, true)
			g := newGuest(t, d, guestOptions{features: tt.features})
			g.fillRx(8, 4096)
			frame := testFrame(3000, 1)
			peerWrite(t, peer, append(tt.in, frame...))
			marker := testFrame(100, 2)
			peerWrite(t, peer, append(header(0, 0, 0, 0, 0, 0), marker...))
			got := g.recv()
			if tt.want == nil {
				if !bytes.Equal(got.frame, marker) {
					t.Fatalf("got a %d-byte frame, want it dropped and the marker next", len(got.frame))
				}
				if d.stats.RxDropped.Load() != 1 {
					t.Errorf("stats: %s; want one dropped", d.stats.String())
				}
				return
			}
			if !bytes.Equal(got.frame, frame) {
				t.Fatalf("frame differs at %d", firstDiff(got.frame, frame))
			}
			want := append([]byte(nil), tt.want...)
			want[10] = byte(got.buffers)
			if diff := cmp.Diff(want, got.hdr); diff != "" {
				t.Errorf("header (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRxBadFrames: frames no guest can take are dropped and counted, and
// the buffers they would have used serve the next frame.
func TestRxBadFrames(t *testing.T) {
	tests := []struct {
		name     string
		features uint64
		chains   [][]uint32
		frame    []byte
	}{
		{"runt", FeatureMrgRxbuf, rep(2, 2048), append(header(0, 0, 0, 0, 0, 0), make([]byte, 13)...)},
		{"header only", FeatureMrgRxbuf, rep(2, 2048), header(0, 0, 0, 0, 0, 0)},
		{"too long", FeatureMrgRxbuf, rep(2, 2048), make([]byte, HeaderLen+MaxFrameLen+1)},
		{"bigger than a plain chain", 0, rep(2, 1526), append(header(0, 0, 0, 0, 0, 0), testFrame(1515, 0)...)},
		{"bigger than the whole ring", FeatureMrgRxbuf, rep(8, 64), append(header(0, 0, 0, 0, 0, 0), testFrame(600, 0)...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, peer := newTestDevice(t, Config{QueueSize: 8}, false)
			g := newGuest(t, d, guestOptions{features: tt.features})
			for _, c := range tt.chains {
				g.postRx(c...)
			}
			g.rx.Kick()
			peerWrite(t, peer, tt.frame)
			marker := testFrame(40, 5)
			peerWrite(t, peer, append(header(0, 0, 0, 0, 0, 0), marker...))
			if got := g.recv(); !bytes.Equal(got.frame, marker) {
				t.Fatalf("got a %d-byte frame, want the marker", len(got.frame))
			}
			if d.stats.RxDropped.Load() != 1 || d.stats.RxFrames.Load() != 1 {
				t.Errorf("stats: %s; want one dropped, one delivered", d.stats.String())
			}
		})
	}
}

// TestRxMalformedChains: receive chains the device cannot write into come
// back empty, and the frame goes to the next good chain.
func TestRxMalformedChains(t *testing.T) {
	tests := []struct {
		name  string
		chain func(g *guest)
	}{
		{"readable buffer", func(g *guest) {
			g.rx.Add([]queue.Buffer{g.rx.Buf(16, nil)}, []queue.Buffer{g.rx.Buf(2048, nil)})
		}},
		{"smaller than the header", func(g *guest) { g.rx.Add(nil, []queue.Buffer{g.rx.Buf(HeaderLen-1, nil)}) }},
		{"outside RAM", func(g *guest) { g.rx.Add(nil, []queue.Buffer{{Addr: 0x1000, Len: 2048}}) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, peer := newTestDevice(t, Config{}, false)
			g := newGuest(t, d, guestOptions{features: FeatureMrgRxbuf})
			tt.chain(g)
			g.postRx(2048)
			g.rx.Kick()
			frame := testFrame(500, 3)
			peerWrite(t, peer, append(header(0, 0, 0, 0, 0, 0), frame...))
			// The bad chain is used first, with length 0.
			g.wait("two used entries", func() bool { return len(g.used) >= 2 })
			if g.used[0].Len != 0 {
				t.Errorf("bad chain used with length %d", g.used[0].Len)
			}
			g.used = g.used[1:]
			if got := g.recv(); !bytes.Equal(got.frame, frame) {
				t.Errorf("frame differs at %d", firstDiff(got.frame, frame))
			}
			if d.stats.RxInvalid.Load() != 1 || d.stats.RxFrames.Load() != 1 {
				t.Errorf("stats: %s", d.stats.String())
			}
		})
	}
}

// TestRxNoBuffers drives the worker by hand: without receive buffers it does
// not read the backend at all and does not wait for readability; after the
// guest posts buffers every frame arrives, in order.
func TestRxNoBuffers(t *testing.T) {
	for _, f := range []uint64{FeatureMrgRxbuf, FeatureMrgRxbuf | virtio.FeatureEventIdx, 0} {
		t.Run(fmt.Sprintf("features=%#x", f), func(t *testing.T) {
			be, peer := newSockPair(t)
			d, err := New(Config{Backend: be})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			x := newDirect(t, d, f, 16, 2<<20)
			var frames [][]byte
			for i := range 3 {
				frames = append(frames, testFrame(1000+i, byte(i)))
				peerWrite(t, peer, append(header(0, 0, 0, 0, 0, 0), frames[i]...))
			}
			queued := inq(t, be.fd)
			x.w.rxPass()
			if got := inq(t, be.fd); got != queued {
				t.Fatalf("backend queue went from %d to %d bytes with no guest buffers", queued, got)
			}
			if x.w.interest()&unix.EPOLLIN != 0 {
				t.Error("waiting for readability with no guest buffers")
			}
			if f&virtio.FeatureEventIdx != 0 && x.rx.AvailEvent() != 0 {
				t.Errorf("avail_event %d, want 0 (notify on the next buffer)", x.rx.AvailEvent())
			}
			// The guest refills and kicks: the next pass takes everything.
			heads := map[uint16]queue.Buffer{}
			for range 4 {
				b := queue.Buffer{Addr: x.rx.Alloc(2048), Len: 2048}
				h, err := x.rx.Add(nil, []queue.Buffer{b})
				if err != nil {
					t.Fatal(err)
				}
				heads[h] = b
			}
			if !x.rx.Kick() {
				t.Fatal("driver saw no need to kick: the device suppressed the notification it waits for")
			}
			x.w.rxPass()
			used, err := x.rx.Reap()
			if err != nil {
				t.Fatal(err)
			}
			if len(used) != 3 {
				t.Fatalf("%d frames delivered, want 3", len(used))
			}
			for i, u := range used {
				got := x.rx.Read(heads[u.Head])[:u.Len]
				if !bytes.Equal(got[HeaderLen:], frames[i]) {
					t.Errorf("frame %d differs", i)
				}
			}
			if x.w.interest()&unix.EPOLLIN == 0 {
				t.Error("not waiting for readability while holding a buffer")
			}
			if x.tr.signals == 0 {
				t.Error("no interrupt for the delivered frames")
			}
		})
	}
}

// TestRxWaitsForMoreBuffers: a frame read into too few mergeable buffers
// waits (it is not dropped, and the backend is not read further) until the
// guest adds more.
func TestRxWaitsForMoreBuffers(t *testing.T) {
	be, peer := newSockPair(t)
	d, err := New(Config{Backend: be})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	x := newDirect(t, d, FeatureMrgRxbuf|virtio.FeatureEventIdx, 16, 2<<20)
	bufs := map[uint16]queue.Buffer{}
	post := func() {
		b := queue.Buffer{Addr: x.rx.Alloc(512), Len: 512}
		h, err := x.rx.Add(nil, []queue.Buffer{b})
		if err != nil {
			t.Fatal(err)
		}
		bufs[h] = b
	}
	post()
	big, small := testFrame(1514, 1), testFrame(60, 2)
	peerWrite(t, peer, append(header(0, 0, 0, 0, 0, 0), big...))
	peerWrite(t, peer, append(header(0, 0, 0, 0, 0, 0), small...))
	x.w.rxPass()
	if x.rx.UsedIdx() != 0 || d.stats.RxDropped.Load() != 0 {
		t.Fatalf("used idx %d, stats %s: want the frame waiting", x.rx.UsedIdx(), d.stats.String())
	}
	if x.w.staged == 0 || x.w.interest()&unix.EPOLLIN != 0 {
		t.Fatalf("staged %d, interest %#x: want the frame staged and no read interest", x.w.staged, x.w.interest())
	}
	remaining := inq(t, be.fd)
	post()
	post()
	post()
	if !x.rx.Kick() {
		t.Fatal("no kick needed: the device would never hear of the new buffers")
	}
	x.w.rxPass()
	if got := inq(t, be.fd); got != 0 || remaining == 0 {
		t.Errorf("backend queue %d bytes before, %d after the refill; want the small frame read after", remaining, got)
	}
	used, err := x.rx.Reap()
	if err != nil {
		t.Fatal(err)
	}
	var data []byte
	for _, u := range used[:3] {
		data = append(data, x.rx.Read(bufs[u.Head])[:u.Len]...)
	}
	if hdr(data).numBuffers() != 3 || !bytes.Equal(data[HeaderLen:], big) {
		t.Errorf("merged frame: num_buffers %d, %d bytes", hdr(data).numBuffers(), len(data)-HeaderLen)
	}
	if len(used) != 4 || !bytes.Equal(x.rx.Read(bufs[used[3].Head])[HeaderLen:used[3].Len], small) {
		t.Errorf("second frame missing or wrong: %v", used)
	}
}

// inq returns the bytes queued for reading on a socket.
func inq(t *testing.T, fd int) int {
	t.Helper()
	n, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRxStream pushes many frames through a small ring while the guest
// recycles buffers, with and without event idx: none is lost or reordered.
func TestRxStream(t *testing.T) {
	for _, f := range []uint64{FeatureMrgRxbuf, FeatureMrgRxbuf | virtio.FeatureEventIdx, virtio.FeatureEventIdx} {
		t.Run(fmt.Sprintf("features=%#x", f), func(t *testing.T) {
			d, peer := newTestDevice(t, Config{QueueSize: 16}, false)
			g := newGuest(t, d, guestOptions{features: f})
			const n = 1000
			size := func(i int) int { return 60 + (i*37)%1454 }
			errc := make(chan error, 1)
			go func() {
				for i := range n {
					if _, err := peer.Write(append(header(0, 0, 0, 0, 0, 0), testFrame(size(i), byte(i))...)); err != nil {
						errc <- err
						return
					}
				}
				errc <- nil
			}()
			bufSize := uint32(1024) // two buffers for big frames when mergeable
			if f&FeatureMrgRxbuf == 0 {
				bufSize = 1526
			}
			g.fillRx(16, bufSize)
			for i := range n {
				got := g.recv()
				if want := testFrame(size(i), byte(i)); !bytes.Equal(got.frame, want) {
					t.Fatalf("frame %d: %d bytes, want %d", i, len(got.frame), len(want))
				}
				for g.rx.Free() > 0 {
					g.postRx(bufSize)
				}
				g.rx.Kick()
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			if d.stats.RxFrames.Load() != n || d.stats.RxDropped.Load() != 0 {
				t.Errorf("stats: %s", d.stats.String())
			}
		})
	}
}
