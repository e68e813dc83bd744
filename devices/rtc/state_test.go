package rtc

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// The index, the NMI bit and the CMOS RAM survive save and restore; a
// restored CMOS reads the same registers.
func TestSaveRestore(t *testing.T) {
	now := fixed(time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC))
	a := New(now)
	write(a, regB, b24h|bBinary)
	write(a, 0x40, 0x99)
	a.Write(offIndex, []byte{nmiDisable | 0x40})
	blob, err := a.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	b := New(now)
	if err := b.RestoreState(blob); err != nil {
		t.Fatal(err)
	}
	again, _ := b.SaveState()
	if d := cmp.Diff(blob, again); d != "" {
		t.Errorf("save → restore → save (-first +second):\n%s", d)
	}
	// The selected register is read without writing the index first.
	var v [1]byte
	b.Read(offData, v[:])
	if v[0] != 0x99 {
		t.Errorf("data port after restore reads %#x, want 0x99 (index kept)", v[0])
	}
	for _, reg := range []byte{regSeconds, regHours, regYear, regB, 0x40} {
		if x, y := read(a, reg), read(b, reg); x != y {
			t.Errorf("register %#x: original %#x, restored %#x", reg, x, y)
		}
	}
}

func TestRestoreRejects(t *testing.T) {
	good, _ := New(nil).SaveState()
	with := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	for _, tc := range []struct {
		name string
		blob []byte
		want string
	}{
		{"empty", []byte{1}, "too short"},
		{"version", with(func(b []byte) []byte { b[0] = 2; return b }), "unknown state version 2"},
		{"length", good[:100], "want 132"},
		{"index", with(func(b []byte) []byte { b[2] = 0x80; return b }), "index"},
		{"nmi", with(func(b []byte) []byte { b[3] = 1; return b }), "NMI"},
		{"uip", with(func(b []byte) []byte { b[4+regA] |= aUIP; return b }), "UIP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := New(nil)
			write(c, 0x20, 7)
			before, _ := c.SaveState()
			err := c.RestoreState(tc.blob)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("RestoreState = %v, want an error with %q", err, tc.want)
			}
			if after, _ := c.SaveState(); !bytes.Equal(before, after) {
				t.Error("a refused restore changed the state")
			}
		})
	}
}

func FuzzRestoreState(f *testing.F) {
	good, _ := New(nil).SaveState()
	f.Add(good)
	f.Add(good[:3])
	f.Fuzz(func(t *testing.T, b []byte) {
		c := New(fixed(time.Unix(0, 0)))
		if err := c.RestoreState(b); err != nil {
			return
		}
		for reg := range byte(0x80) {
			read(c, reg)
		}
	})
}
