package i8042

import (
	"testing"

	"github.com/boxd-dev/boxd/devices/devicestest"
	"github.com/google/go-cmp/cmp"
)

type rig struct {
	c      *Controller
	irq    *devicestest.Line
	resets int
}

func newRig() *rig {
	g := &rig{irq: new(devicestest.Line)}
	g.c = New(Config{Reset: func() { g.resets++ }, IRQ: g.irq})
	return g
}

func (g *rig) in(off uint64) byte {
	var b [1]byte
	g.c.Read(off, b[:])
	return b[0]
}

func (g *rig) out(off uint64, v byte) { g.c.Write(off, []byte{v}) }

// command runs one i8042_command() the way Linux's __i8042_command does: wait
// for IBF clear, write the command, write each parameter, then read each
// result after waiting for OBF. It fails the test where Linux would time out.
func (g *rig) command(t *testing.T, cmd byte, params []byte, results int) []byte {
	t.Helper()
	if g.in(offCommand)&0x02 != 0 {
		t.Fatalf("command %#x: input buffer full", cmd)
	}
	g.out(offCommand, cmd)
	for _, p := range params {
		if g.in(offCommand)&0x02 != 0 {
			t.Fatalf("command %#x: input buffer full before parameter", cmd)
		}
		g.out(offData, p)
	}
	var got []byte
	for range results {
		if g.in(offCommand)&statusOBF == 0 {
			t.Fatalf("command %#x: no result (Linux would wait out its timeout)", cmd)
		}
		got = append(got, g.in(offData))
	}
	return got
}

// flush is i8042_flush: it must find the buffer empty within 16 reads.
func (g *rig) flush(t *testing.T) {
	t.Helper()
	for i := 0; g.in(offCommand)&statusOBF != 0; i++ {
		if i == queueSize {
			t.Fatal("flush: output buffer never empties")
		}
		g.in(offData)
	}
}

// TestLinuxProbe walks i8042_controller_check, _selftest, _init and
// i8042_check_aux from drivers/input/serio/i8042.c (no i8042.noaux).
func TestLinuxProbe(t *testing.T) {
	g := newRig()
	g.flush(t)
	if got := g.command(t, cmdSelfTest, nil, 1); got[0] != replySelfTestOK {
		t.Errorf("self-test = %#x, want 0x55", got[0])
	}
	ctr1 := g.command(t, cmdReadCTR, nil, 1)[0]
	ctr2 := g.command(t, cmdReadCTR, nil, 1)[0]
	if ctr1 != ctr2 {
		t.Fatalf("CTR reads unstable: %#x then %#x", ctr1, ctr2)
	}
	if ctr1&0x40 != 0 {
		t.Errorf("CTR %#x has translation on; the keyboard speaks set 2", ctr1)
	}
	if g.in(offCommand)&statusKeylock == 0 {
		t.Error("status reports keylock active")
	}
	ctr := (ctr1 | ctrKbdDis) &^ ctrKbdInt
	g.command(t, cmdWriteCTR, []byte{ctr}, 0)
	if got := g.command(t, cmdReadCTR, nil, 1)[0]; got != ctr {
		t.Errorf("CTR after write = %#x, want %#x", got, ctr)
	}
	g.flush(t)

	// i8042_check_aux: the loop answers at once but without AUX data, and the
	// AUX test then reports a stuck line: "no AUX port", no timeout.
	g.out(offCommand, cmdAuxLoop)
	g.out(offData, 0x5a)
	st := g.in(offCommand)
	if st&statusOBF == 0 || st&0x20 != 0 {
		t.Errorf("after AUX loop, status = %#x, want OBF without AUXDATA", st)
	}
	if got := g.command(t, cmdAuxTest, nil, 1)[0]; got == 0 || got == 0xfa || got == 0xff {
		t.Errorf("AUX test = %#x, which Linux takes as a working AUX port", got)
	}
	g.flush(t)

	if got := g.command(t, cmdKbdTest, nil, 1)[0]; got != replyPortOK {
		t.Errorf("keyboard port test = %#x, want 0", got)
	}
	g.command(t, cmdKbdEnable, nil, 0)
	g.command(t, cmdWriteCTR, []byte{ctr1}, 0)
	if g.resets != 0 {
		t.Errorf("probe caused %d resets", g.resets)
	}
	if got := g.c.Stats(); got.Ignored != 0 {
		t.Errorf("probe had ignored accesses: %+v", got)
	}
}

func TestReset(t *testing.T) {
	tests := []struct {
		name       string
		writes     [][2]byte // (offset, value)
		wantResets int
		wantPulses uint64
	}{
		{"reboot=k pulses ten times", repeat([2]byte{offCommand, 0xfe}, 10), 1, 10},
		{"pulse all lines", [][2]byte{{offCommand, 0xf0}}, 1, 1},
		{"pulse lines 1-3 only", [][2]byte{{offCommand, 0xf1}, {offCommand, 0xff}}, 0, 0},
		{"output port bit 0 cleared", [][2]byte{{offCommand, cmdWriteOutput}, {offData, 0xfe}}, 1, 1},
		{"output port A20 only", [][2]byte{{offCommand, cmdWriteOutput}, {offData, 0xdf}}, 0, 0},
		{"0xfe on the data port is a keyboard byte", [][2]byte{{offData, 0xfe}}, 0, 0},
		{"0xfe as a CTR value", [][2]byte{{offCommand, cmdWriteCTR}, {offData, 0xfe}}, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newRig()
			for _, w := range tt.writes {
				g.out(uint64(w[0]), w[1])
			}
			if g.resets != tt.wantResets {
				t.Errorf("reset callback ran %d times, want %d", g.resets, tt.wantResets)
			}
			if got := g.c.ResetRequested(); got != (tt.wantResets > 0) {
				t.Errorf("ResetRequested() = %v", got)
			}
			if got := g.c.Stats().ResetPulses; got != tt.wantPulses {
				t.Errorf("ResetPulses = %d, want %d", got, tt.wantPulses)
			}
		})
	}
}

func TestResetWithoutCallback(t *testing.T) {
	c := New(Config{})
	c.Write(offCommand, []byte{0xfe})
	if !c.ResetRequested() {
		t.Error("reset not recorded")
	}
}

func TestKeyboard(t *testing.T) {
	tests := []struct {
		name  string
		in    []byte // bytes written to the keyboard (data port)
		want  []byte // bytes read back
		edges int64
	}{
		{"set LEDs", []byte{0xed, 0x02}, []byte{0xfa, 0xfa}, 2},
		{"reset", []byte{0xff}, []byte{0xfa, 0xaa}, 2},
		{"identify", []byte{0xf2}, []byte{0xfa, 0xab, 0x83}, 3},
		{"echo", []byte{0xee}, []byte{0xee}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newRig()
			var got []byte
			for _, b := range tt.in {
				g.out(offData, b)
				for g.in(offCommand)&statusOBF != 0 {
					got = append(got, g.in(offData))
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("replies (-want +got):\n%s", diff)
			}
			if n := g.irq.Take(); n != tt.edges {
				t.Errorf("%d IRQ 1 edges, want %d", n, tt.edges)
			}
		})
	}
}

func TestNoIRQWhenDisabled(t *testing.T) {
	g := newRig()
	g.out(offCommand, cmdWriteCTR)
	g.out(offData, ctrSYS) // keyboard interrupt off
	g.out(offData, 0xf4)
	if g.in(offData) != kbdAck {
		t.Error("no ACK")
	}
	if n := g.irq.Count(); n != 0 {
		t.Errorf("%d edges with the keyboard interrupt off", n)
	}
}

func TestSendCtrlAltDel(t *testing.T) {
	g := newRig()
	if err := g.c.SendCtrlAltDel(); err != nil {
		t.Fatal(err)
	}
	var got []byte
	for g.in(offCommand)&statusOBF != 0 {
		got = append(got, g.in(offData))
	}
	want := []byte{0x14, 0x11, 0xe0, 0x71, 0xe0, 0xf0, 0x71, 0xf0, 0x11, 0xf0, 0x14}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("scancodes (-want +got):\n%s", diff)
	}
	if n := g.irq.Take(); n != int64(len(want)) {
		t.Errorf("%d edges, want one per byte (%d)", n, len(want))
	}

	if err := g.c.SendCtrlAltDel(); err != nil {
		t.Fatal(err)
	}
	if err := g.c.SendCtrlAltDel(); err != ErrQueueFull {
		t.Errorf("second undrained SendCtrlAltDel = %v, want ErrQueueFull", err)
	}
	g.out(offCommand, cmdKbdDisable)
	if err := g.c.SendCtrlAltDel(); err != ErrKeyboardDisabled {
		t.Errorf("with keyboard disabled: %v, want ErrKeyboardDisabled", err)
	}
}

func TestBadAccesses(t *testing.T) {
	g := newRig()
	wide := []byte{0, 0}
	g.c.Read(offCommand, wide)
	if diff := cmp.Diff([]byte{0xff, 0xff}, wide); diff != "" {
		t.Errorf("2-byte read (-want +got):\n%s", diff)
	}
	if got := g.in(1); got != 0xff {
		t.Errorf("port 0x61 = %#x, want 0xff", got)
	}
	g.c.Write(offCommand, []byte{0xfe, 0xfe})
	g.out(2, 0xfe)
	g.out(offCommand, 0x99) // unknown command
	if g.resets != 0 {
		t.Error("a malformed access reset the machine")
	}
	if got := g.c.Stats().Ignored; got != 5 {
		t.Errorf("Ignored = %d, want 5", got)
	}
	if got := g.in(offData); got != 0 {
		t.Errorf("empty data port = %#x, want 0", got)
	}
}

func TestQueueOverflow(t *testing.T) {
	g := newRig()
	for range queueSize + 4 {
		g.out(offData, 0xf4)
	}
	if got := g.c.Stats().Dropped; got != 4 {
		t.Errorf("Dropped = %d, want 4", got)
	}
}

func FuzzI8042(f *testing.F) {
	f.Add([]byte{1, offCommand, cmdWriteCTR, 1, offData, 0x47, 1, offCommand, cmdReadCTR, 0, offData})
	f.Add([]byte{1, offCommand, 0xfe, 1, offCommand, cmdWriteOutput, 1, offData, 0})
	f.Add([]byte{1, offData, 0xff, 0, offCommand, 0, offData, 0, offData, 3, offData, 1, 2})
	f.Fuzz(func(t *testing.T, script []byte) {
		resets := 0
		c := New(Config{Reset: func() { resets++ }, IRQ: new(devicestest.Line)})
		for _, op := range devicestest.Ops(script, Size) {
			devicestest.Apply(c, op)
			if c.n < 0 || c.n > queueSize {
				t.Fatalf("queue length %d", c.n)
			}
			_ = c.SendCtrlAltDel()
		}
		if resets > 1 {
			t.Fatalf("reset callback ran %d times", resets)
		}
	})
}

func repeat(w [2]byte, n int) [][2]byte {
	out := make([][2]byte, n)
	for i := range out {
		out[i] = w
	}
	return out
}
