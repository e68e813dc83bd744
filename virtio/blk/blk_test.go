package blk_test

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/boxd-dev/boxd/virtio"
	"github.com/boxd-dev/boxd/virtio/blk"
	"github.com/boxd-dev/boxd/virtio/mmio"
	"github.com/boxd-dev/boxd/virtio/queue"
	"github.com/boxd-dev/boxd/virtio/virtiotest"
)

const (
	memBase = 0x1_0000_0000 // above 4 GiB, like RAM past the MMIO gap
	memSize = 8 << 20
	timeout = 30 * time.Second // deadlock guard only
)

var _ mmio.Device = (*blk.Device)(nil)

// syncCounter wraps a file backend and counts Sync calls.
type syncCounter struct {
	*blk.File
	syncs atomic.Int64
}

func (s *syncCounter) Sync() error { s.syncs.Add(1); return s.File.Sync() }

// env is a disk wired like in a VM: temp file -> blk.Device -> mmio.Transport,
// driven by a mock guest driver that probed it through the registers.
type env struct {
	t    testing.TB
	path string
	dev  *blk.Device
	tr   *mmio.Transport
	mem  *virtiotest.Memory
	irq  *virtiotest.Interrupt
	g    *virtiotest.Guest
	q    *virtiotest.Driver
	be   *syncCounter
}

func newEnv(t testing.TB, size int64, cfg blk.Config, features uint64) *env {
	t.Helper()
	path, f := sparseDisk(t, size, cfg.ReadOnly)
	be := &syncCounter{File: f}
	e := newEnvOn(t, be, cfg, features)
	e.path, e.be = path, be
	return e
}

// sparseDisk creates a sparse disk file of size bytes and opens it.
func sparseDisk(t testing.TB, size int64, readOnly bool) (string, *blk.File) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	f, err := blk.OpenFile(path, readOnly)
	if err != nil {
		t.Fatal(err)
	}
	return path, f
}

// newEnvOn is newEnv over any backend.
func newEnvOn(t testing.TB, be blk.Backend, cfg blk.Config, features uint64) *env {
	t.Helper()
	return newEnvSetup(t, be, cfg, features, nil)
}

// newEnvSetup is newEnvOn with setup run on the device before the driver
// probes it (before the worker can start).
func newEnvSetup(t testing.TB, be blk.Backend, cfg blk.Config, features uint64, setup func(*blk.Device)) *env {
	t.Helper()
	dev, err := blk.New(be, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(dev)
	}
	t.Cleanup(func() {
		if err := dev.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	mem := virtiotest.NewMemory(memBase, memSize)
	irq := virtiotest.NewInterrupt()
	tr, err := mmio.New(dev, mem, irq)
	if err != nil {
		t.Fatal(err)
	}
	g, err := virtiotest.Probe(tr, mem, virtiotest.ProbeOptions{
		Features: features, Region: memBase, RegionSize: memSize,
	})
	if err != nil {
		t.Fatalf("Probe: %v", err)
	}
	return &env{t: t, dev: dev, tr: tr, mem: mem, irq: irq, g: g, q: g.Queues[0]}
}

const allFeatures = virtio.FeatureEventIdx | virtio.FeatureIndirectDesc | blk.FeatureFlush |
	blk.FeatureDiscard | blk.FeatureWriteZeroes | blk.FeatureSegMax | blk.FeatureSizeMax | blk.FeatureRO

// request describes one request as a driver builds it.
type request struct {
	typ      uint32
	sector   uint64
	out      []byte   // readable data after the header
	outSegs  []int    // split out into buffers of these sizes (default one)
	in       uint32   // writable data bytes before the status byte
	inSegs   []uint32 // split in into buffers of these sizes
	indirect bool
}

type result struct {
	status byte
	in     []byte
	used   uint32
}

func header(typ uint32, sector uint64) []byte {
	h := make([]byte, 16)
	binary.LittleEndian.PutUint32(h[0:], typ)
	binary.LittleEndian.PutUint64(h[8:], sector)
	return h
}

// add queues r and returns a function that collects its result.
func (e *env) add(r request) (uint16, func(virtiotest.Used) result) {
	e.t.Helper()
	d := e.q
	readable := []queue.Buffer{d.Buf(16, header(r.typ, r.sector))}
	segs := r.outSegs
	if segs == nil && len(r.out) > 0 {
		segs = []int{len(r.out)}
	}
	rest := r.out
	for _, n := range segs {
		readable = append(readable, d.Buf(uint32(n), rest[:n]))
		rest = rest[n:]
	}
	var writable, data []queue.Buffer
	inSegs := r.inSegs
	if inSegs == nil && r.in > 0 {
		inSegs = []uint32{r.in}
	}
	for _, n := range inSegs {
		b := d.Buf(n, bytes.Repeat([]byte{0xcc}, int(n)))
		writable = append(writable, b)
		data = append(data, b)
	}
	status := d.Buf(1, []byte{0xff})
	writable = append(writable, status)
	add := d.Add
	if r.indirect {
		add = d.AddIndirect
	}
	head, err := add(readable, writable)
	if err != nil {
		e.t.Fatal(err)
	}
	return head, func(u virtiotest.Used) result {
		var in []byte
		for _, b := range data {
			in = append(in, d.Read(b)...)
		}
		return result{status: d.Read(status)[0], in: in, used: u.Len}
	}
}

// do runs requests with one kick and returns their results in order.
func (e *env) do(rs ...request) []result {
	e.t.Helper()
	collect := map[uint16]func(virtiotest.Used) result{}
	var heads []uint16
	for _, r := range rs {
		h, c := e.add(r)
		heads = append(heads, h)
		collect[h] = c
	}
	e.q.Kick()
	used, err := e.q.Wait(e.irq, len(rs), timeout)
	if err != nil {
		e.t.Fatal(err)
	}
	byHead := map[uint16]result{}
	for _, u := range used {
		byHead[u.Head] = collect[u.Head](u)
	}
	var out []result
	for _, h := range heads {
		out = append(out, byHead[h])
	}
	return out
}

func (e *env) do1(r request) result { return e.do(r)[0] }

func pattern(n int, seed byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7) ^ seed
	}
	return p
}

func TestReadWrite(t *testing.T) {
	e := newEnv(t, 1<<20, blk.Config{}, allFeatures)
	data := pattern(8192, 1)
	if r := e.do1(request{typ: blk.TypeOut, sector: 10, out: data}); r.status != blk.StatusOK || r.used != 1 {
		t.Fatalf("write: status %d, used %d", r.status, r.used)
	}
	got, err := os.ReadFile(e.path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[10*512:10*512+8192], data) {
		t.Error("file does not hold the written data")
	}
	r := e.do1(request{typ: blk.TypeIn, sector: 10, in: 8192})
	if r.status != blk.StatusOK || r.used != 8193 || !bytes.Equal(r.in, data) {
		t.Errorf("read: status %d, used %d, data equal %v", r.status, r.used, bytes.Equal(r.in, data))
	}
	s := e.dev.Stats()
	if s.ReadBytes.Load() != 8192 || s.WriteBytes.Load() != 8192 || s.Requests.Load() != 2 {
		t.Errorf("stats: read %d, written %d, requests %d", s.ReadBytes.Load(), s.WriteBytes.Load(), s.Requests.Load())
	}
}

// Data split across buffers, directly and through an indirect table.
func TestSegmentedRequests(t *testing.T) {
	for _, indirect := range []bool{false, true} {
		e := newEnv(t, 1<<20, blk.Config{}, allFeatures)
		data := pattern(4096, 2)
		w := e.do1(request{typ: blk.TypeOut, sector: 3, out: data, outSegs: []int{100, 412, 3584}, indirect: indirect})
		r := e.do1(request{typ: blk.TypeIn, sector: 3, in: 4096, inSegs: []uint32{512, 1, 3583}, indirect: indirect})
		if w.status != blk.StatusOK || r.status != blk.StatusOK || !bytes.Equal(r.in, data) {
			t.Errorf("indirect=%v: write %d, read %d, equal %v", indirect, w.status, r.status, bytes.Equal(r.in, data))
		}
	}
}

func TestManyRequestsOneKick(t *testing.T) {
	e := newEnv(t, 1<<20, blk.Config{}, allFeatures)
	var rs []request
	for i := range 20 {
		rs = append(rs, request{typ: blk.TypeOut, sector: uint64(i), out: pattern(512, byte(i))})
	}
	for i, r := range e.do(rs...) {
		if r.status != blk.StatusOK {
			t.Errorf("write %d: status %d", i, r.status)
		}
	}
	rs = rs[:0]
	for i := range 20 {
		rs = append(rs, request{typ: blk.TypeIn, sector: uint64(i), in: 512})
	}
	for i, r := range e.do(rs...) {
		if !bytes.Equal(r.in, pattern(512, byte(i))) {
			t.Errorf("sector %d reads back wrong data", i)
		}
	}
}

func TestFlush(t *testing.T) {
	e := newEnv(t, 1<<20, blk.Config{}, allFeatures)
	if r := e.do1(request{typ: blk.TypeFlush}); r.status != blk.StatusOK || r.used != 1 {
		t.Errorf("flush: status %d, used %d", r.status, r.used)
	}
	if got := e.be.syncs.Load(); got != 1 {
		t.Errorf("backend syncs = %d, want 1", got)
	}
}

func TestGetID(t *testing.T) {
	e := newEnv(t, 1<<20, blk.Config{ID: "boxd-disk-1"}, allFeatures)
	r := e.do1(request{typ: blk.TypeGetID, in: 20})
	want := append([]byte("boxd-disk-1"), make([]byte, 9)...)
	if r.status != blk.StatusOK || r.used != 21 || !bytes.Equal(r.in, want) {
		t.Errorf("GET_ID = status %d, used %d, %q", r.status, r.used, r.in)
	}
	r = e.do1(request{typ: blk.TypeGetID, in: 4})
	if r.status != blk.StatusOK || r.used != 5 || string(r.in) != "boxd" {
		t.Errorf("GET_ID into 4 bytes = status %d, used %d, %q", r.status, r.used, r.in)
	}
	if _, err := blk.New(e.be, blk.Config{ID: "a-serial-longer-than-20"}); err == nil {
		t.Error("New accepted a 23-byte ID")
	}
}

func TestConfigSpace(t *testing.T) {
	e := newEnv(t, 100<<20+1000, blk.Config{QueueSize: 128}, allFeatures)
	cfg := e.g.ReadConfig(0, 64)
	le := binary.LittleEndian
	got := map[string]uint64{
		"capacity":                 le.Uint64(cfg[0:]),
		"size_max":                 uint64(le.Uint32(cfg[8:])),
		"seg_max":                  uint64(le.Uint32(cfg[12:])),
		"max_discard_sectors":      uint64(le.Uint32(cfg[36:])),
		"max_discard_seg":          uint64(le.Uint32(cfg[40:])),
		"discard_sector_alignment": uint64(le.Uint32(cfg[44:])),
		"max_write_zeroes_sectors": uint64(le.Uint32(cfg[48:])),
		"max_write_zeroes_seg":     uint64(le.Uint32(cfg[52:])),
		"write_zeroes_may_unmap":   uint64(cfg[56]),
		"beyond":                   uint64(le.Uint32(cfg[60:])),
	}
	want := map[string]uint64{
		"capacity": (100<<20 + 1000) / 512, "size_max": 1 << 20, "seg_max": 126,
		"max_discard_sectors": blk.MaxDiscardSectors, "max_discard_seg": blk.MaxDiscardSeg,
		"discard_sector_alignment": 8, "max_write_zeroes_sectors": blk.MaxDiscardSectors,
		"max_write_zeroes_seg": blk.MaxDiscardSeg, "write_zeroes_may_unmap": 1, "beyond": 0,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
	wantF := virtio.FeatureVersion1 | virtio.FeatureEventIdx | virtio.FeatureIndirectDesc | blk.FeatureFlush |
		blk.FeatureDiscard | blk.FeatureWriteZeroes | blk.FeatureSegMax | blk.FeatureSizeMax
	if e.g.Features != wantF {
		t.Errorf("negotiated %#x, want %#x", e.g.Features, wantF)
	}
}

func TestReadOnly(t *testing.T) {
	e := newEnv(t, 1<<20, blk.Config{ReadOnly: true}, allFeatures)
	if e.g.Features&blk.FeatureRO == 0 || e.g.Features&(blk.FeatureDiscard|blk.FeatureWriteZeroes) != 0 {
		t.Errorf("read-only features %#x", e.g.Features)
	}
	rs := e.do(
		request{typ: blk.TypeOut, sector: 0, out: pattern(512, 3)},
		request{typ: blk.TypeIn, sector: 0, in: 512},
		request{typ: blk.TypeFlush},
		request{typ: blk.TypeDiscard, out: segment(0, 8, 0)},
	)
	var statuses []byte
	for _, r := range rs {
		statuses = append(statuses, r.status)
	}
	if diff := cmp.Diff([]byte{blk.StatusIOErr, blk.StatusOK, blk.StatusOK, blk.StatusUnsupp}, statuses); diff != "" {
		t.Errorf("statuses (-want +got):\n%s", diff)
	}
	got, err := os.ReadFile(e.path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, make([]byte, 1<<20)) {
		t.Error("read-only disk was written")
	}
}

func segment(sector uint64, sectors, flags uint32) []byte {
	b := make([]byte, 16)
	binary.LittleEndian.PutUint64(b[0:], sector)
	binary.LittleEndian.PutUint32(b[8:], sectors)
	binary.LittleEndian.PutUint32(b[12:], flags)
	return b
}

func TestBadRequests(t *testing.T) {
	const capacity = 2048 // sectors of a 1 MiB disk
	tests := []struct {
		name        string
		r           request
		want        byte
		invalid     uint64
		unsupported uint64
	}{
		{"read at capacity", request{typ: blk.TypeIn, sector: capacity, in: 512}, blk.StatusIOErr, 1, 0},
		{"read across the end", request{typ: blk.TypeIn, sector: capacity - 1, in: 1024}, blk.StatusIOErr, 1, 0},
		{"read last sector", request{typ: blk.TypeIn, sector: capacity - 1, in: 512}, blk.StatusOK, 0, 0},
		{"write with overflowing sector", request{typ: blk.TypeOut, sector: 1<<64 - 1, out: make([]byte, 512)}, blk.StatusIOErr, 1, 0},
		{"read of 100 bytes", request{typ: blk.TypeIn, in: 100}, blk.StatusIOErr, 1, 0},
		{"write of 513 bytes", request{typ: blk.TypeOut, out: make([]byte, 513)}, blk.StatusIOErr, 1, 0},
		{"zero-length read", request{typ: blk.TypeIn}, blk.StatusOK, 0, 0},
		{"unknown type", request{typ: 99}, blk.StatusUnsupp, 0, 1},
		{"get lifetime", request{typ: blk.TypeGetLifetime, in: 8}, blk.StatusUnsupp, 0, 1},
		{"discard with unmap", request{typ: blk.TypeDiscard, out: segment(0, 8, 1)}, blk.StatusUnsupp, 0, 1},
		{"write zeroes unknown flag", request{typ: blk.TypeWriteZeroes, out: segment(0, 8, 2)}, blk.StatusUnsupp, 0, 1},
		{"discard past the end", request{typ: blk.TypeDiscard, out: segment(capacity-4, 8, 0)}, blk.StatusIOErr, 1, 0},
		{"discard ragged segment", request{typ: blk.TypeDiscard, out: make([]byte, 20)}, blk.StatusIOErr, 1, 0},
		{"discard no segment", request{typ: blk.TypeDiscard}, blk.StatusIOErr, 1, 0},
		{"discard too many segments", request{typ: blk.TypeDiscard, out: make([]byte, 16*(blk.MaxDiscardSeg+1))}, blk.StatusIOErr, 1, 0},
		{"discard too many sectors", request{typ: blk.TypeDiscard, out: segment(0, blk.MaxDiscardSectors+1, 0)}, blk.StatusIOErr, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, capacity*512, blk.Config{}, allFeatures)
			r := e.do1(tt.r)
			if r.status != tt.want {
				t.Errorf("status = %d, want %d", r.status, tt.want)
			}
			s := e.dev.Stats()
			if s.InvalidRequests.Load() != tt.invalid || s.Unsupported.Load() != tt.unsupported {
				t.Errorf("invalid = %d (want %d), unsupported = %d (want %d)",
					s.InvalidRequests.Load(), tt.invalid, s.Unsupported.Load(), tt.unsupported)
			}
		})
	}
}

// Chains the device cannot answer in are returned with length 0 and counted.
func TestMalformedChains(t *testing.T) {
	e := newEnv(t, 1<<20, blk.Config{}, allFeatures)
	d := e.q
	// No writable byte for the status.
	h1, err := d.Add([]queue.Buffer{d.Buf(16, header(blk.TypeIn, 0))}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Header shorter than 16 bytes: IOERR in the status byte.
	status := d.Buf(1, []byte{0xff})
	h2, err := d.Add([]queue.Buffer{d.Buf(8, nil)}, []queue.Buffer{status})
	if err != nil {
		t.Fatal(err)
	}
	// A descriptor pointing outside RAM.
	h3, err := d.Add([]queue.Buffer{{Addr: 0x1000, Len: 16}}, []queue.Buffer{d.Buf(1, nil)})
	if err != nil {
		t.Fatal(err)
	}
	d.Kick()
	used, err := d.Wait(e.irq, 3, timeout)
	if err != nil {
		t.Fatal(err)
	}
	got := map[uint16]uint32{}
	for _, u := range used {
		got[u.Head] = u.Len
	}
	if got[h1] != 0 || got[h2] != 1 || got[h3] != 0 || d.Read(status)[0] != blk.StatusIOErr {
		t.Errorf("used %v, status %d", used, d.Read(status)[0])
	}
	if n := e.dev.Stats().InvalidRequests.Load(); n != 3 {
		t.Errorf("invalid requests = %d, want 3", n)
	}
	if s := virtiotest.ReadReg(e.tr, mmio.RegStatus); s&virtio.StatusDeviceNeedsReset != 0 {
		t.Errorf("malformed chains broke the device: status %#x", s)
	}
}

// A corrupt available index stops the device and asks for a reset; after the
// reset the driver can bring it back.
func TestCorruptRingNeedsReset(t *testing.T) {
	e := newEnv(t, 1<<20, blk.Config{}, allFeatures)
	e.q.SetAvailIdx(e.q.AvailIdx() + 1000)
	e.q.Notify()
	deadline := time.After(timeout)
	for virtiotest.ReadReg(e.tr, mmio.RegStatus)&virtio.StatusDeviceNeedsReset == 0 {
		select {
		case <-e.irq.C():
		case <-deadline:
			t.Fatal("device did not ask for a reset")
		}
	}
	if e.g.Ack()&virtio.InterruptConfigChange == 0 {
		t.Error("no config-change interrupt")
	}
	virtiotest.WriteReg(e.tr, mmio.RegStatus, 0)
	g, err := virtiotest.Probe(e.tr, e.mem, virtiotest.ProbeOptions{Features: allFeatures, Region: memBase, RegionSize: memSize})
	if err != nil {
		t.Fatal(err)
	}
	e.g, e.q = g, g.Queues[0]
	if r := e.do1(request{typ: blk.TypeIn, in: 512}); r.status != blk.StatusOK {
		t.Errorf("read after reset: status %d", r.status)
	}
}

// Close stops the worker: no goroutine outlives the device.
func TestCloseStopsWorker(t *testing.T) {
	e := newEnv(t, 1<<20, blk.Config{}, allFeatures)
	e.do1(request{typ: blk.TypeIn, in: 512})
	if !workerRunning() {
		t.Fatal("no worker goroutine while active")
	}
	if err := e.dev.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.dev.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	e.dev.Notify(0) // harmless after Close
	// Close returns once the worker has closed its done channel, which is
	// the last thing it does; its goroutine is gone a moment later.
	for deadline := time.Now().Add(10 * time.Second); workerRunning(); {
		if time.Now().After(deadline) {
			t.Fatal("worker goroutine still running 10 s after Close")
		}
		runtime.Gosched()
	}
	if err := e.dev.Activate(e.mem, nil, 0, e.tr); err == nil {
		t.Error("Activate after Close succeeded")
	}
}

// workerRunning reports whether any blk worker goroutine exists.
func workerRunning() bool {
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	return strings.Contains(string(buf[:n]), "blk.(*worker).run")
}

func BenchmarkBlkRead4K(b *testing.B) {
	e := newEnv(b, 64<<20, blk.Config{}, allFeatures)
	d := e.q
	hdr := d.Buf(16, header(blk.TypeIn, 8))
	data := d.Buf(4096, nil)
	status := d.Buf(1, nil)
	b.SetBytes(4096)
	b.ResetTimer()
	for b.Loop() {
		if _, err := d.Add([]queue.Buffer{hdr}, []queue.Buffer{data, status}); err != nil {
			b.Fatal(err)
		}
		d.Kick()
		if _, err := d.Wait(e.irq, 1, timeout); err != nil {
			b.Fatal(err)
		}
	}
}
