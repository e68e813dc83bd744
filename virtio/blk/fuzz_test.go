package blk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/boxd-dev/boxd/virtio"
	"github.com/boxd-dev/boxd/virtio/queue"
	"github.com/boxd-dev/boxd/virtio/virtiotest"
)

// memBackend is an in-memory disk that records out-of-range accesses, which
// the device must never make.
type memBackend struct {
	mu    sync.Mutex
	data  []byte
	oob   error
	syncs int
}

func (m *memBackend) check(p []byte, off int64) bool {
	if off < 0 || off > int64(len(m.data)) || int64(len(p)) > int64(len(m.data))-off {
		m.oob = fmt.Errorf("access [%d, +%d) outside %d-byte disk", off, len(p), len(m.data))
		return false
	}
	return true
}

func (m *memBackend) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.check(p, off) {
		return 0, m.oob
	}
	return copy(p, m.data[off:]), nil
}

func (m *memBackend) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.check(p, off) {
		return 0, m.oob
	}
	return copy(m.data[off:], p), nil
}

func (m *memBackend) Sync() error  { m.syncs++; return nil }
func (m *memBackend) Size() int64  { return int64(len(m.data)) }
func (m *memBackend) Close() error { return nil }

// punchBackend adds hole punching to memBackend.
type punchBackend struct{ *memBackend }

func (p punchBackend) PunchHole(off, n int64) error {
	if !p.check(make([]byte, n), off) {
		return p.oob
	}
	clear(p.data[off : off+n])
	return nil
}

// fakeTransport records what the worker reports.
type fakeTransport struct {
	signals int
	fails   []error
}

func (f *fakeTransport) Signal(cause uint32) error { f.signals++; return nil }
func (f *fakeTransport) Fail(err error)            { f.fails = append(f.fails, err) }

// harness runs a device's worker synchronously (no goroutine) on a mock
// driver's queue.
type harness struct {
	d   *Device
	w   *worker
	tr  *fakeTransport
	drv *virtiotest.Driver
	be  *memBackend
}

func newHarness(t testing.TB, be Backend, mb *memBackend) *harness {
	t.Helper()
	d, err := New(be, Config{QueueSize: 16, ID: "fuzz"})
	if err != nil {
		t.Fatal(err)
	}
	mem := virtiotest.NewMemory(0x10000, 1<<20)
	drv := virtiotest.NewDriver(mem, 16, 0x10000, 1<<20)
	drv.SetEventIdx(true)
	q, err := queue.New(drv.State(), mem)
	if err != nil {
		t.Fatal(err)
	}
	tr := &fakeTransport{}
	w := &worker{d: d, mem: mem, q: q, t: tr, features: d.Features(), maxData: 14 * SizeMax}
	return &harness{d: d, w: w, tr: tr, drv: drv, be: mb}
}

// split cuts p into up to three non-empty pieces at positions chosen by sel.
func split(p []byte, sel uint8) [][]byte {
	if len(p) == 0 {
		return nil
	}
	a := int(sel&7) * len(p) / 8
	b := a + int(sel>>3&7)*(len(p)-a)/8
	var out [][]byte
	for _, s := range [][]byte{p[:a], p[a:b], p[b:]} {
		if len(s) > 0 {
			out = append(out, s)
		}
	}
	return out
}

func req(typ uint32, sector uint64, body []byte) []byte {
	b := make([]byte, 16, 16+len(body))
	binary.LittleEndian.PutUint32(b, typ)
	binary.LittleEndian.PutUint64(b[8:], sector)
	return append(b, body...)
}

// FuzzBlkRequest sends one request built from arbitrary readable bytes
// (header and data), an arbitrary writable size and arbitrary descriptor
// framing. The device must answer within the disk, with a valid status byte,
// and never consider the ring broken.
func FuzzBlkRequest(f *testing.F) {
	seg := make([]byte, 16)
	binary.LittleEndian.PutUint32(seg[8:], 8)
	f.Add(req(TypeIn, 0, nil), uint8(0), uint16(513), uint8(9), false)
	f.Add(req(TypeIn, 127, nil), uint8(0), uint16(1025), uint8(0), true)
	f.Add(req(TypeOut, 3, make([]byte, 1024)), uint8(12), uint16(1), uint8(0), false)
	f.Add(req(TypeOut, 1<<62, make([]byte, 512)), uint8(0), uint16(1), uint8(0), true)
	f.Add(req(TypeFlush, 0, nil), uint8(0), uint16(1), uint8(0), false)
	f.Add(req(TypeGetID, 0, nil), uint8(0), uint16(21), uint8(0), false)
	f.Add(req(TypeDiscard, 0, seg), uint8(3), uint16(1), uint8(0), false)
	f.Add(req(TypeWriteZeroes, 0, append(seg, seg...)), uint8(0), uint16(1), uint8(0), true)
	f.Add([]byte{1, 2, 3}, uint8(0), uint16(0), uint8(0), false)
	f.Fuzz(func(t *testing.T, readable []byte, splitR uint8, wlen uint16, splitW uint8, indirect bool) {
		if len(readable) > 8192 {
			return
		}
		mb := &memBackend{data: make([]byte, 64<<10)}
		var be Backend = mb
		if splitR&0x80 != 0 {
			be = punchBackend{mb}
		}
		h := newHarness(t, be, mb)
		var rs, ws []queue.Buffer
		for _, p := range split(readable, splitR) {
			rs = append(rs, h.drv.Buf(uint32(len(p)), p))
		}
		wl := int(wlen % 8192)
		for _, p := range split(make([]byte, wl), splitW) {
			ws = append(ws, h.drv.Buf(uint32(len(p)), []byte{0xee}))
		}
		if len(rs)+len(ws) == 0 {
			return
		}
		add := h.drv.Add
		if indirect {
			add = h.drv.AddIndirect
		}
		if _, err := add(rs, ws); err != nil {
			t.Fatal(err)
		}
		h.w.process()
		used, err := h.drv.Reap()
		if err != nil || len(used) != 1 {
			t.Fatalf("Reap = %v, %v", used, err)
		}
		if h.tr.fails != nil {
			t.Fatalf("device failed: %v", h.tr.fails)
		}
		if mb.oob != nil {
			t.Fatalf("backend: %v", mb.oob)
		}
		if u := used[0].Len; int(u) > wl {
			t.Fatalf("used length %d > writable %d", u, wl)
		}
		if wl > 0 {
			last := ws[len(ws)-1]
			status := h.drv.Read(last)[last.Len-1]
			if status > StatusUnsupp || used[0].Len == 0 {
				t.Fatalf("status %d, used %d", status, used[0].Len)
			}
		}
	})
}

// Without hole punching or zeroing, write-zeroes falls back to writing zeros.
func TestWriteZeroesFallback(t *testing.T) {
	mb := &memBackend{data: make([]byte, 64<<10)}
	for i := range mb.data {
		mb.data[i] = 0xaa
	}
	h := newHarness(t, mb, mb)
	if h.d.Features()&FeatureDiscard != 0 || h.d.Features()&FeatureWriteZeroes == 0 {
		t.Fatalf("features %#x", h.d.Features())
	}
	seg := make([]byte, 16)
	binary.LittleEndian.PutUint64(seg, 2)
	binary.LittleEndian.PutUint32(seg[8:], 4)
	status := h.drv.Buf(1, []byte{0xff})
	if _, err := h.drv.Add([]queue.Buffer{h.drv.Buf(32, req(TypeWriteZeroes, 0, seg))}, []queue.Buffer{status}); err != nil {
		t.Fatal(err)
	}
	h.w.process()
	if got := h.drv.Read(status)[0]; got != StatusOK {
		t.Fatalf("status %d", got)
	}
	for i, b := range mb.data {
		if zero := i >= 1024 && i < 3072; (b == 0) != zero {
			t.Fatalf("byte %d = %#x", i, b)
		}
	}
	if h.tr.signals != 1 {
		t.Errorf("signals = %d", h.tr.signals)
	}
}

// Backend errors become IOERR and are counted; the device keeps going.
func TestBackendErrors(t *testing.T) {
	mb := &memBackend{data: make([]byte, 4096)}
	h := newHarness(t, errBackend{mb}, mb)
	var statuses []queue.Buffer
	for _, r := range [][]byte{req(TypeIn, 0, nil), req(TypeOut, 0, make([]byte, 512)), req(TypeFlush, 0, nil)} {
		st := h.drv.Buf(1, []byte{0xff})
		statuses = append(statuses, st)
		ws := []queue.Buffer{st}
		if binary.LittleEndian.Uint32(r) == TypeIn {
			ws = []queue.Buffer{h.drv.Buf(512, nil), st}
		}
		if _, err := h.drv.Add([]queue.Buffer{h.drv.Buf(uint32(len(r)), r)}, ws); err != nil {
			t.Fatal(err)
		}
	}
	h.w.process()
	for i, st := range statuses {
		if got := h.drv.Read(st)[0]; got != StatusIOErr {
			t.Errorf("request %d: status %d, want IOERR", i, got)
		}
	}
	if n := h.d.Stats().IOErrors.Load(); n != 3 {
		t.Errorf("IO errors = %d, want 3", n)
	}
}

type errBackend struct{ *memBackend }

var errDisk = errors.New("disk on fire")

func (errBackend) ReadAt(p []byte, off int64) (int, error)  { return 0, errDisk }
func (errBackend) WriteAt(p []byte, off int64) (int, error) { return 0, errDisk }
func (errBackend) Sync() error                              { return errDisk }

var _ virtio.Transport = (*fakeTransport)(nil)
