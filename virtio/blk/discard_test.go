package blk_test

import (
	"bytes"
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/boxd-dev/boxd/virtio/blk"
)

// A 100 GB sparse disk costs nothing; writing its last sector allocates only
// that block.
func TestSparseDisk(t *testing.T) {
	const size = 100 << 30
	e := newEnv(t, size, blk.Config{}, allFeatures)
	if e.dev.Capacity() != size/512 {
		t.Errorf("capacity %d", e.dev.Capacity())
	}
	last := uint64(size/512 - 1)
	if r := e.do1(request{typ: blk.TypeOut, sector: last, out: pattern(512, 9)}); r.status != blk.StatusOK {
		t.Fatalf("write last sector: %d", r.status)
	}
	if r := e.do1(request{typ: blk.TypeIn, sector: last, in: 512}); !bytes.Equal(r.in, pattern(512, 9)) {
		t.Error("last sector reads back wrong")
	}
	if r := e.do1(request{typ: blk.TypeWriteZeroes, out: segment(0, 1<<20, 0)}); r.status != blk.StatusOK {
		t.Errorf("write zeroes of 512 MiB: %d", r.status)
	}
	if used := allocated(t, e.path); used > 1<<20 {
		t.Errorf("sparse disk uses %d bytes", used)
	}
}

func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// dataAt reports whether the file has data (not a hole) in [off, off+n).
func dataAt(t *testing.T, path string, off, n int64) bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pos, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
	if errors.Is(err, unix.ENXIO) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return pos < off+n
}

func TestDiscardAndWriteZeroes(t *testing.T) {
	const mb = 1 << 20
	tests := []struct {
		name     string
		r        request
		wantHole bool
	}{
		{"discard", request{typ: blk.TypeDiscard, out: segment(0, mb/512, 0)}, true},
		{"write zeroes with unmap", request{typ: blk.TypeWriteZeroes, out: segment(0, mb/512, 1)}, true},
		{"write zeroes without unmap", request{typ: blk.TypeWriteZeroes, out: segment(0, mb/512, 0)}, true},
		{"two segments", request{typ: blk.TypeDiscard, out: append(segment(0, mb/1024, 0), segment(mb/1024, mb/1024, 0)...)}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, 4*mb, blk.Config{}, allFeatures)
			data := pattern(mb, 5)
			if r := e.do1(request{typ: blk.TypeOut, out: data, outSegs: []int{mb / 2, mb / 2}}); r.status != blk.StatusOK {
				t.Fatalf("write: %d", r.status)
			}
			if err := e.be.Sync(); err != nil {
				t.Fatal(err)
			}
			if !dataAt(t, e.path, 0, mb) {
				t.Fatal("written range has no data")
			}
			before := allocated(t, e.path)
			if err := unix.Fallocate(int(mustOpen(t, e.path).Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 2*mb, 4096); err != nil {
				t.Skipf("filesystem under TempDir cannot punch holes: %v", err)
			}
			if r := e.do1(tt.r); r.status != blk.StatusOK {
				t.Fatalf("status %d", r.status)
			}
			if hole := !dataAt(t, e.path, 0, mb); hole != tt.wantHole {
				t.Errorf("hole after request = %v, want %v", hole, tt.wantHole)
			}
			if after := allocated(t, e.path); tt.wantHole && after >= before {
				t.Errorf("allocated bytes %d -> %d, want fewer", before, after)
			}
			if tt.r.typ == blk.TypeWriteZeroes || tt.wantHole {
				r := e.do1(request{typ: blk.TypeIn, in: mb, inSegs: []uint32{mb / 2, mb / 2}})
				if !bytes.Equal(r.in, make([]byte, mb)) {
					t.Error("range does not read back as zeros")
				}
			}
		})
	}
}

func mustOpen(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
