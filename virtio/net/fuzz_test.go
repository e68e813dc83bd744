package net

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/boxd-dev/boxd/virtio"
	"github.com/boxd-dev/boxd/virtio/queue"
	"github.com/boxd-dev/boxd/virtio/virtiotest"
)

// Fuzz input layout, shared by FuzzNetTx and FuzzNetRx:
//
//	ctl    byte: bits 0-1 split count, bit 2 add a writable (tx) or readable
//	       (rx) buffer, bits 3-5 corruption of the chain (see corrupt)
//	feat   byte: feature selection (see fuzzFeatures)
//	splits [count]byte: descriptor boundaries, as fractions of the payload
//	payload: header + frame (tx: what the guest sends; rx: what the backend
//	         delivers), and for rx the chain size too
const fuzzRegion = 256 << 10

func fuzzFeatures(b byte) uint64 {
	var f uint64
	for i, bit := range []uint64{FeatureCsum, FeatureHostTSO4, FeatureHostTSO6, virtio.FeatureEventIdx,
		FeatureMrgRxbuf, FeatureGuestCsum, FeatureGuestTSO4 | FeatureGuestCsum, FeatureGuestTSO6 | FeatureGuestCsum} {
		if b&(1<<i) != 0 {
			f |= bit
		}
	}
	return f
}

// corrupt rewrites descriptor i of d's table in one of a few hostile ways.
func corrupt(d *virtiotest.Driver, head uint16, mode byte) {
	switch mode {
	case 1: // loop back to itself
		d.WriteDesc(head, memBase+fuzzRegion-64, 16, virtiotest.DescNext, head)
	case 2: // outside RAM
		d.WriteDesc(head, 0x1000, 64, 0, 0)
	case 3: // indirect table of a bad length
		d.WriteDesc(head, memBase+fuzzRegion-64, 17, virtiotest.DescIndirect, 0)
	case 4: // huge length
		d.WriteDesc(head, memBase+fuzzRegion-64, 0xffff_fff0, 0, 0)
	case 5: // next out of range
		d.WriteDesc(head, memBase+fuzzRegion-64, 16, virtiotest.DescNext, 0xffff)
	}
}

type fuzzInput struct {
	splits   []int
	extra    bool
	mode     byte
	features uint64
	payload  []byte
}

func parseFuzz(data []byte) (fuzzInput, bool) {
	if len(data) < 2 {
		return fuzzInput{}, false
	}
	ctl, feat := data[0], data[1]
	n := int(ctl & 3)
	if len(data) < 2+n {
		return fuzzInput{}, false
	}
	in := fuzzInput{extra: ctl&4 != 0, mode: ctl >> 3 & 7, features: fuzzFeatures(feat), payload: data[2+n:]}
	if len(in.payload) > HeaderLen+MaxFrameLen+16 {
		return fuzzInput{}, false
	}
	prev := 0
	for _, s := range data[2 : 2+n] {
		at := int(s) * len(in.payload) / 256
		if at > prev && at < len(in.payload) {
			in.splits = append(in.splits, at)
			prev = at
		}
	}
	return in, true
}

// buffers lays p out in fresh buffers of d, split at the given offsets.
func buffers(d *virtiotest.Driver, p []byte, splits []int) []queue.Buffer {
	var bufs []queue.Buffer
	prev := 0
	for _, s := range append(splits, len(p)) {
		if s > prev {
			bufs = append(bufs, d.Buf(uint32(s-prev), p[prev:s]))
		}
		prev = s
	}
	return bufs
}

func seedFuzz(f *testing.F) {
	frame := testFrame(1514, 1)
	f.Add(append([]byte{0, 0}, append(header(0, 0, 0, 0, 0, 0), frame...)...))
	f.Add(append([]byte{2, 0, 3, 200}, append(header(0, 0, 0, 0, 0, 0), frame...)...))
	f.Add(append([]byte{1, 3, 128}, append(header(HdrNeedsCsum, GSOTCPv4, 54, 1448, 34, 16), testFrame(9000, 2)...)...))
	f.Add(append([]byte{0, 1}, append(header(HdrNeedsCsum, 0, 0, 0, 34, 6), testFrame(60, 3)...)...))
	f.Add(append([]byte{4, 0}, append(header(0, 0, 0, 0, 0, 0), frame...)...))
	for mode := byte(1); mode <= 5; mode++ {
		f.Add(append([]byte{mode << 3, 0}, append(header(0, 0, 0, 0, 0, 0), testFrame(60, mode)...)...))
	}
	f.Add(append([]byte{1, 0x1f, 40}, append(header(HdrDataValid|HdrNeedsCsum, GSOTCPv6, 74, 1428, 54, 16), testFrame(3000, 4)...)...))
	f.Add([]byte{0, 0, 1, 2, 3})
}

// FuzzNetTx hands the device one transmit chain built from the input and
// checks that it never panics or fails the device, always returns the
// chain, and sends either the guest's exact bytes or nothing.
func FuzzNetTx(f *testing.F) {
	seedFuzz(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		in, ok := parseFuzz(data)
		if !ok {
			return
		}
		be := newDiscard(t, true)
		d, err := New(Config{Backend: be, QueueSize: 16})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		x := newDirect(t, d, in.features, 16, fuzzRegion)
		var writable []queue.Buffer
		if in.extra {
			writable = []queue.Buffer{x.tx.Buf(64, nil)}
		}
		var readable []queue.Buffer
		if len(in.payload) > 0 {
			readable = buffers(x.tx, in.payload, in.splits)
		}
		if len(readable)+len(writable) == 0 {
			return
		}
		head, err := x.tx.Add(readable, writable)
		if err != nil {
			t.Fatal(err)
		}
		corrupt(x.tx, head, in.mode)
		x.w.txPass()
		if x.tr.failed != nil {
			t.Fatalf("one chain failed the device: %v", x.tr.failed)
		}
		used, err := x.tx.Reap()
		if err != nil || len(used) != 1 || used[0].Len != 0 {
			t.Fatalf("used %v, %v; want the chain back with length 0", used, err)
		}
		s := &d.stats
		if s.TxFrames.Load()+s.TxInvalid.Load() != 1 {
			t.Fatalf("stats: %s; want one frame sent or invalid", s.String())
		}
		if len(be.frames) == 0 {
			plain := in.mode == 0 && !in.extra && len(in.payload) >= HeaderLen+minFrameLen &&
				len(in.payload) <= HeaderLen+MaxFrameLen && bytes.Equal(in.payload[:HeaderLen], make([]byte, HeaderLen))
			if plain {
				t.Fatal("a well-formed plain frame was not sent")
			}
			return
		}
		want := append([]byte(nil), in.payload...)
		binary.LittleEndian.PutUint16(want[10:], 0)
		if !bytes.Equal(be.frames[0], want) {
			t.Fatalf("sent %d bytes that differ from the guest's %d at %d", len(be.frames[0]), len(want), firstDiff(be.frames[0], want))
		}
	})
}

// oneFrame is a backend with one frame to deliver.
type oneFrame struct {
	discardBackend
	frame []byte
}

func (b *oneFrame) Read(p []byte) (int, error) {
	if b.frame == nil {
		return b.discardBackend.Read(p)
	}
	n := copy(p, b.frame)
	b.frame = nil
	return n, nil
}

// FuzzNetRx delivers one backend frame into receive chains built from the
// input (sized to fit it exactly, split as the input says, then a spare
// 2 KiB chain) and checks that the device never panics or fails, and that
// what the guest gets is the frame with only the header fields the device
// owns changed.
func FuzzNetRx(f *testing.F) {
	seedFuzz(f)
	f.Fuzz(fuzzRx)
}

func fuzzRx(t *testing.T, data []byte) {
	in, ok := parseFuzz(data)
	if !ok || len(in.payload) == 0 {
		return
	}
	be := &oneFrame{discardBackend: *newDiscard(t, false), frame: in.payload}
	d, err := New(Config{Backend: be, QueueSize: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	x := newDirect(t, d, in.features, 16, fuzzRegion)
	var readable []queue.Buffer
	if in.extra {
		readable = []queue.Buffer{x.rx.Buf(16, nil)}
	}
	bufs := buffers(x.rx, make([]byte, len(in.payload)), in.splits)
	head, err := x.rx.Add(readable, bufs)
	if err != nil {
		t.Fatal(err)
	}
	corrupt(x.rx, head, in.mode)
	spare := x.rx.Buf(2048, nil)
	spareHead, err := x.rx.Add(nil, []queue.Buffer{spare})
	if err != nil {
		t.Fatal(err)
	}
	x.w.rxPass()
	if x.tr.failed != nil {
		t.Fatalf("device failed: %v", x.tr.failed)
	}
	used, err := x.rx.Reap()
	if err != nil {
		t.Fatal(err)
	}
	s := &d.stats
	if s.RxFrames.Load() == 0 {
		return
	}
	var got []byte
	for _, u := range used {
		if u.Len == 0 {
			continue // an invalid chain handed back
		}
		src := bufs
		if u.Head == spareHead {
			src = []queue.Buffer{spare}
		} else if u.Head != head {
			t.Fatalf("used head %d unknown", u.Head)
		}
		p := make([]byte, u.Len)
		if err := readChain(x.mem, src, p); err != nil {
			t.Fatal(err)
		}
		got = append(got, p...)
	}
	if len(got) != len(in.payload) || !bytes.Equal(got[HeaderLen:], in.payload[HeaderLen:]) {
		t.Fatalf("guest got %d bytes, backend sent %d", len(got), len(in.payload))
	}
	h := hdr(got)
	if h.gsoType() != in.payload[1] || !bytes.Equal(got[2:10], in.payload[2:10]) || h.flags()&^in.payload[0] != 0 {
		t.Fatalf("header %x from backend header %x", got[:HeaderLen], in.payload[:HeaderLen])
	}
	if nb := int(h.numBuffers()); nb < 1 || (in.features&FeatureMrgRxbuf == 0 && nb != 1) {
		t.Fatalf("num_buffers %d", nb)
	}
}
