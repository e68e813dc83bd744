package serial

import (
	"encoding/binary"
	"fmt"

	"github.com/boxd-dev/boxd/internal/devstate"
)

// stateVersion is the version of the blob SaveState writes.
const stateVersion = 1

// stateFixedLen is the blob up to the receive buffer's bytes: version, IER,
// LCR, MCR, SCR, FCR, DLL, DLM, MSR deltas, flags, buffered byte count.
const stateFixedLen = 2 + 8 + 1 + 4

// Flag bits of the blob.
const (
	flagOverrun  = 1 << 0
	flagTHREmpty = 1 << 1
	flagIntrHigh = 1 << 2
)

// Pause holds host input back: until Resume, Enqueue keeps bytes aside
// (bounded by the receive buffer's size) where the guest cannot see them and
// no interrupt is raised, so the UART's state is stable for a snapshot.
// Guest accesses still work (the monitor pauses the vCPUs first).
func (s *Serial) Pause() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.paused = true
}

// Resume hands the input held during the pause to the guest.
func (s *Serial) Resume() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.paused = false
	if len(s.held) > 0 {
		s.receive(s.held)
		s.held = s.held[:0]
	}
}

// SaveState returns every register, the pending interrupt conditions and
// the buffered input as a versioned blob. Input held by Pause is host-side
// and not saved.
func (s *Serial) SaveState() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var flags byte
	if s.overrun {
		flags |= flagOverrun
	}
	if s.thrEmpty {
		flags |= flagTHREmpty
	}
	if s.intrHigh {
		flags |= flagIntrHigh
	}
	b := binary.LittleEndian.AppendUint16(make([]byte, 0, stateFixedLen+s.rx.n), stateVersion)
	b = append(b, s.ier, s.lcr, s.mcr, s.scr, s.fcr, s.dll, s.dlm, s.msrDelta, flags)
	b = binary.LittleEndian.AppendUint32(b, uint32(s.rx.n))
	for i := range s.rx.n {
		b = append(b, s.rx.buf[(s.rx.head+i)%len(s.rx.buf)])
	}
	return b, nil
}

// RestoreState replaces the UART's state with a blob from SaveState. The
// blob is untrusted: on error nothing changes. The interrupt line's level
// is restored as saved, without raising an edge: the interrupt controller's
// own saved state already holds any the guest had not taken.
func (s *Serial) RestoreState(b []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.restore(b); err != nil {
		return fmt.Errorf("serial: restore: %w", err)
	}
	return nil
}

func (s *Serial) restore(b []byte) error {
	if err := devstate.CheckMin(b, stateVersion, stateFixedLen); err != nil {
		return err
	}
	ier, lcr, mcr, scr, fcr, dll, dlm, delta, flags := b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10]
	n := binary.LittleEndian.Uint32(b[11:])
	data := b[stateFixedLen:]
	switch {
	case ier&^ierMask != 0:
		return fmt.Errorf("IER %#x has undefined bits", ier)
	case mcr&^mcrMask != 0:
		return fmt.Errorf("MCR %#x has undefined bits", mcr)
	case fcr&(fcrClearRX|fcrClearTX) != 0:
		return fmt.Errorf("FCR %#x has self-clearing bits set", fcr)
	case delta&^0x0f != 0:
		return fmt.Errorf("MSR deltas %#x outside the low nibble", delta)
	case flags&^(flagOverrun|flagTHREmpty|flagIntrHigh) != 0:
		return fmt.Errorf("unknown flags %#x", flags)
	case uint64(n) != uint64(len(data)):
		return fmt.Errorf("%d buffered bytes, %d follow", n, len(data))
	case len(data) > len(s.rx.buf):
		return fmt.Errorf("%d buffered bytes, receive buffer holds %d", len(data), len(s.rx.buf))
	}
	s.ier, s.lcr, s.mcr, s.scr, s.fcr, s.dll, s.dlm, s.msrDelta = ier, lcr, mcr, scr, fcr, dll, dlm, delta
	s.overrun = flags&flagOverrun != 0
	s.thrEmpty = flags&flagTHREmpty != 0
	s.intrHigh = flags&flagIntrHigh != 0
	s.rx.reset()
	s.rx.push(data)
	return nil
}
