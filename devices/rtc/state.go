package rtc

import (
	"encoding/binary"
	"fmt"

	"github.com/boxd-dev/boxd/internal/devstate"
)

// stateVersion is the version of the blob SaveState writes.
const stateVersion = 1

// stateLen is the blob's size: version, index, NMI-disable bit, CMOS RAM.
const stateLen = 2 + 1 + 1 + 128

// SaveState returns the selected register, the NMI-disable bit and the CMOS
// RAM as a versioned blob. The clock registers are not state: they read the
// host clock.
func (c *CMOS) SaveState() ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := binary.LittleEndian.AppendUint16(make([]byte, 0, stateLen), stateVersion)
	b = append(b, c.index, c.nmi)
	return append(b, c.ram[:]...), nil
}

// RestoreState replaces the CMOS state with a blob from SaveState. The blob
// is untrusted: on error nothing changes.
func (c *CMOS) RestoreState(b []byte) error {
	if err := checkState(b); err != nil {
		return fmt.Errorf("rtc: restore: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.index, c.nmi = b[2], b[3]
	copy(c.ram[:], b[4:])
	return nil
}

func checkState(b []byte) error {
	if err := devstate.Check(b, stateVersion, stateLen); err != nil {
		return err
	}
	switch {
	case b[2]&^indexMask != 0:
		return fmt.Errorf("index %#x beyond the registers", b[2])
	case b[3]&^nmiDisable != 0:
		return fmt.Errorf("NMI byte %#x has bits other than NMI-disable", b[3])
	case b[4+regA]&aUIP != 0:
		return fmt.Errorf("status A %#x has the read-only UIP bit", b[4+regA])
	}
	return nil
}
