package net

import (
	"bytes"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// vecSock is a sockBackend that also reads with readv, so the device
// receives straight into guest buffers.
type vecSock struct{ sockBackend }

func (s *vecSock) Readv(iov [][]byte) (int, error) { return unix.Readv(s.fd, iov) }

var _ VectorReader = (*vecSock)(nil)

// TestRxDirect: with a VectorReader backend and mergeable buffers, frames
// land in the guest's buffers whole, with the header the guest expects;
// with fewer buffers posted than the largest frame needs, the staging path
// takes over; a frame with a header the guest did not negotiate is dropped
// and the next one arrives intact.
func TestRxDirect(t *testing.T) {
	tests := []struct {
		name    string
		chains  [][]uint32
		sizes   []int
		buffers []int
		badHdr  int // index of a frame sent with an unnegotiated GSO type; -1 for none
		direct  uint64
	}{
		{"enough buffers: direct", rep(140, 512), []int{14, 60, 1514, MaxFrameLen, 3000}, []int{1, 1, 3, 129, 6}, -1, 4}, // the last: too few buffers left, staged
		{"few buffers: staging", rep(8, 2048), []int{1514, 60}, []int{1, 1}, -1, 0},
		{"bad header dropped", rep(140, 512), []int{1514, 1514, 60}, []int{3, 0, 1}, 1, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be, peer := newSockPair(t)
			d, err := New(Config{Backend: &vecSock{*be}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { d.Close() })
			g := newGuest(t, d, guestOptions{features: FeatureMrgRxbuf})
			d.mu.Lock()
			w := d.w
			d.mu.Unlock()
			for _, c := range tt.chains {
				g.postRx(c...)
			}
			g.rx.Kick()
			for i, size := range tt.sizes {
				frame := testFrame(size, byte(i))
				h := header(0, 0, 0, 0, 0, 0)
				if i == tt.badHdr {
					h = header(HdrNeedsCsum, GSOTCPv4, 54, 1448, 34, 16)
				}
				peerWrite(t, peer, append(h, frame...))
				if i == tt.badHdr {
					continue
				}
				got := g.recv()
				if !bytes.Equal(got.frame, frame) {
					t.Fatalf("frame %d: got %d bytes, want %d (first difference at %d)", i, len(got.frame), len(frame), firstDiff(got.frame, frame))
				}
				want := header(0, 0, 0, 0, 0, 0)
				want[10] = byte(tt.buffers[i])
				if diff := cmp.Diff(want, got.hdr); diff != "" {
					t.Errorf("frame %d header (-want +got):\n%s", i, diff)
				}
				if got.buffers != tt.buffers[i] {
					t.Errorf("frame %d took %d buffers, want %d", i, got.buffers, tt.buffers[i])
				}
			}
			dropped := uint64(0)
			if tt.badHdr >= 0 {
				dropped = 1
			}
			if d.stats.RxFrames.Load() != uint64(len(tt.sizes))-dropped || d.stats.RxDropped.Load() != dropped {
				t.Errorf("stats: %s", d.stats.String())
			}
			d.Reset() // stops the worker: its counters are ours to read
			if w.direct != tt.direct {
				t.Errorf("%d frames received directly, want %d", w.direct, tt.direct)
			}
		})
	}
}
