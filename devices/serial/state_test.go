package serial

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// midState puts a UART in a state with every register set: divisor latch
// written, FIFO on, interrupts enabled, loopback off, input buffered, an
// overrun pending and THR-empty pending.
func midState(g *rig) {
	g.write(regLCR, lcrDLAB|0x03)
	g.write(regData, 0x01) // DLL: 115200 baud
	g.write(regIER, 0x00)  // DLM
	g.write(regLCR, 0x1b)  // 8E1
	g.write(regIIR, fcrEnable|0xc0)
	g.write(regMCR, mcrDTR|mcrRTS|mcrOUT2)
	g.write(regSCR, 0x5a)
	g.write(regIER, ierRDA|ierTHRE|ierRLS)
	g.s.Enqueue([]byte("hello"))
}

// Save mid-operation, restore into a fresh UART: every register reads the
// same, the buffered input continues, and the interrupt level is kept
// without a new edge.
func TestSaveRestore(t *testing.T) {
	a := newRig(16)
	midState(a)
	a.read(regData) // consume "h"
	a.s.Enqueue(bytes.Repeat([]byte("x"), 20))
	blob, err := a.s.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	b := newRig(16)
	if err := b.s.RestoreState(blob); err != nil {
		t.Fatal(err)
	}
	if n := b.irq.Take(); n != 0 {
		t.Errorf("restore raised %d edges, want 0", n)
	}
	again, _ := b.s.SaveState()
	if d := cmp.Diff(blob, again); d != "" {
		t.Errorf("save → restore → save (-first +second):\n%s", d)
	}
	read := func(g *rig) []byte {
		var got []byte
		g.write(regLCR, 0x1b|lcrDLAB)
		got = append(got, g.read(regData), g.read(regIER))
		g.write(regLCR, 0x1b)
		for _, r := range []uint64{regIER, regIIR, regLCR, regMCR, regLSR, regMSR, regSCR} {
			got = append(got, g.read(r))
		}
		for g.read(regLSR)&lsrDR != 0 {
			got = append(got, g.read(regData))
		}
		return got
	}
	want, got := read(a), read(b)
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("registers and input after restore (-original +restored):\n%s", d)
	}
	if !strings.HasPrefix(string(got[9:]), "elloxxxx") {
		t.Errorf("input after restore %q, want it to continue with \"elloxxxx\"", got[9:])
	}
}

// While paused, host input waits unseen and raises nothing; Resume
// delivers it.
func TestPauseHoldsInput(t *testing.T) {
	g := newRig(8)
	g.write(regIER, ierRDA)
	g.irq.Take()
	g.s.Pause()
	if n := g.s.Enqueue([]byte("0123456789")); n != 8 {
		t.Errorf("Enqueue while paused accepted %d, want 8 (the buffer size)", n)
	}
	if lsr := g.read(regLSR); lsr&lsrDR != 0 {
		t.Errorf("LSR %#x shows data while paused", lsr)
	}
	if n := g.irq.Take(); n != 0 {
		t.Errorf("%d edges while paused", n)
	}
	g.s.Resume()
	if n := g.irq.Take(); n != 1 {
		t.Errorf("%d edges on resume, want 1", n)
	}
	var got []byte
	for g.read(regLSR)&lsrDR != 0 {
		got = append(got, g.read(regData))
	}
	if string(got) != "01234567" {
		t.Errorf("input after resume %q, want %q", got, "01234567")
	}
}

func TestRestoreRejects(t *testing.T) {
	good, _ := newRig(16).s.SaveState()
	with := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	for _, tc := range []struct {
		name string
		blob []byte
		want string
	}{
		{"empty", nil, "too short"},
		{"version", with(func(b []byte) []byte { b[0] = 9; return b }), "unknown state version 9"},
		{"truncated", good[:8], "want at least"},
		{"IER", with(func(b []byte) []byte { b[2] = 0xff; return b }), "IER"},
		{"MCR", with(func(b []byte) []byte { b[4] = 0xe0; return b }), "MCR"},
		{"FCR", with(func(b []byte) []byte { b[6] = fcrClearRX; return b }), "FCR"},
		{"MSR", with(func(b []byte) []byte { b[9] = 0x10; return b }), "MSR"},
		{"flags", with(func(b []byte) []byte { b[10] = 0x80; return b }), "flags"},
		{"count", with(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[11:], 3); return b }), "3 buffered bytes, 0 follow"},
		{"too much input", with(func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[11:], 17)
			return append(b, make([]byte, 17)...)
		}), "holds 16"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newRig(16)
			midState(g)
			before, _ := g.s.SaveState()
			err := g.s.RestoreState(tc.blob)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("RestoreState = %v, want an error with %q", err, tc.want)
			}
			if after, _ := g.s.SaveState(); !bytes.Equal(before, after) {
				t.Error("a refused restore changed the state")
			}
		})
	}
}

func FuzzRestoreState(f *testing.F) {
	g := newRig(16)
	midState(g)
	blob, _ := g.s.SaveState()
	f.Add(blob)
	f.Add(blob[:5])
	f.Add([]byte{1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		g := newRig(16)
		if err := g.s.RestoreState(b); err != nil {
			return
		}
		// A state accepted is one the UART can run from and save again.
		g.read(regIIR)
		g.read(regLSR)
		g.read(regData)
		g.write(regData, 'x')
		if _, err := g.s.SaveState(); err != nil {
			t.Fatal(err)
		}
	})
}
