package i8042

import (
	"bytes"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Save with a command waiting for its parameter and bytes queued; the
// restored controller takes the parameter and yields the same bytes.
func TestSaveRestore(t *testing.T) {
	a := newRig()
	a.out(offCommand, cmdKbdDisable)
	a.out(offData, 0xff) // keyboard reset: ACK, BAT OK queued
	a.out(offCommand, cmdWriteCTR)
	blob, err := a.c.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	b := newRig()
	if err := b.c.RestoreState(blob); err != nil {
		t.Fatal(err)
	}
	if n := b.irq.Take(); n != 0 {
		t.Errorf("restore raised %d interrupts", n)
	}
	again, _ := b.c.SaveState()
	if d := cmp.Diff(blob, again); d != "" {
		t.Errorf("save → restore → save (-first +second):\n%s", d)
	}
	run := func(g *rig) []byte {
		g.out(offData, ctrKbdInt|ctrSYS|ctrKbdDis) // the pending WriteCTR's parameter
		got := []byte{g.in(offCommand)}
		for g.in(offCommand)&statusOBF != 0 {
			got = append(got, g.in(offData))
		}
		g.out(offCommand, cmdReadCTR)
		return append(got, g.in(offData))
	}
	want, got := run(a), run(b)
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("after restore (-original +restored):\n%s", d)
	}
	if !bytes.Contains(got, []byte{kbdAck, kbdBATOK}) {
		t.Errorf("queued reply lost: %x", got)
	}
}

// While paused, Ctrl+Alt+Del queues but interrupts only on Resume.
func TestPauseHoldsInterrupt(t *testing.T) {
	g := newRig()
	g.c.Pause()
	if err := g.c.SendCtrlAltDel(); err != nil {
		t.Fatal(err)
	}
	if n := g.irq.Take(); n != 0 {
		t.Errorf("%d interrupts while paused", n)
	}
	g.c.Resume()
	if n := g.irq.Take(); n != 1 {
		t.Errorf("%d interrupts on resume, want 1", n)
	}
}

func TestRestoreRejects(t *testing.T) {
	good, _ := newRig().c.SaveState()
	with := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	for _, tc := range []struct {
		name string
		blob []byte
		want string
	}{
		{"empty", nil, "too short"},
		{"version", with(func(b []byte) []byte { b[1] = 1; return b }), "unknown state version 257"},
		{"truncated", good[:5], "at least"},
		{"pending", with(func(b []byte) []byte { b[5] = cmdSelfTest; return b }), "pending command"},
		{"flags", with(func(b []byte) []byte { b[6] = 2; return b }), "flag"},
		{"queue", with(func(b []byte) []byte { b[7] = 17; return append(b, make([]byte, 17)...) }), "queue holds 16"},
		{"count", with(func(b []byte) []byte { b[7] = 2; return b }), "2 queued bytes, 0 follow"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newRig()
			g.out(offData, 0xff)
			before, _ := g.c.SaveState()
			err := g.c.RestoreState(tc.blob)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("RestoreState = %v, want an error with %q", err, tc.want)
			}
			if after, _ := g.c.SaveState(); !bytes.Equal(before, after) {
				t.Error("a refused restore changed the state")
			}
		})
	}
}

func FuzzRestoreState(f *testing.F) {
	g := newRig()
	g.out(offData, 0xf2)
	g.out(offCommand, cmdWriteOutput)
	blob, _ := g.c.SaveState()
	f.Add(blob)
	f.Add(blob[:4])
	f.Fuzz(func(t *testing.T, b []byte) {
		g := newRig()
		if err := g.c.RestoreState(b); err != nil {
			return
		}
		for range 20 {
			g.in(offData)
		}
		g.out(offData, 0xff)
		g.in(offCommand)
		if _, err := g.c.SaveState(); err != nil {
			t.Fatal(err)
		}
	})
}
