package blk

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// cowModel drives a COW and a plain in-memory reference with the same
// operations and checks that they always read the same.
type cowModel struct {
	t       testing.TB
	dir     string
	path    string // current top overlay
	c       *COW
	ref     []byte
	cluster int
	layers  int
}

// newCOWModel creates a base of baseSize random bytes and an overlay of
// size bytes on it.
func newCOWModel(t testing.TB, seed uint64, baseSize, size int64, cluster int) *cowModel {
	t.Helper()
	dir := t.TempDir()
	base := make([]byte, baseSize)
	r := rand.New(rand.NewPCG(seed, 1))
	for i := range base {
		base[i] = byte(r.Uint32())
	}
	if err := os.WriteFile(filepath.Join(dir, "base.img"), base, 0o644); err != nil {
		t.Fatal(err)
	}
	m := &cowModel{t: t, dir: dir, path: filepath.Join(dir, "top0.cow"), ref: make([]byte, size), cluster: cluster}
	copy(m.ref, base)
	if err := CreateCOW(m.path, "base.img", size, cluster); err != nil {
		t.Fatal(err)
	}
	m.open()
	return m
}

func (m *cowModel) open() {
	m.t.Helper()
	c, err := OpenCOW(m.path, false)
	if err != nil {
		m.t.Fatal(err)
	}
	m.c = c
}

func (m *cowModel) close() {
	m.t.Helper()
	if err := m.c.Close(); err != nil {
		m.t.Fatal(err)
	}
}

func (m *cowModel) write(off int64, p []byte) {
	m.t.Helper()
	if n, err := m.c.WriteAt(p, off); err != nil || n != len(p) {
		m.t.Fatalf("WriteAt(%d bytes at %d) = %d, %v", len(p), off, n, err)
	}
	copy(m.ref[off:], p)
}

func (m *cowModel) discard(off, n int64) {
	m.t.Helper()
	if err := m.c.PunchHole(off, n); err != nil {
		m.t.Fatalf("PunchHole(%d, %d): %v", off, n, err)
	}
	clear(m.ref[off : off+n])
}

func (m *cowModel) check(off, n int64) {
	m.t.Helper()
	got := make([]byte, n)
	if k, err := m.c.ReadAt(got, off); err != nil || int64(k) != n {
		m.t.Fatalf("ReadAt(%d bytes at %d) = %d, %v", n, off, k, err)
	}
	if i := firstDiff(got, m.ref[off:off+n]); i >= 0 {
		m.t.Fatalf("byte %d (cluster %d): got %#x, want %#x", off+int64(i), (off+int64(i))/int64(m.cluster), got[i], m.ref[off+int64(i)])
	}
}

func (m *cowModel) checkAll() { m.check(0, int64(len(m.ref))) }

// layer freezes the current overlay and continues on a new one over it.
func (m *cowModel) layer() {
	m.t.Helper()
	m.close()
	if err := FreezeCOW(m.path); err != nil {
		m.t.Fatal(err)
	}
	m.layers++
	next := filepath.Join(m.dir, fmt.Sprintf("top%d.cow", m.layers))
	if err := CreateCOW(next, filepath.Base(m.path), int64(len(m.ref)), m.cluster); err != nil {
		m.t.Fatal(err)
	}
	m.path = next
	m.open()
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// step runs one operation chosen by op from random values.
func (m *cowModel) step(op byte, r *rand.Rand) {
	size := int64(len(m.ref))
	// Ranges favour cluster edges, where the copy-up logic lives.
	pick := func() (int64, int64) {
		var off int64
		switch r.IntN(3) {
		case 0:
			off = r.Int64N(size)
		case 1:
			off = r.Int64N(size/int64(m.cluster)+1) * int64(m.cluster)
		default:
			off = r.Int64N(size/SectorSize) * SectorSize
		}
		off = min(off, size-1)
		n := 1 + r.Int64N(min(size-off, int64(3*m.cluster)))
		return off, n
	}
	switch op % 16 {
	case 0, 1, 2, 3, 4, 5:
		off, n := pick()
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(r.Uint32() | 1) // never zero: zeros hide bugs
		}
		m.write(off, p)
	case 6, 7, 8:
		m.discard(pick())
	case 9, 10, 11, 12:
		m.check(pick())
	case 13:
		if err := m.c.Sync(); err != nil {
			m.t.Fatal(err)
		}
	case 14:
		m.close()
		m.open()
	case 15:
		if m.layers < 3 {
			m.layer()
		}
	}
}

func TestCOWMatchesReference(t *testing.T) {
	tests := []struct {
		name           string
		baseSize, size int64
		cluster        int
	}{
		{"base smaller than disk", 300<<10 + 123, 1<<20 + 1536, 4 << 10},
		{"base larger than disk", 2 << 20, 1 << 20, 8 << 10},
		{"one partial cluster", 5000, 3072, 4 << 10},
		{"default clusters", 1 << 20, 4 << 20, CowDefaultClusterSize},
	}
	for _, tt := range tests {
		for seed := range uint64(4) {
			t.Run(fmt.Sprintf("%s/seed=%d", tt.name, seed), func(t *testing.T) {
				m := newCOWModel(t, seed, tt.baseSize, tt.size, tt.cluster)
				r := rand.New(rand.NewPCG(seed, 2))
				m.checkAll()
				for range 400 {
					m.step(byte(r.IntN(16)), r)
				}
				m.checkAll()
				m.close()
				m.open()
				m.checkAll()
				m.close()
			})
		}
	}
}

// FuzzCOWOps runs operation sequences from the fuzzer's bytes.
func FuzzCOWOps(f *testing.F) {
	f.Add([]byte{0, 9, 6, 9, 13, 14, 9}, uint64(1))
	f.Add([]byte{15, 0, 6, 15, 0, 14, 9, 9}, uint64(2))
	f.Add([]byte{6, 6, 0, 0, 13, 8, 9}, uint64(3))
	f.Fuzz(func(t *testing.T, ops []byte, seed uint64) {
		if len(ops) > 64 {
			ops = ops[:64]
		}
		m := newCOWModel(t, seed, 20<<10+7, 48<<10+512, 4<<10)
		r := rand.New(rand.NewPCG(seed, 3))
		for _, op := range ops {
			m.step(op, r)
		}
		m.checkAll()
		m.close()
	})
}

// FuzzCOWHeader: the header is parsed from a file, which is input.
func FuzzCOWHeader(f *testing.F) {
	h := &cowHeader{clusterShift: 16, size: 100 << 30, baseSize: 1 << 30, baseMtime: 1, basePath: "/var/lib/boxd/images/base.img"}
	h.layout()
	f.Add(h.marshal())
	f.Add(make([]byte, cowHeaderSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseCOWHeader(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if h.dataOff < h.bitmapOff+h.bitmapLen || h.dataOff+h.size < h.dataOff || h.bitmapLen*4 < h.clusters() {
			t.Fatalf("accepted an impossible layout: %+v", h)
		}
		if !bytes.Equal(h.marshal(), b[:cowHeaderSize]) {
			t.Fatalf("accepted header does not round-trip")
		}
	})
}

// TestCOWUnsyncedStatesInvisible checks the ordering crash safety rests on:
// until Sync, the file's bitmap still describes the last synced disk, so
// the overlay as a crash would leave it (a copy of the file) reads as that
// disk, although the new clusters' data is already in it.
func TestCOWUnsyncedStatesInvisible(t *testing.T) {
	m := newCOWModel(t, 7, 64<<10, 256<<10, 4<<10)
	snapshot := func() []byte {
		b, err := os.ReadFile(m.path)
		if err != nil {
			t.Fatal(err)
		}
		cp := filepath.Join(m.dir, "crash.cow")
		os.Remove(cp)
		if err := os.WriteFile(cp, b, 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := OpenCOW(cp, true)
		if err != nil {
			t.Fatalf("overlay as a crash leaves it: %v", err)
		}
		defer c.Close()
		got := make([]byte, c.Size())
		if _, err := c.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		return got
	}
	m.write(10<<10, bytes.Repeat([]byte{0xaa}, 9<<10))
	m.discard(100<<10, 20<<10)
	if err := m.c.Sync(); err != nil {
		t.Fatal(err)
	}
	synced := bytes.Clone(m.ref)
	if got := snapshot(); !bytes.Equal(got, synced) {
		t.Fatalf("after Sync, the file reads differently from the disk (first difference at %d)", firstDiff(got, synced))
	}
	// New clusters only (an in-place overwrite of a Data cluster is
	// visible at once, as on any disk): Base and Zero ones.
	m.write(40<<10, bytes.Repeat([]byte{0xbb}, 10<<10))
	m.write(104<<10, bytes.Repeat([]byte{0xcc}, 100))
	m.discard(200<<10, 8<<10)
	if got := snapshot(); !bytes.Equal(got, synced) {
		t.Errorf("unsynced changes visible in the file at %d", firstDiff(got, synced))
	}
	if err := m.c.Sync(); err != nil {
		t.Fatal(err)
	}
	if got := snapshot(); !bytes.Equal(got, m.ref) {
		t.Errorf("after the second Sync, the file differs at %d", firstDiff(got, m.ref))
	}
	m.close()
}

func TestCOWSparse(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.img")
	if err := os.WriteFile(base, bytes.Repeat([]byte{1}, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "vm.cow")
	if err := CreateCOW(path, base, 100<<30, 0); err != nil {
		t.Fatal(err)
	}
	c, err := OpenCOW(path, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteAt([]byte("x"), 50<<30); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	used := allocatedBytes(t, path)
	// Header, one bitmap page, one cluster.
	if used > 2*CowDefaultClusterSize {
		t.Errorf("a 100 GB overlay with one write uses %d bytes, want at most %d", used, 2*CowDefaultClusterSize)
	}
	t.Logf("100 GB overlay after one write: %d bytes allocated", used)
}

func TestCOWRefusesBadFiles(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, dir, overlay string)
		want   error  // errors.Is target, if any
		substr string // in the message
	}{
		{"header bit flip", func(t *testing.T, dir, p string) { flipByte(t, p, hSize) }, ErrCorrupt, "checksum"},
		{"bad magic", func(t *testing.T, dir, p string) { flipByte(t, p, 0) }, ErrCorrupt, "magic"},
		{"truncated", func(t *testing.T, dir, p string) { os.Truncate(p, 8192) }, ErrCorrupt, "header says"},
		{"bitmap state 3", func(t *testing.T, dir, p string) { writeByte(t, p, cowHeaderSize, 0x0c) }, ErrCorrupt, "state 3"},
		{"base touched", func(t *testing.T, dir, p string) {
			when := time.Now().Add(time.Hour)
			if err := os.Chtimes(filepath.Join(dir, "base.img"), when, when); err != nil {
				t.Fatal(err)
			}
		}, ErrBaseChanged, "base"},
		{"base grown", func(t *testing.T, dir, p string) {
			st, _ := os.Stat(filepath.Join(dir, "base.img"))
			os.Truncate(filepath.Join(dir, "base.img"), 1<<20)
			os.Chtimes(filepath.Join(dir, "base.img"), st.ModTime(), st.ModTime())
		}, ErrBaseChanged, "base"},
		{"base gone", func(t *testing.T, dir, p string) { os.Remove(filepath.Join(dir, "base.img")) }, os.ErrNotExist, "base"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newCOWModel(t, 1, 64<<10, 128<<10, 4<<10)
			m.close()
			tt.damage(t, m.dir, m.path)
			_, err := OpenCOW(m.path, false)
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) || !bytes.Contains([]byte(err.Error()), []byte(tt.substr)) {
				t.Fatalf("OpenCOW = %v, want an error wrapping %v mentioning %q", err, tt.want, tt.substr)
			}
			t.Log(err)
		})
	}
}

func TestCOWLocksAndFreezing(t *testing.T) {
	m := newCOWModel(t, 1, 64<<10, 128<<10, 4<<10)
	if _, err := OpenCOW(m.path, false); err == nil {
		t.Errorf("a second writable open of an overlay in use succeeded")
	}
	if err := FreezeCOW(m.path); err == nil {
		t.Errorf("froze an overlay in use")
	}
	// An unfrozen overlay is no base.
	if err := CreateCOW(filepath.Join(m.dir, "child.cow"), m.path, 128<<10, 0); err == nil {
		t.Errorf("layered on an unfrozen overlay")
	}
	m.close()
	for range 2 { // idempotent
		if err := FreezeCOW(m.path); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := OpenCOW(m.path, false); !errors.Is(err, errFrozen) {
		t.Errorf("writable open of a frozen overlay: %v, want errFrozen", err)
	}
	c, err := OpenCOW(m.path, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteAt([]byte{1}, 0); err == nil {
		t.Errorf("wrote to a read-only overlay")
	}
	c.Close()
	// Two children share one frozen parent.
	for _, name := range []string{"a.cow", "b.cow"} {
		p := filepath.Join(m.dir, name)
		if err := CreateCOW(p, filepath.Base(m.path), 128<<10, 0); err != nil {
			t.Fatal(err)
		}
		c, err := OpenCOW(p, false)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
}

func TestOpenDisk(t *testing.T) {
	m := newCOWModel(t, 1, 4096, 8192, 4<<10)
	m.close()
	raw := filepath.Join(m.dir, "base.img")
	tests := []struct {
		spec string
		want string // type, or "error"
	}{
		{raw, "*blk.File"},
		{"cow:" + m.path, "*blk.COW"},
		{"cow:", "error"},
		{"", "error"},
		{"cow:" + raw, "error"}, // a raw file is no overlay
	}
	for _, tt := range tests {
		b, err := OpenDisk(tt.spec, false)
		got := "error"
		if err == nil {
			got = fmt.Sprintf("%T", b)
			b.(io.Closer).Close()
		}
		if got != tt.want {
			t.Errorf("OpenDisk(%q) = %s (%v), want %s", tt.spec, got, err, tt.want)
		}
	}
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	f.ReadAt(b, off)
	b[0] ^= 0x40
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func writeByte(t *testing.T, path string, off int64, v byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte{v}, off); err != nil {
		t.Fatal(err)
	}
}

func allocatedBytes(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// BenchmarkCOWWrite compares 4 KiB writes to a raw file and to an overlay,
// on fresh clusters (each write copies a 64 KiB cluster up) and on
// clusters already copied.
func BenchmarkCOWWrite(b *testing.B) {
	const size = 1 << 30
	dir := b.TempDir()
	base := filepath.Join(dir, "base.img")
	if err := os.WriteFile(base, bytes.Repeat([]byte{1}, 1<<20), 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.Truncate(base, size); err != nil {
		b.Fatal(err)
	}
	p := bytes.Repeat([]byte{2}, 4096)
	open := func(b *testing.B, kind string) Backend {
		if kind == "raw" {
			f, err := OpenFile(base, false)
			if err != nil {
				b.Fatal(err)
			}
			return f
		}
		path := filepath.Join(b.TempDir(), "vm.cow")
		if err := CreateCOW(path, base, size, 0); err != nil {
			b.Fatal(err)
		}
		c, err := OpenCOW(path, false)
		if err != nil {
			b.Fatal(err)
		}
		return c
	}
	for _, kind := range []string{"raw", "cow"} {
		for _, fresh := range []bool{true, false} {
			b.Run(fmt.Sprintf("%s/fresh=%v", kind, fresh), func(b *testing.B) {
				d := open(b, kind)
				defer d.(io.Closer).Close()
				stride := int64(CowDefaultClusterSize)
				if !fresh {
					stride = 4096
					for off := int64(0); off < int64(b.N)*stride; off += CowDefaultClusterSize {
						d.WriteAt(p, off)
					}
				}
				b.SetBytes(int64(len(p)))
				b.ResetTimer()
				for i := range b.N {
					if _, err := d.WriteAt(p, (int64(i)*stride)%size); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
