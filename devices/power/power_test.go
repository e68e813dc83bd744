package power

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRegister(t *testing.T) {
	var got []uint32
	r := New(func(a uint32) { got = append(got, a) })
	r.Write(0, []byte{1, 0, 0, 0})
	r.Write(0, []byte{2, 0, 0, 0})
	r.Write(0, []byte{3, 0, 0, 0}) // unknown
	r.Write(4, []byte{1, 0, 0, 0}) // wrong offset
	r.Write(0, []byte{1})          // wrong width
	if d := cmp.Diff([]uint32{Poweroff, Reboot}, got); d != "" {
		t.Errorf("actions (-want +got):\n%s", d)
	}
	if r.Ignored() != 3 {
		t.Errorf("ignored = %d, want 3", r.Ignored())
	}
	b := []byte{9, 9, 9, 9}
	r.Read(0, b)
	if d := cmp.Diff([]byte{0, 0, 0, 0}, b); d != "" {
		t.Errorf("read (-want +got):\n%s", d)
	}
}

func FuzzRegister(f *testing.F) {
	f.Add(uint64(0), []byte{1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, off uint64, data []byte) {
		r := New(func(uint32) {})
		r.Write(off, data)
		r.Read(off, data)
	})
}
