package net

import (
	"encoding/binary"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/boxd-dev/boxd/virtio"
	"github.com/boxd-dev/boxd/virtio/queue"
)

// BenchmarkTx measures the transmit path end to end, minus the host: a
// mock driver keeps the transmit ring full through the mmio transport, the
// worker validates each chain and writes it (header copy plus guest memory,
// one writev-shaped call per frame) to a backend that discards it.
func BenchmarkTx(b *testing.B) {
	tso := header(HdrNeedsCsum, GSOTCPv4, 54, 1448, 34, 16)
	for _, bc := range []struct {
		name     string
		size     int
		features uint64
		hdr      []byte
		splits   int // descriptors per frame
	}{
		{"64B", 64, 0, header(0, 0, 0, 0, 0, 0), 1},
		{"1514B", 1514, 0, header(0, 0, 0, 0, 0, 0), 1},
		{"1514B-2desc", 1514, 0, header(0, 0, 0, 0, 0, 0), 2},
		{"64KiB-TSO-18desc", MaxFrameLen, FeatureCsum | FeatureHostTSO4, tso, 18},
	} {
		b.Run(bc.name, func(b *testing.B) {
			d, err := New(Config{Backend: newDiscard(b, false)})
			if err != nil {
				b.Fatal(err)
			}
			defer d.Close()
			g := newGuest(b, d, guestOptions{features: bc.features | virtio.FeatureEventIdx, regionSize: 4 << 20})
			data := append(append([]byte(nil), bc.hdr...), testFrame(bc.size, 0)...)
			// Every chain points at the same buffers: the device only reads them.
			var bufs []queue.Buffer
			step := (len(data) + bc.splits - 1) / bc.splits
			for i := 0; i < len(data); i += step {
				end := min(i+step, len(data))
				bufs = append(bufs, g.tx.Buf(uint32(end-i), data[i:end]))
			}
			b.SetBytes(int64(bc.size))
			b.ReportAllocs()
			b.ResetTimer()
			sent, done := 0, 0
			for done < b.N {
				for sent < b.N && g.tx.Free() >= len(bufs) {
					if _, err := g.tx.Add(bufs, nil); err != nil {
						b.Fatal(err)
					}
					sent++
				}
				g.tx.Kick()
				u, err := g.tx.Reap()
				if err != nil {
					b.Fatal(err)
				}
				done += len(u)
				if len(u) == 0 {
					select {
					case <-g.irq.C():
					case <-time.After(timeout):
						b.Fatalf("stalled at %d of %d: %s", done, b.N, d.stats.String())
					}
				}
			}
			b.StopTimer()
			if got := d.stats.TxFrames.Load(); got != uint64(b.N) {
				b.Fatalf("sent %d frames, want %d", got, b.N)
			}
		})
	}
}

// endless is a backend that always has a frame: its fd is an eventfd held
// at 1 (always readable and writable).
type endless struct {
	discardBackend
	frame []byte
}

func (e *endless) Read(p []byte) (int, error) { return copy(p, e.frame), nil }

// BenchmarkRx measures the receive path: the backend always has a frame
// ready, the mock driver keeps the receive ring full of mergeable buffers
// and reaps merged frames.
func BenchmarkRx(b *testing.B) {
	for _, bc := range []struct {
		name string
		size int
		buf  uint32
	}{
		{"1514B-into-2KiB", 1514, 2048},
		{"64KiB-into-4KiB", MaxFrameLen, 4096},
	} {
		b.Run(bc.name, func(b *testing.B) {
			be := &endless{discardBackend: *newDiscard(b, false), frame: append(header(0, 0, 0, 0, 0, 0), testFrame(bc.size, 0)...)}
			var one [8]byte
			binary.NativeEndian.PutUint64(one[:], 1)
			if _, err := unix.Write(be.fd, one[:]); err != nil {
				b.Fatal(err)
			}
			d, err := New(Config{Backend: be})
			if err != nil {
				b.Fatal(err)
			}
			defer d.Close()
			g := newGuest(b, d, guestOptions{features: FeatureMrgRxbuf | virtio.FeatureEventIdx, regionSize: 4 << 20})
			// Like the transmit benchmark, every chain reuses one buffer: the
			// guest does not look at the data here.
			buf := queue.Buffer{Addr: g.rx.Alloc(uint64(bc.buf)), Len: bc.buf}
			b.SetBytes(int64(bc.size))
			b.ReportAllocs()
			b.ResetTimer()
			per := (HeaderLen + bc.size + int(bc.buf) - 1) / int(bc.buf) // buffers per frame
			got := 0
			for got < b.N*per {
				for g.rx.Free() > 0 {
					if _, err := g.rx.Add(nil, []queue.Buffer{buf}); err != nil {
						b.Fatal(err)
					}
				}
				g.rx.Kick()
				u, err := g.rx.Reap()
				if err != nil {
					b.Fatal(err)
				}
				got += len(u)
				if len(u) == 0 {
					select {
					case <-g.irq.C():
					case <-time.After(timeout):
						b.Fatalf("stalled at %d of %d buffers: %s", got, b.N*per, d.stats.String())
					}
				}
			}
			b.StopTimer()
			if d.stats.RxDropped.Load() != 0 {
				b.Fatalf("dropped frames: %s", d.stats.String())
			}
		})
	}
}
