package memory

import (
	"bytes"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/boxd-dev/boxd/vmm/boot"
)

func TestLayout(t *testing.T) {
	for _, tc := range []struct {
		size uint64
		want []Region
	}{
		{128 << 20, []Region{{0, 128 << 20, 0}}},
		{boot.MMIOGapStart, []Region{{0, boot.MMIOGapStart, 0}}},
		{4 << 30, []Region{{0, boot.MMIOGapStart, 0}, {boot.MMIOGapEnd, 1 << 30, boot.MMIOGapStart}}},
	} {
		if d := cmp.Diff(tc.want, Layout(tc.size)); d != "" {
			t.Errorf("Layout(%#x) (-want +got):\n%s", tc.size, d)
		}
	}
}

func TestBoundsChecked(t *testing.T) {
	// 3.5 GiB of sparse RAM: a region on each side of the MMIO gap.
	m, err := New(3584<<20, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	msg := []byte("hello guest")
	for _, gpa := range []int64{0, 0x1000, boot.MMIOGapStart - int64(len(msg)), boot.MMIOGapEnd, boot.MMIOGapEnd + 512<<20 - int64(len(msg))} {
		if _, err := m.WriteAt(msg, gpa); err != nil {
			t.Fatalf("WriteAt(%#x): %v", gpa, err)
		}
		got := make([]byte, len(msg))
		if _, err := m.ReadAt(got, gpa); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("ReadAt(%#x) = %q, %v", gpa, got, err)
		}
	}
	bad := []struct {
		gpa int64
		n   int
	}{
		{-1, 1},
		{boot.MMIOGapStart - 4, 8},         // straddles into the gap
		{boot.MMIOGapStart, 1},             // in the gap
		{boot.MMIOGapEnd - 1, 2},           // straddles out of the gap
		{boot.MMIOGapEnd + 512<<20 - 4, 8}, // past the end
		{1 << 62, 1},                       // far away
		{int64(^uint64(0) >> 1), 2},        // overflow
	}
	for _, b := range bad {
		if _, err := m.ReadAt(make([]byte, b.n), b.gpa); !errors.Is(err, ErrOutOfRange) {
			t.Errorf("ReadAt(%#x, %d) err = %v, want ErrOutOfRange", b.gpa, b.n, err)
		}
		if _, err := m.WriteAt(make([]byte, b.n), b.gpa); !errors.Is(err, ErrOutOfRange) {
			t.Errorf("WriteAt(%#x, %d) err = %v, want ErrOutOfRange", b.gpa, b.n, err)
		}
	}
	if _, err := m.Slice(^uint64(0)-2, 8); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("Slice wraparound err = %v", err)
	}
}

func TestFileBacked(t *testing.T) {
	m, err := New(2<<20, Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := m.WriteAt([]byte{42}, 0x1234); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := m.File().ReadAt(b, 0x1234); err != nil || b[0] != 42 {
		t.Fatalf("backing file byte = %v, %v; want 42 (MAP_SHARED)", b, err)
	}
}

func TestNewRejectsBadSize(t *testing.T) {
	for _, s := range []uint64{0, 4096, 1<<20 + 1} {
		if m, err := New(s, Options{}); err == nil {
			m.Close()
			t.Errorf("New(%d) succeeded", s)
		}
	}
}
