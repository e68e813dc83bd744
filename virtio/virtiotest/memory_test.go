package virtiotest

import (
	"errors"
	"testing"
)

func TestMemoryBounds(t *testing.T) {
	m := NewMemory(0x1000, 0x1000)
	m.AddHole(0x1800, 0x100)
	tests := []struct {
		name string
		gpa  uint64
		n    uint64
		ok   bool
	}{
		{"first byte", 0x1000, 1, true},
		{"whole below hole", 0x1000, 0x800, true},
		{"touches hole", 0x1000, 0x801, false},
		{"inside hole", 0x1850, 4, false},
		{"empty inside hole", 0x1850, 0, false},
		{"after hole to end", 0x1900, 0x700, true},
		{"past end", 0x1900, 0x701, false},
		{"empty at end", 0x2000, 0, true},
		{"below base", 0xfff, 2, false},
		{"wraps", 1<<64 - 1, 2, false},
	}
	for _, tt := range tests {
		_, err := m.Slice(tt.gpa, tt.n)
		if (err == nil) != tt.ok {
			t.Errorf("%s: Slice(%#x, %#x) = %v, want ok=%v", tt.name, tt.gpa, tt.n, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrFault) {
			t.Errorf("%s: error %v is not ErrFault", tt.name, err)
		}
		if tt.n > 0 && tt.n < 1<<20 {
			_, rerr := m.ReadAt(make([]byte, tt.n), int64(tt.gpa))
			_, werr := m.WriteAt(make([]byte, tt.n), int64(tt.gpa))
			if (rerr == nil) != tt.ok || (werr == nil) != tt.ok {
				t.Errorf("%s: ReadAt/WriteAt = %v/%v, want ok=%v", tt.name, rerr, werr, tt.ok)
			}
		}
	}
	if _, err := m.ReadAt(make([]byte, 1), -1); err == nil {
		t.Error("ReadAt at a negative address succeeded")
	}
	if _, err := m.WriteAt([]byte("hi"), 0x1010); err != nil {
		t.Fatal(err)
	}
	if got := string(m.Bytes()[0x10:0x12]); got != "hi" {
		t.Errorf("Bytes()[0x10:] = %q", got)
	}
}
