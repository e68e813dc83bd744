package serial

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/boxd-dev/boxd/devices"
	"github.com/boxd-dev/boxd/devices/devicestest"
	"github.com/google/go-cmp/cmp"
)

// step is one guest or host action in a scripted test.
type step struct {
	note    string
	op      byte   // 'w' write reg, 'r' read reg, 'e' enqueue host input
	reg     uint64 // register offset for 'w' and 'r'
	val     byte   // value written, or expected value read
	mask    byte   // for 'r': bits compared (0 means all)
	input   string // for 'e'
	edges   int64  // interrupt edges this step must cause
	anyEdge bool   // do not check edges
}

func w(reg uint64, v byte, note string) step { return step{note: note, op: 'w', reg: reg, val: v} }
func r(reg uint64, v byte, note string) step { return step{note: note, op: 'r', reg: reg, val: v} }

// rig is a UART with its output and interrupt line observable.
type rig struct {
	s   *Serial
	out *bytes.Buffer
	irq *devicestest.Line
}

func newRig(rxBuffer int) *rig {
	g := &rig{out: new(bytes.Buffer), irq: new(devicestest.Line)}
	g.s = New(Config{Out: g.out, IRQ: g.irq, RXBuffer: rxBuffer})
	return g
}

func (g *rig) read(reg uint64) byte {
	var b [1]byte
	g.s.Read(reg, b[:])
	return b[0]
}

func (g *rig) write(reg uint64, v byte) { g.s.Write(reg, []byte{v}) }

func (g *rig) run(t *testing.T, steps []step) {
	t.Helper()
	for i, st := range steps {
		switch st.op {
		case 'w':
			g.write(st.reg, st.val)
		case 'r':
			got := g.read(st.reg)
			mask := st.mask
			if mask == 0 {
				mask = 0xff
			}
			if got&mask != st.val&mask {
				t.Errorf("step %d (%s): read reg %d = %#02x, want %#02x (mask %#02x)", i, st.note, st.reg, got, st.val, mask)
			}
		case 'e':
			g.s.Enqueue([]byte(st.input))
		}
		if edges := g.irq.Take(); !st.anyEdge && edges != st.edges {
			t.Errorf("step %d (%s): %d interrupt edges, want %d", i, st.note, edges, st.edges)
		}
	}
}

// TestLinuxProbe replays what drivers/tty/serial/8250/8250_port.c does to a
// COM port: autoconfig(), autoconfig_16550a() and serial8250_do_startup(). The
// UART must be taken for a plain 16550A (not an EFR, 16750, NS or XScale part)
// and must pass the THRE re-assertion test.
func TestLinuxProbe(t *testing.T) {
	steps := []step{
		// autoconfig: IER holds exactly its four bits.
		r(regIER, 0x00, "save IER"),
		w(regIER, 0x00, "clear IER"),
		r(regIER, 0x00, "scratch2"),
		{note: "all interrupts: THR empty raises", op: 'w', reg: regIER, val: 0x0f, edges: 1},
		{note: "scratch3", op: 'r', reg: regIER, val: 0x0f, edges: 0},
		w(regIER, 0x00, "restore IER"),
		// autoconfig: loopback test.
		r(regMCR, 0x00, "save MCR"),
		r(regLCR, 0x03, "save LCR"),
		w(regMCR, mcrLoop|0x0a, "loopback with RTS|OUT2"),
		{note: "MSR shows CTS|DCD", op: 'r', reg: regMSR, val: 0x90, mask: 0xf0},
		w(regMCR, 0x00, "restore MCR"),
		// autoconfig: FIFO type.
		w(regLCR, 0xbf, "conf mode B"),
		w(regIIR, 0x00, "EFR=0 (lands in FCR)"),
		w(regLCR, 0x00, "LCR=0"),
		w(regIIR, fcrEnable, "enable FIFO"),
		{note: "IIR>>6 == 3: 16550A", op: 'r', reg: regIIR, val: 0xc0, mask: 0xc0},
		// autoconfig_16550a: the EFR probes must read non-zero (they see IIR).
		w(regLCR, 0x80, "conf mode A"),
		{note: "no EFRv1", op: 'r', reg: regIIR, val: 0xc1},
		w(regLCR, 0xbf, "conf mode B"),
		{note: "no EFRv2", op: 'r', reg: regIIR, val: 0xc1},
		// NS SuperIO: bank 2 EXCR1 (offset 2 with LCR 0xe0) must not track MCR.LOOP.
		w(regLCR, 0x00, ""),
		r(regMCR, 0x00, "status1 = MCR"),
		w(regLCR, 0xe0, "bank 2"),
		{note: "EXCR1 loop bit clear", op: 'r', reg: regIIR, val: 0x00, mask: mcrLoop},
		w(regLCR, 0x00, ""),
		w(regMCR, mcrLoop, "toggle loop"),
		w(regLCR, 0xe0, "bank 2"),
		{note: "EXCR1 still clear: not NS", op: 'r', reg: regIIR, val: 0x00, mask: mcrLoop},
		w(regLCR, 0x00, ""),
		w(regMCR, 0x00, "restore MCR"),
		// TI16750: IIR bit 5 must stay clear with and without DLAB.
		w(regLCR, 0x00, ""),
		w(regIIR, fcrEnable|0x20, "64-byte FIFO request"),
		{note: "no 64-byte FIFO", op: 'r', reg: regIIR, val: 0xc0, mask: 0xe0},
		w(regIIR, fcrEnable, ""),
		w(regLCR, 0x80, "DLAB"),
		w(regIIR, fcrEnable|0x20, "64-byte FIFO request with DLAB"),
		{note: "no 64-byte FIFO with DLAB", op: 'r', reg: regIIR, val: 0xc0, mask: 0xe0},
		w(regIIR, fcrEnable, ""),
		w(regLCR, 0x00, ""),
		// XScale: IER bit 6 (UUE) must not stick.
		w(regIER, 0x40, "try UUE"),
		r(regIER, 0x00, "UUE reads back 0"),
		w(regIER, 0x00, ""),
		// End of autoconfig: reset.
		w(regIIR, fcrEnable|fcrClearRX|fcrClearTX, "clear FIFOs"),
		w(regIIR, 0x00, ""),
		r(regData, 0x00, "read RX"),
		w(regIER, 0x00, "clear IER"),
		// serial8250_do_startup.
		w(regIIR, fcrEnable|fcrClearRX|fcrClearTX, "clear FIFOs"),
		w(regIIR, 0x00, ""),
		r(regLSR, lsrTHRE|lsrTEMT, "LSR is not 0xff"),
		r(regData, 0x00, ""),
		r(regIIR, iirNone, ""),
		{note: "CTS|DSR|DCD (deltas left by the probe)", op: 'r', reg: regMSR, val: 0xb0, mask: 0xf0},
		w(regLCR, 0x03, "8N1"),
		// THRE test: IER.THRI raises THRE; clearing and setting it again must
		// re-assert it, else the driver marks UART_BUG_THRE and polls.
		{note: "THRI on", op: 'w', reg: regIER, val: ierTHRE, edges: 1},
		{note: "iir1: THRE", op: 'r', reg: regIIR, val: iirTHRE},
		w(regIER, 0x00, ""),
		{note: "THRI on again", op: 'w', reg: regIER, val: ierTHRE, edges: 1},
		{note: "iir: THRE re-asserted", op: 'r', reg: regIIR, val: iirTHRE},
		w(regIER, 0x00, ""),
		w(regMCR, mcrDTR|mcrRTS|mcrOUT2, "set_mctrl"),
		// TXEN test: THRI then LSR/IIR must show the interrupt.
		{note: "THRI on", op: 'w', reg: regIER, val: ierTHRE, edges: 1},
		r(regLSR, lsrTHRE|lsrTEMT, ""),
		r(regIIR, iirTHRE, "TX interrupt seen: no UART_BUG_TXEN"),
		w(regIER, 0x00, ""),
		r(regLSR, lsrTHRE|lsrTEMT, ""),
		r(regData, 0x00, ""),
		r(regIIR, iirNone, ""),
		r(regMSR, 0xb0, ""),
		{note: "enable RX interrupts", op: 'w', reg: regIER, val: ierRDA | ierRLS},
	}
	newRig(0).run(t, steps)
}

func TestDivisorLatch(t *testing.T) {
	g := newRig(0)
	g.run(t, []step{
		r(regLCR, 0x03, "reset LCR is 8N1"),
		w(regLCR, 0x83, "DLAB"),
		r(regData, defaultDivisor, "reset DLL"),
		r(regIER, 0x00, "reset DLM"),
		w(regData, 0x01, "DLL=1 (115200)"),
		w(regIER, 0x00, "DLM=0"),
		r(regData, 0x01, ""),
		r(regIER, 0x00, ""),
		w(regIER, 0xab, "DLM takes all 8 bits"),
		r(regIER, 0xab, ""),
		w(regLCR, 0x03, "DLAB off"),
		r(regIER, 0x00, "IER unchanged by DLM writes"),
		w(regLCR, 0x83, "DLAB on again"),
		r(regData, 0x01, "DLL kept"),
		r(regIER, 0xab, "DLM kept"),
		w(regLCR, 0x03, ""),
	})
	if g.out.Len() != 0 {
		t.Errorf("divisor writes reached the output: %q", g.out.Bytes())
	}
}

func TestOutput(t *testing.T) {
	g := newRig(0)
	msg := "Linux version 6.1\r\n"
	for i := range len(msg) {
		g.write(regData, msg[i])
	}
	// Loopback bytes go to the receiver, not the host.
	g.write(regMCR, mcrLoop)
	g.write(regData, 'X')
	g.write(regMCR, 0)
	g.write(regData, '!')
	if diff := cmp.Diff(msg+"!", g.out.String()); diff != "" {
		t.Errorf("output (-want +got):\n%s", diff)
	}
	if got := g.read(regData); got != 'X' {
		t.Errorf("looped-back byte = %q, want 'X'", got)
	}
	if got, want := g.s.Stats().TXBytes, uint64(len(msg)+1); got != want {
		t.Errorf("TXBytes = %d, want %d", got, want)
	}
}

func TestInterruptPriority(t *testing.T) {
	g := newRig(2)
	g.run(t, []step{
		{note: "input before RX interrupts: no edge", op: 'e', input: "ab"},
		{note: "overflow: OE latched, still no edge", op: 'e', input: "c"},
		{note: "enable all: one edge", op: 'w', reg: regIER, val: ierMask, edges: 1},
		r(regIIR, iirRLS, "line status first"),
		r(regLSR, lsrTHRE|lsrTEMT|lsrDR|lsrOE, "LSR shows overrun"),
		r(regLSR, lsrTHRE|lsrTEMT|lsrDR, "OE cleared by reading LSR"),
		r(regIIR, iirRDA, "then received data"),
		r(regData, 'a', ""),
		r(regIIR, iirRDA, "still data"),
		r(regData, 'b', ""),
		r(regIIR, iirTHRE, "then THR empty (read clears it)"),
		{note: "loopback with DTR only: CTS and DCD drop", op: 'w', reg: regMCR, val: mcrLoop | mcrDTR, edges: 1},
		r(regIIR, iirMS, "then modem status"),
		r(regMSR, msrDSR|msrDCTS|msrDDCD, "lines and their deltas"),
		r(regIIR, iirNone, "nothing left"),
		r(regMSR, msrDSR, "deltas cleared by the read"),
		{note: "leaving loopback changes the lines again", op: 'w', reg: regMCR, val: 0, edges: 1},
		r(regIIR, iirMS, ""),
	})
	if got := g.s.Stats().RXDropped; got != 1 {
		t.Errorf("RXDropped = %d, want 1", got)
	}
}

func TestRXInterrupts(t *testing.T) {
	g := newRig(0)
	g.run(t, []step{
		w(regIER, ierRDA, "RX interrupts on"),
		{note: "first input raises", op: 'e', input: "hi", edges: 1},
		{note: "more input while pending: line already high", op: 'e', input: "!", edges: 0},
		r(regIIR, iirRDA, ""),
		{note: "read", op: 'r', reg: regData, val: 'h'},
		{note: "read", op: 'r', reg: regData, val: 'i'},
		{note: "read", op: 'r', reg: regData, val: '!'},
		r(regLSR, lsrTHRE|lsrTEMT, "drained: no DR"),
		r(regIIR, iirNone, ""),
		{note: "new input after drain raises again", op: 'e', input: "x", edges: 1},
		w(regIER, 0, "disable"),
		{note: "re-enable with data pending raises", op: 'w', reg: regIER, val: ierRDA, edges: 1},
		w(regIIR, fcrEnable|fcrClearRX, "FIFO clear drops input"),
		r(regLSR, lsrTHRE|lsrTEMT, ""),
		r(regIIR, iirNone|iirFIFO, ""),
	})
}

// TestTHREPerWrite checks the edge the 8250 transmit path waits for: every THR
// write with ETBEI set re-raises THR empty, whether or not the guest read IIR.
func TestTHREPerWrite(t *testing.T) {
	g := newRig(0)
	g.run(t, []step{
		{note: "ETBEI on", op: 'w', reg: regIER, val: ierTHRE, edges: 1},
		{note: "ETBEI written again: no new edge", op: 'w', reg: regIER, val: ierTHRE, edges: 0},
		r(regIIR, iirTHRE, "ack"),
		r(regIIR, iirNone, "acked"),
		{note: "THR write", op: 'w', reg: regData, val: 'a', edges: 1},
		{note: "THR write without ack", op: 'w', reg: regData, val: 'b', edges: 1},
		{note: "THR write", op: 'w', reg: regData, val: 'c', edges: 1},
		r(regIIR, iirTHRE, ""),
		{note: "add RX interrupts, nothing pending", op: 'w', reg: regIER, val: ierTHRE | ierRDA, edges: 0},
		{note: "input", op: 'e', input: "z", edges: 1},
		{note: "THR write while RDA pending: no edge", op: 'w', reg: regData, val: 'd', edges: 0},
		w(regIER, 0, ""),
		{note: "no interrupts: THR writes raise nothing", op: 'w', reg: regData, val: 'e', edges: 0},
	})
	if got, want := g.out.String(), "abcde"; got != want {
		t.Errorf("output = %q, want %q", got, want)
	}
}

func TestLoopbackModemLines(t *testing.T) {
	tests := []struct {
		mcr  byte
		want byte
	}{
		{mcrLoop, 0x00},
		{mcrLoop | mcrRTS, msrCTS},
		{mcrLoop | mcrDTR, msrDSR},
		{mcrLoop | mcrOUT1, msrRI},
		{mcrLoop | mcrOUT2, msrDCD},
		{mcrLoop | 0x0a, 0x90}, // Linux's probe
		{mcrLoop | 0x0f, 0xf0},
		{0x0f, 0xb0}, // not in loopback: the host line is always ready
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("mcr=%#02x", tt.mcr), func(t *testing.T) {
			g := newRig(0)
			g.write(regMCR, tt.mcr)
			if got := g.read(regMSR) & 0xf0; got != tt.want {
				t.Errorf("MSR lines = %#02x, want %#02x", got, tt.want)
			}
		})
	}
	// RI reports its trailing edge only.
	g := newRig(0)
	g.write(regMCR, mcrLoop|mcrOUT1)
	g.read(regMSR)
	g.write(regMCR, mcrLoop)
	if got := g.read(regMSR); got&0x0f != msrTERI {
		t.Errorf("after RI falls, MSR = %#02x, want TERI only", got)
	}
}

func TestBadAccesses(t *testing.T) {
	g := newRig(0)
	wide := []byte{1, 2}
	g.s.Read(regLSR, wide)
	if diff := cmp.Diff([]byte{0xff, 0xff}, wide); diff != "" {
		t.Errorf("2-byte read (-want +got):\n%s", diff)
	}
	g.s.Write(regData, []byte{'a', 'b'})
	g.s.Write(Size, []byte{'a'})
	g.s.Read(Size+3, make([]byte, 1))
	g.s.Write(regData, nil)
	if g.out.Len() != 0 {
		t.Errorf("bad writes reached output: %q", g.out.Bytes())
	}
	if got := g.s.Stats().BadAccesses; got != 5 {
		t.Errorf("BadAccesses = %d, want 5", got)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

type failLine struct{}

func (failLine) Trigger() error { return errors.New("irqfd gone") }

func TestFailuresAreCounted(t *testing.T) {
	s := New(Config{Out: failWriter{}, IRQ: failLine{}})
	s.Write(regIER, []byte{ierTHRE})
	s.Write(regData, []byte{'a'})
	s.Write(regData, []byte{'b'})
	got := s.Stats()
	want := Stats{OutErrors: 2, IRQErrors: 3}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
}

func TestNilConfig(t *testing.T) {
	s := New(Config{})
	s.Write(regIER, []byte{ierMask})
	s.Write(regData, []byte{'a'})
	if n := s.Enqueue(make([]byte, DefaultRXBuffer+1)); n != DefaultRXBuffer {
		t.Errorf("Enqueue accepted %d, want %d", n, DefaultRXBuffer)
	}
}

// TestConcurrentHostAndGuest runs the host feeding input against a guest
// draining it; under -race it checks the locking, and the byte count checks
// nothing was lost or duplicated when the buffer never overflows.
func TestConcurrentHostAndGuest(t *testing.T) {
	const total = 20000
	g := newRig(total)
	g.write(regIER, ierRDA|ierTHRE)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range total {
			g.s.Enqueue([]byte{byte(i)})
		}
	})
	var got []byte
	for len(got) < total {
		if g.read(regLSR)&lsrDR != 0 {
			got = append(got, g.read(regData))
		} else {
			runtime.Gosched()
		}
	}
	wg.Wait()
	for i, b := range got {
		if b != byte(i) {
			t.Fatalf("byte %d = %d, want %d", i, b, byte(i))
		}
	}
	if d := g.s.Stats().RXDropped; d != 0 {
		t.Errorf("RXDropped = %d, want 0", d)
	}
}

// FuzzSerial drives the UART with arbitrary register accesses and host input,
// and checks the invariants a driver depends on after every access.
func FuzzSerial(f *testing.F) {
	f.Add([]byte{1, regIER, ierMask, 0, regIIR, 1, regData, 'a', 0, regData}, []byte("hello"))
	f.Add([]byte{1, regLCR, 0x80, 1, regData, 1, 1, regIER, 0, 0, regData, 1, regMCR, 0x1f, 0, regMSR}, []byte{})
	f.Add([]byte{1, regIIR, 0x07, 1, regMCR, mcrLoop, 1, regData, 'x', 0, regLSR, 0, regData, 0, regIIR}, []byte("\x00\xff"))
	f.Add([]byte{3, regData, 'a', 'b', 5, regIER, 1, 2, 3, 4}, []byte("\r\n"))
	f.Fuzz(func(t *testing.T, script, input []byte) {
		irq := new(devicestest.Line)
		var out bytes.Buffer
		s := New(Config{Out: &out, IRQ: irq, RXBuffer: 16})
		ops := devicestest.Ops(script, Size)
		thrWrites := 0
		for i, op := range ops {
			if i == len(ops)/2 {
				s.Enqueue(input)
			}
			devicestest.Apply(s, op)
			if op.Write && op.Offset == regData && len(op.Data) == 1 {
				thrWrites++
			}
			checkInvariants(t, s)
		}
		if out.Len() > thrWrites {
			t.Fatalf("%d output bytes from %d THR writes", out.Len(), thrWrites)
		}
	})
}

// checkInvariants peeks at the state directly (reading registers would change it).
func checkInvariants(t *testing.T, s *Serial) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ier&^ierMask != 0 {
		t.Fatalf("IER = %#02x has undefined bits", s.ier)
	}
	if s.mcr&^mcrMask != 0 {
		t.Fatalf("MCR = %#02x has undefined bits", s.mcr)
	}
	if s.rx.n < 0 || s.rx.n > len(s.rx.buf) || s.rx.head < 0 || s.rx.head >= len(s.rx.buf) {
		t.Fatalf("ring out of bounds: head %d n %d cap %d", s.rx.head, s.rx.n, len(s.rx.buf))
	}
	switch id := s.pending(); id {
	case iirNone, iirRLS, iirRDA, iirTHRE, iirMS:
		if (id != iirNone) != s.intrHigh {
			t.Fatalf("INTR level %v disagrees with pending %#x", s.intrHigh, id)
		}
	default:
		t.Fatalf("pending() = %#x", id)
	}
}

var _ devices.Interrupt = failLine{}

// BenchmarkTHR measures one guest byte of console output with its interrupt
// edge: to io.Discard (the device's own cost) and to a regular file (the
// write-through cost the monitor pays per byte, see doc.go).
func BenchmarkTHR(b *testing.B) {
	file, err := os.Create(filepath.Join(b.TempDir(), "console.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer file.Close()
	for _, bc := range []struct {
		name string
		out  io.Writer
	}{{"discard", io.Discard}, {"file", file}} {
		b.Run(bc.name, func(b *testing.B) {
			s := New(Config{Out: bc.out, IRQ: new(devicestest.Line)})
			s.Write(regIER, []byte{ierTHRE})
			data := []byte{'x'}
			for b.Loop() {
				s.Write(regData, data)
			}
		})
	}
}
