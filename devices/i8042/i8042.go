package i8042

import (
	"errors"
	"sync"

	"github.com/boxd-dev/boxd/devices"
)

// Size is the number of ports the controller decodes: 0x60 through 0x64.
const Size = 5

// Offsets from the base port 0x60.
const (
	offData    = 0 // port 0x60
	offCommand = 4 // port 0x64: status on read, command on write
)

// Status register bits.
const (
	statusOBF     = 0x01 // output buffer full: a byte waits on the data port
	statusSYS     = 0x04 // system flag, mirrors the command byte's bit
	statusCMD     = 0x08 // last write went to the command port
	statusKeylock = 0x10 // 1 = keyboard not inhibited
)

// Command byte (CTR) bits.
const (
	ctrKbdInt = 0x01
	ctrSYS    = 0x04
	ctrKbdDis = 0x10
	ctrAuxDis = 0x20
)

// Controller commands (written to port 0x64).
const (
	cmdReadCTR     = 0x20
	cmdWriteCTR    = 0x60
	cmdAuxDisable  = 0xa7
	cmdAuxEnable   = 0xa8
	cmdAuxTest     = 0xa9
	cmdSelfTest    = 0xaa
	cmdKbdTest     = 0xab
	cmdKbdDisable  = 0xad
	cmdKbdEnable   = 0xae
	cmdReadOutput  = 0xd0
	cmdWriteOutput = 0xd1
	cmdKbdLoop     = 0xd2
	cmdAuxLoop     = 0xd3
	cmdAuxSend     = 0xd4
	cmdPulseFirst  = 0xf0 // 0xf0-0xff pulse output port bits 0-3 low
)

// Replies.
const (
	replySelfTestOK = 0x55
	replyPortOK     = 0x00
	replyAuxStuck   = 0x02 // "clock line stuck high": Linux takes it as no AUX port
	kbdAck          = 0xfa
	kbdBATOK        = 0xaa
)

const (
	outputReset = 0x01 // output port bit 0: CPU reset line, active low
	outputA20   = 0x02
)

// queueSize matches the 16-byte buffer Linux's i8042_flush expects at most.
const queueSize = 16

// ErrQueueFull is returned by SendCtrlAltDel when the guest has not drained
// enough of the output queue.
var ErrQueueFull = errors.New("i8042 output queue full")

// ErrKeyboardDisabled is returned by SendCtrlAltDel when the guest disabled the
// keyboard port or its interrupt, so the keys would never be seen.
var ErrKeyboardDisabled = errors.New("i8042 keyboard disabled by the guest")

// Config wires a Controller to the monitor.
type Config struct {
	// Reset is called, once, when the guest asserts the reset line. It runs on
	// the vCPU goroutine inside the port write and must not block or call back
	// into the Controller; the monitor typically records the request and stops
	// the vCPUs.
	Reset func()
	// IRQ is the keyboard interrupt (GSI 1); nil means none.
	IRQ devices.Interrupt
}

// Stats counts what the controller saw or refused.
type Stats struct {
	ResetPulses uint64 // reset-line pulses, including those after the first
	Ignored     uint64 // bad-width accesses, unknown commands, unused ports
	Dropped     uint64 // output bytes lost to a full queue
	IRQErrors   uint64 // Interrupt.Trigger failures
}

// Controller is the i8042. It implements devices.Device.
type Controller struct {
	reset func()
	irq   devices.Interrupt

	mu sync.Mutex
	// All fields below are guarded by mu.
	ctr     byte // command byte
	output  byte // output port
	lastCmd bool // statusCMD: the last write was a command
	pending byte // command waiting for its parameter on the data port, or 0
	queue   [queueSize]byte
	head, n int
	resetOn bool // Reset has been called
	paused  bool // Pause: interrupts wait for Resume
	heldIRQ bool // an interrupt was due while paused
	stats   Stats
}

var _ devices.Device = (*Controller)(nil)

// New returns a controller in its post-POST state: keyboard interrupt on,
// translation off, AUX absent, reset line deasserted.
func New(cfg Config) *Controller {
	return &Controller{
		reset:  cfg.Reset,
		irq:    cfg.IRQ,
		ctr:    ctrKbdInt | ctrSYS,
		output: outputReset | outputA20,
	}
}

// Read implements devices.Device.
func (c *Controller) Read(offset uint64, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(data) != 1 || (offset != offData && offset != offCommand) {
		for i := range data {
			data[i] = 0xff
		}
		c.stats.Ignored++
		return
	}
	if offset == offCommand {
		data[0] = c.status()
		return
	}
	data[0] = c.pop()
}

// Write implements devices.Device.
func (c *Controller) Write(offset uint64, data []byte) {
	var doReset bool
	c.mu.Lock()
	switch {
	case len(data) != 1 || (offset != offData && offset != offCommand):
		c.stats.Ignored++
	case offset == offCommand:
		c.lastCmd = true
		doReset = c.command(data[0])
	default:
		c.lastCmd = false
		doReset = c.dataByte(data[0])
	}
	c.mu.Unlock()
	// Outside the lock, so a callback that inspects the controller cannot deadlock.
	if doReset && c.reset != nil {
		c.reset()
	}
}

// ResetRequested reports whether the guest has asserted the reset line.
func (c *Controller) ResetRequested() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.resetOn
}

// Stats returns a snapshot of the counters.
func (c *Controller) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// SendCtrlAltDel types Ctrl+Alt+Del (make and break, scancode set 2), which a
// Linux guest turns into ctrl_alt_del(): a signal to init or a reboot. It is the
// host's polite way to ask a guest to shut down.
func (c *Controller) SendCtrlAltDel() error {
	seq := [...]byte{
		0x14, 0x11, 0xe0, 0x71, // Ctrl, Alt, Del down
		0xe0, 0xf0, 0x71, 0xf0, 0x11, 0xf0, 0x14, // Del, Alt, Ctrl up
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctr&ctrKbdDis != 0 || c.ctr&ctrKbdInt == 0 {
		return ErrKeyboardDisabled
	}
	if queueSize-c.n < len(seq) {
		return ErrQueueFull
	}
	for _, b := range seq {
		c.push(b)
	}
	return nil
}

func (c *Controller) status() byte {
	s := byte(statusKeylock)
	if c.n > 0 {
		s |= statusOBF
	}
	if c.ctr&ctrSYS != 0 {
		s |= statusSYS
	}
	if c.lastCmd {
		s |= statusCMD
	}
	return s
}

// command handles a write to port 0x64 and reports whether it pulsed reset.
func (c *Controller) command(cmd byte) bool {
	c.pending = 0
	switch cmd {
	case cmdReadCTR:
		c.reply(c.ctr)
	case cmdWriteCTR, cmdWriteOutput, cmdKbdLoop, cmdAuxLoop, cmdAuxSend:
		c.pending = cmd
	case cmdAuxDisable:
		c.ctr |= ctrAuxDis
	case cmdAuxEnable:
		c.ctr &^= ctrAuxDis
	case cmdAuxTest:
		c.reply(replyAuxStuck)
	case cmdSelfTest:
		c.reply(replySelfTestOK)
	case cmdKbdTest:
		c.reply(replyPortOK)
	case cmdKbdDisable:
		c.ctr |= ctrKbdDis
	case cmdKbdEnable:
		c.ctr &^= ctrKbdDis
	case cmdReadOutput:
		c.reply(c.output)
	default:
		if cmd < cmdPulseFirst {
			c.stats.Ignored++
			break
		}
		// 0xf0-0xff pulse the output lines whose bits (0-3) are clear; bit 0
		// is the reset line.
		if cmd&outputReset == 0 {
			return c.assertReset()
		}
	}
	return false
}

// dataByte handles a write to port 0x60: a pending command's parameter, or a
// byte for the keyboard. It reports whether it pulsed reset.
func (c *Controller) dataByte(v byte) bool {
	cmd := c.pending
	c.pending = 0
	switch cmd {
	case cmdWriteCTR:
		c.ctr = v
	case cmdWriteOutput:
		c.output = v
		if v&outputReset == 0 {
			return c.assertReset()
		}
	case cmdKbdLoop, cmdAuxLoop:
		// No AUX port: AUX loop data comes back as keyboard data (see doc.go).
		c.push(v)
	case cmdAuxSend:
		// No AUX device to receive it.
		c.stats.Ignored++
	default:
		c.keyboard(v)
	}
	return false
}

// keyboard answers a command byte sent to the keyboard itself.
func (c *Controller) keyboard(v byte) {
	switch v {
	case 0xff: // reset: ACK, then basic assurance test passed
		c.push(kbdAck)
		c.push(kbdBATOK)
	case 0xf2: // identify: ACK, MF2 keyboard
		c.push(kbdAck)
		c.push(0xab)
		c.push(0x83)
	case 0xee: // echo
		c.push(0xee)
	default: // LEDs, scancode set, typematic, enable... and their parameters
		c.push(kbdAck)
	}
}

func (c *Controller) assertReset() bool {
	c.stats.ResetPulses++
	if c.resetOn {
		return false
	}
	c.resetOn = true
	return true
}

// reply answers a controller command. Whatever the guest left unread is
// discarded first, so the next data read is the reply.
func (c *Controller) reply(v byte) {
	c.head, c.n = 0, 0
	c.push(v)
}

// push queues a byte for the data port and raises IRQ 1 if it is the byte now
// visible in the output buffer.
func (c *Controller) push(v byte) {
	if c.n == queueSize {
		c.stats.Dropped++
		return
	}
	c.queue[(c.head+c.n)%queueSize] = v
	c.n++
	if c.n == 1 {
		c.raise()
	}
}

// pop returns the byte in the output buffer (0 if empty) and raises IRQ 1 for
// the next one, which now takes its place.
func (c *Controller) pop() byte {
	if c.n == 0 {
		return 0
	}
	v := c.queue[c.head]
	c.head = (c.head + 1) % queueSize
	c.n--
	if c.n > 0 {
		c.raise()
	}
	return v
}

func (c *Controller) raise() {
	if c.irq == nil || c.ctr&ctrKbdInt == 0 {
		return
	}
	if c.paused {
		c.heldIRQ = true
		return
	}
	if err := c.irq.Trigger(); err != nil {
		c.stats.IRQErrors++
	}
}
