package serial

import (
	"io"
	"sync"

	"github.com/boxd-dev/boxd/devices"
)

// Size is the number of port addresses the UART decodes (base..base+7).
const Size = 8

// DefaultRXBuffer is the receive buffer size used when Config.RXBuffer is zero.
const DefaultRXBuffer = 4096

// Register offsets from the base port.
const (
	regData = 0 // RBR on read, THR on write; DLL when LCR.DLAB
	regIER  = 1 // DLM when LCR.DLAB
	regIIR  = 2 // IIR on read, FCR on write
	regLCR  = 3
	regMCR  = 4
	regLSR  = 5
	regMSR  = 6
	regSCR  = 7
)

// IER bits.
const (
	ierRDA  = 0x01 // ERBFI: received data available
	ierTHRE = 0x02 // ETBEI: transmitter holding register empty
	ierRLS  = 0x04 // ELSI: receiver line status
	ierMS   = 0x08 // EDSSI: modem status
	ierMask = 0x0f // the 16550A has no other IER bits; Linux's probe checks this
)

// IIR values (bits 3:0) and the FIFO-enabled bits (7:6).
const (
	iirMS   = 0x00
	iirNone = 0x01
	iirTHRE = 0x02
	iirRDA  = 0x04
	iirRLS  = 0x06
	iirFIFO = 0xc0
)

// FCR bits.
const (
	fcrEnable  = 0x01
	fcrClearRX = 0x02
	fcrClearTX = 0x04
)

const lcrDLAB = 0x80

// MCR bits.
const (
	mcrDTR  = 0x01
	mcrRTS  = 0x02
	mcrOUT1 = 0x04
	mcrOUT2 = 0x08
	mcrLoop = 0x10
	mcrMask = 0x1f
)

// LSR bits.
const (
	lsrDR   = 0x01
	lsrOE   = 0x02
	lsrTHRE = 0x20
	lsrTEMT = 0x40
)

// MSR bits: deltas in the low nibble, line states in the high one.
const (
	msrDCTS = 0x01
	msrDDSR = 0x02
	msrTERI = 0x04
	msrDDCD = 0x08
	msrCTS  = 0x10
	msrDSR  = 0x20
	msrRI   = 0x40
	msrDCD  = 0x80
)

// defaultDivisor is 115200/12 = 9600 baud, the reset value firmware leaves; the
// divisor only matters to the guest, which reads back what it wrote.
const defaultDivisor = 12

// Config wires a Serial to the host.
type Config struct {
	// Out receives every byte the guest transmits, one Write per byte, in order.
	// nil discards output. See the package doc for why Out must not block.
	Out io.Writer
	// IRQ is raised on each rising edge of the UART's interrupt output. nil
	// leaves the guest to poll (earlycon, or an IER of 0).
	IRQ devices.Interrupt
	// RXBuffer bounds host input waiting for the guest; 0 means DefaultRXBuffer.
	RXBuffer int
}

// Stats counts what the device dropped or refused. All counters only grow.
type Stats struct {
	TXBytes     uint64 // bytes written to Out
	OutErrors   uint64 // Out.Write failures; each lost one byte
	RXDropped   uint64 // host input bytes dropped because the buffer was full
	IRQErrors   uint64 // Interrupt.Trigger failures
	BadAccesses uint64 // accesses not one byte wide or beyond the registers
}

// Serial is one 16550A UART. It implements devices.Device; insert it on the
// port-I/O bus over Size ports.
type Serial struct {
	out io.Writer
	irq devices.Interrupt

	mu sync.Mutex
	// All fields below are guarded by mu.
	ier, lcr, mcr, scr, fcr byte
	dll, dlm                byte
	overrun                 bool // LSR.OE: input was lost since LSR was last read
	msrDelta                byte // MSR low nibble, cleared by reading MSR
	thrEmpty                bool // the THR-empty interrupt condition (not LSR.THRE, which is constant)
	intrHigh                bool // level of the INTR output after the last update
	rx                      ring
	paused                  bool   // Pause: Enqueue holds input back
	held                    []byte // input held while paused, at most len(rx.buf)
	stats                   Stats
	obuf                    [1]byte // Out.Write argument, kept here so a write does not allocate
}

var _ devices.Device = (*Serial)(nil)

// New returns a UART in its reset state: interrupts disabled, FIFO disabled,
// divisor 9600 baud, 8N1.
func New(cfg Config) *Serial {
	out := cfg.Out
	if out == nil {
		out = io.Discard
	}
	n := cfg.RXBuffer
	if n <= 0 {
		n = DefaultRXBuffer
	}
	return &Serial{
		out: out,
		irq: cfg.IRQ,
		lcr: 0x03, // 8 data bits, 1 stop bit, no parity
		dll: defaultDivisor,
		rx:  ring{buf: make([]byte, n)},
	}
}

// Read implements devices.Device.
func (s *Serial) Read(offset uint64, data []byte) {
	if len(data) != 1 || offset >= Size {
		for i := range data {
			data[i] = 0xff
		}
		s.mu.Lock()
		s.stats.BadAccesses++
		s.mu.Unlock()
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	data[0] = s.readReg(offset)
}

// Write implements devices.Device.
func (s *Serial) Write(offset uint64, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(data) != 1 || offset >= Size {
		s.stats.BadAccesses++
		return
	}
	s.writeReg(offset, data[0])
}

// Enqueue hands host input (a keystroke, a pasted line) to the guest. It never
// blocks; bytes that do not fit in the receive buffer are dropped, counted in
// Stats.RXDropped, and flagged to the guest as an overrun. It returns how many
// bytes were accepted.
func (s *Serial) Enqueue(b []byte) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.paused {
		n := min(len(b), len(s.rx.buf)-len(s.held))
		s.held = append(s.held, b[:n]...)
		s.stats.RXDropped += uint64(len(b) - n)
		return n
	}
	return s.receive(b)
}

// receive puts host input in the receive buffer. mu held.
func (s *Serial) receive(b []byte) int {
	n := s.rx.push(b)
	if n < len(b) {
		s.stats.RXDropped += uint64(len(b) - n)
		s.overrun = true
	}
	s.update()
	return n
}

// Stats returns a snapshot of the counters.
func (s *Serial) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

func (s *Serial) readReg(offset uint64) byte {
	dlab := s.lcr&lcrDLAB != 0
	switch offset {
	case regData:
		if dlab {
			return s.dll
		}
		b, _ := s.rx.pop() // an empty RBR reads 0
		s.update()
		return b
	case regIER:
		if dlab {
			return s.dlm
		}
		return s.ier
	case regIIR:
		id := s.pending()
		if id == iirTHRE {
			// Reading IIR is how the 16550 acknowledges a THR-empty interrupt.
			s.thrEmpty = false
			s.update()
		}
		if s.fcr&fcrEnable != 0 {
			id |= iirFIFO
		}
		return id
	case regLCR:
		return s.lcr
	case regMCR:
		return s.mcr
	case regLSR:
		v := byte(lsrTHRE | lsrTEMT)
		if s.rx.n > 0 {
			v |= lsrDR
		}
		if s.overrun {
			v |= lsrOE
			s.overrun = false
			s.update()
		}
		return v
	case regMSR:
		v := s.modemLines() | s.msrDelta
		if s.msrDelta != 0 {
			s.msrDelta = 0
			s.update()
		}
		return v
	default: // regSCR
		return s.scr
	}
}

func (s *Serial) writeReg(offset uint64, v byte) {
	dlab := s.lcr&lcrDLAB != 0
	switch offset {
	case regData:
		if dlab {
			s.dll = v
			return
		}
		s.transmit(v)
	case regIER:
		if dlab {
			s.dlm = v
			return
		}
		old := s.ier
		s.ier = v & ierMask
		if old&ierTHRE == 0 && s.ier&ierTHRE != 0 {
			// THR is always empty, so enabling its interrupt raises it at once;
			// the 8250 driver's startup test counts on that.
			s.thrEmpty = true
		}
		s.update()
	case regIIR: // FCR
		if v&fcrEnable == 0 {
			// Leaving FIFO mode: other FCR bits are ignored, and a mode change
			// resets the FIFOs.
			if s.fcr&fcrEnable != 0 {
				s.rx.reset()
			}
			s.fcr = 0
		} else {
			if s.fcr&fcrEnable == 0 || v&fcrClearRX != 0 {
				s.rx.reset()
			}
			// Clear bits self-reset; what stays is enable, DMA mode, trigger level.
			s.fcr = v &^ (fcrClearRX | fcrClearTX)
		}
		s.update()
	case regLCR:
		s.lcr = v
	case regMCR:
		before := s.modemLines()
		s.mcr = v & mcrMask
		after := s.modemLines()
		s.msrDelta |= modemDeltas(before, after)
		s.update()
	case regLSR, regMSR:
		// Read-only (LSR writes are a factory test mode); ignored.
	default: // regSCR
		s.scr = v
	}
}

// transmit sends one THR byte: to Out, or back to the receiver in loopback.
// The THR-empty condition drops for the duration and rises again, giving the
// edge the driver waits for before it writes the next burst.
func (s *Serial) transmit(v byte) {
	s.thrEmpty = false
	s.update()
	if s.mcr&mcrLoop != 0 {
		if s.rx.push([]byte{v}) == 0 {
			s.overrun = true
		}
	} else {
		s.obuf[0] = v
		if _, err := s.out.Write(s.obuf[:]); err != nil {
			s.stats.OutErrors++
		} else {
			s.stats.TXBytes++
		}
	}
	s.thrEmpty = true
	s.update()
}

// modemLines is the high nibble of MSR. In loopback the MCR outputs drive the
// inputs (Linux's probe sets RTS|OUT2 and expects CTS|DCD); otherwise the line
// looks like a terminal that is present and ready.
func (s *Serial) modemLines() byte {
	if s.mcr&mcrLoop == 0 {
		return msrDCD | msrDSR | msrCTS
	}
	var v byte
	if s.mcr&mcrRTS != 0 {
		v |= msrCTS
	}
	if s.mcr&mcrDTR != 0 {
		v |= msrDSR
	}
	if s.mcr&mcrOUT1 != 0 {
		v |= msrRI
	}
	if s.mcr&mcrOUT2 != 0 {
		v |= msrDCD
	}
	return v
}

// modemDeltas computes the MSR delta bits for a change of the line states.
// RI reports only its trailing edge (TERI), as on the 16550.
func modemDeltas(before, after byte) byte {
	changed := before ^ after
	var d byte
	if changed&msrCTS != 0 {
		d |= msrDCTS
	}
	if changed&msrDSR != 0 {
		d |= msrDDSR
	}
	if before&msrRI != 0 && after&msrRI == 0 {
		d |= msrTERI
	}
	if changed&msrDCD != 0 {
		d |= msrDDCD
	}
	return d
}

// pending returns the IIR identification of the highest-priority enabled
// interrupt condition, or iirNone.
func (s *Serial) pending() byte {
	switch {
	case s.ier&ierRLS != 0 && s.overrun:
		return iirRLS
	case s.ier&ierRDA != 0 && s.rx.n > 0:
		return iirRDA
	case s.ier&ierTHRE != 0 && s.thrEmpty:
		return iirTHRE
	case s.ier&ierMS != 0 && s.msrDelta != 0:
		return iirMS
	}
	return iirNone
}

// update recomputes the INTR level and triggers the line on a rising edge. Every
// state change that can affect pending() ends with a call to update.
func (s *Serial) update() {
	high := s.pending() != iirNone
	if high && !s.intrHigh && s.irq != nil {
		if err := s.irq.Trigger(); err != nil {
			s.stats.IRQErrors++
		}
	}
	s.intrHigh = high
}

// ring is the bounded receive buffer.
type ring struct {
	buf  []byte
	head int // index of the oldest byte
	n    int // bytes buffered
}

// push appends as much of b as fits and returns how much that was.
func (r *ring) push(b []byte) int {
	k := 0
	for k < len(b) && r.n < len(r.buf) {
		r.buf[(r.head+r.n)%len(r.buf)] = b[k]
		r.n++
		k++
	}
	return k
}

func (r *ring) pop() (byte, bool) {
	if r.n == 0 {
		return 0, false
	}
	b := r.buf[r.head]
	r.head = (r.head + 1) % len(r.buf)
	r.n--
	return b, true
}

func (r *ring) reset() { r.head, r.n = 0, 0 }
