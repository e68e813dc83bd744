package rtc

import (
	"sync"
	"time"

	"github.com/boxd-dev/boxd/devices"
)

// Size is the number of ports the CMOS decodes: 0x70 and 0x71.
const Size = 2

const (
	offIndex = 0
	offData  = 1
)

// Register numbers.
const (
	regSeconds    = 0x00
	regMinutes    = 0x02
	regHours      = 0x04
	regWeekday    = 0x06
	regDayOfMonth = 0x07
	regMonth      = 0x08
	regYear       = 0x09
	regA          = 0x0a
	regB          = 0x0b
	regC          = 0x0c
	regD          = 0x0d
	regCentury    = 0x32
)

const (
	aUIP       = 0x80
	aDefault   = 0x26 // 32.768 kHz time base, 1024 Hz periodic rate
	bDefault   = b24h // BCD, 24-hour
	b24h       = 0x02
	bBinary    = 0x04
	dValidRAM  = 0x80
	hourPM     = 0x80
	indexMask  = 0x7f
	nmiDisable = 0x80
)

// uipWindow is how long before each second boundary status A reports an update
// in progress (tBUC on the MC146818 datasheet).
const uipWindow = 244 * time.Microsecond

// CMOS is the RTC and its CMOS RAM. It implements devices.Device.
type CMOS struct {
	now func() time.Time

	mu sync.Mutex
	// All fields below are guarded by mu.
	index byte
	nmi   byte // NMI-disable bit as last written
	ram   [128]byte
}

var _ devices.Device = (*CMOS)(nil)

// New returns a CMOS whose clock reads now (time.Now when nil), converted to UTC.
func New(now func() time.Time) *CMOS {
	if now == nil {
		now = time.Now
	}
	c := &CMOS{now: now}
	c.ram[regA] = aDefault
	c.ram[regB] = bDefault
	return c
}

// Read implements devices.Device. Accesses other than one byte read 0xff.
func (c *CMOS) Read(offset uint64, data []byte) {
	if len(data) != 1 || offset != offData {
		// Port 0x70 is write-only; anything else is not a register.
		for i := range data {
			data[i] = 0xff
		}
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	data[0] = c.readReg(c.index)
}

// Write implements devices.Device. Accesses other than one byte are ignored.
func (c *CMOS) Write(offset uint64, data []byte) {
	if len(data) != 1 || offset >= Size {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	v := data[0]
	if offset == offIndex {
		c.index = v & indexMask
		c.nmi = v & nmiDisable
		return
	}
	switch c.index {
	case regSeconds, regMinutes, regHours, regWeekday, regDayOfMonth, regMonth, regYear, regCentury:
		// The host clock is the authority (see doc.go).
	case regA:
		c.ram[regA] = v &^ aUIP // UIP is read-only
	case regC, regD:
		// Read-only.
	default:
		c.ram[c.index] = v
	}
}

func (c *CMOS) readReg(reg byte) byte {
	switch reg {
	case regA:
		v := c.ram[regA] &^ aUIP
		if time.Duration(c.now().Nanosecond()) >= time.Second-uipWindow {
			v |= aUIP
		}
		return v
	case regC:
		return 0 // no interrupt flags: no interrupts are emulated
	case regD:
		return dValidRAM
	case regSeconds, regMinutes, regHours, regWeekday, regDayOfMonth, regMonth, regYear, regCentury:
		return c.timeReg(reg, c.now().UTC())
	}
	return c.ram[reg&indexMask]
}

// timeReg encodes one field of t as status register B asks.
func (c *CMOS) timeReg(reg byte, t time.Time) byte {
	b := c.ram[regB]
	var v int
	switch reg {
	case regSeconds:
		v = t.Second()
	case regMinutes:
		v = t.Minute()
	case regHours:
		h := t.Hour()
		if b&b24h != 0 {
			v = h
			break
		}
		// 12-hour mode: 12, 1..11 with bit 7 for PM, the flag outside the BCD.
		h12 := h % 12
		if h12 == 0 {
			h12 = 12
		}
		enc := c.encode(h12)
		if h >= 12 {
			enc |= hourPM
		}
		return enc
	case regWeekday:
		v = int(t.Weekday()) + 1 // 1 = Sunday
	case regDayOfMonth:
		v = t.Day()
	case regMonth:
		v = int(t.Month())
	case regYear:
		v = t.Year() % 100
	case regCentury:
		v = t.Year() / 100 % 100
	}
	return c.encode(v)
}

// encode converts 0..99 to BCD unless status B selects binary.
func (c *CMOS) encode(v int) byte {
	if c.ram[regB]&bBinary != 0 {
		return byte(v)
	}
	return byte(v/10<<4 | v%10)
}
