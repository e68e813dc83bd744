package i8042

import (
	"encoding/binary"
	"fmt"

	"github.com/boxd-dev/boxd/internal/devstate"
)

// stateVersion is the version of the blob SaveState writes.
const stateVersion = 1

// stateFixedLen is the blob up to the queued bytes: version, command byte,
// output port, last-write-was-command, pending command, reset asserted,
// queued byte count.
const stateFixedLen = 2 + 5 + 1

// Pause holds interrupts back until Resume: SendCtrlAltDel still queues its
// bytes, but IRQ 1 is raised only on Resume, so the controller's state and
// the interrupt controller's are stable for a snapshot.
func (c *Controller) Pause() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.paused = true
}

// Resume raises the interrupt held back by Pause, if any.
func (c *Controller) Resume() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.paused = false
	if c.heldIRQ {
		c.heldIRQ = false
		c.raise()
	}
}

// SaveState returns the controller's state as a versioned blob.
func (c *Controller) SaveState() ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := binary.LittleEndian.AppendUint16(make([]byte, 0, stateFixedLen+c.n), stateVersion)
	b = append(b, c.ctr, c.output, boolByte(c.lastCmd), c.pending, boolByte(c.resetOn), byte(c.n))
	for i := range c.n {
		b = append(b, c.queue[(c.head+i)%queueSize])
	}
	return b, nil
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// RestoreState replaces the controller's state with a blob from SaveState.
// The blob is untrusted: on error nothing changes. No interrupt is raised:
// the interrupt controller's saved state holds any the guest had not taken.
func (c *Controller) RestoreState(b []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.restore(b); err != nil {
		return fmt.Errorf("i8042: restore: %w", err)
	}
	return nil
}

func (c *Controller) restore(b []byte) error {
	if err := devstate.CheckMin(b, stateVersion, stateFixedLen); err != nil {
		return err
	}
	ctr, output, lastCmd, pending, resetOn, n := b[2], b[3], b[4], b[5], b[6], int(b[7])
	data := b[stateFixedLen:]
	switch pending {
	case 0, cmdWriteCTR, cmdWriteOutput, cmdKbdLoop, cmdAuxLoop, cmdAuxSend:
	default:
		return fmt.Errorf("pending command %#x takes no parameter", pending)
	}
	switch {
	case lastCmd > 1 || resetOn > 1:
		return fmt.Errorf("flag bytes %d, %d", lastCmd, resetOn)
	case n > queueSize:
		return fmt.Errorf("%d queued bytes, queue holds %d", n, queueSize)
	case n != len(data):
		return fmt.Errorf("%d queued bytes, %d follow", n, len(data))
	}
	c.ctr, c.output, c.lastCmd, c.pending, c.resetOn = ctr, output, lastCmd == 1, pending, resetOn == 1
	c.head, c.n = 0, n
	copy(c.queue[:], data)
	return nil
}
