package rtc

import (
	"fmt"
	"testing"
	"time"

	"github.com/boxd-dev/boxd/devices/devicestest"
	"github.com/google/go-cmp/cmp"
)

func read(c *CMOS, reg byte) byte {
	c.Write(offIndex, []byte{reg})
	var b [1]byte
	c.Read(offData, b[:])
	return b[0]
}

func write(c *CMOS, reg, v byte) {
	c.Write(offIndex, []byte{reg})
	c.Write(offData, []byte{v})
}

func fixed(t time.Time) func() time.Time { return func() time.Time { return t } }

func TestClock(t *testing.T) {
	// A Thursday afternoon in a leap year, given in a non-UTC zone: the CMOS
	// must report UTC.
	berlin := time.FixedZone("CET", 3600)
	thursday := time.Date(2024, 2, 29, 14, 45, 59, 500_000_000, berlin) // 13:45:59 UTC

	regs := []byte{regSeconds, regMinutes, regHours, regWeekday, regDayOfMonth, regMonth, regYear, regCentury}
	tests := []struct {
		name  string
		now   time.Time
		regB  byte
		want  []byte // in the order of regs
		wantA byte
	}{
		{"BCD 24h", thursday, 0x02, []byte{0x59, 0x45, 0x13, 0x05, 0x29, 0x02, 0x24, 0x20}, aDefault},
		{"binary 24h", thursday, 0x06, []byte{59, 45, 13, 5, 29, 2, 24, 20}, aDefault},
		{"BCD 12h PM", thursday, 0x00, []byte{0x59, 0x45, 0x81, 0x05, 0x29, 0x02, 0x24, 0x20}, aDefault},
		{"binary 12h PM", thursday, 0x04, []byte{59, 45, 0x81, 5, 29, 2, 24, 20}, aDefault},
		{"12h midnight", time.Date(1999, 12, 31, 0, 0, 0, 0, time.UTC), 0x00, []byte{0x00, 0x00, 0x12, 0x06, 0x31, 0x12, 0x99, 0x19}, aDefault},
		{"12h noon", time.Date(2100, 1, 3, 12, 30, 0, 0, time.UTC), 0x00, []byte{0x00, 0x30, 0x92, 0x01, 0x03, 0x01, 0x00, 0x21}, aDefault},
		{"update in progress", time.Date(2024, 1, 1, 0, 0, 0, 999_900_000, time.UTC), 0x02, []byte{0x00, 0x00, 0x00, 0x02, 0x01, 0x01, 0x24, 0x20}, aDefault | aUIP},
		{"just outside the update window", time.Date(2024, 1, 1, 0, 0, 0, 999_700_000, time.UTC), 0x02, []byte{0x00, 0x00, 0x00, 0x02, 0x01, 0x01, 0x24, 0x20}, aDefault},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(fixed(tt.now))
			write(c, regB, tt.regB)
			var got []byte
			for _, r := range regs {
				got = append(got, read(c, r))
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("sec,min,hour,wday,mday,mon,year,century (-want +got):\n%s", diff)
			}
			if got := read(c, regA); got != tt.wantA {
				t.Errorf("status A = %#x, want %#x", got, tt.wantA)
			}
		})
	}
}

func TestStatusAndRAM(t *testing.T) {
	c := New(fixed(time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)))
	tests := []struct {
		reg  byte
		want byte
	}{
		{regA, aDefault},
		{regB, bDefault},
		{regC, 0},
		{regD, dValidRAM},
		{0x0f, 0},
		{0x7f, 0},
	}
	for _, tt := range tests {
		if got := read(c, tt.reg); got != tt.want {
			t.Errorf("reg %#x = %#x, want %#x", tt.reg, got, tt.want)
		}
	}

	// Time registers ignore writes; RAM keeps them; C and D are read-only;
	// UIP cannot be written.
	write(c, regSeconds, 0x33)
	write(c, regYear, 0x99)
	write(c, 0x0f, 0x0a) // warm-reset code, as Linux's SMP boot writes it
	write(c, 0x40, 0xab)
	write(c, regC, 0xff)
	write(c, regD, 0x00)
	write(c, regA, 0xa6)
	for _, tt := range []struct{ reg, want byte }{
		{regSeconds, 0x00}, {regYear, 0x24}, {0x0f, 0x0a}, {0x40, 0xab}, {regC, 0}, {regD, dValidRAM}, {regA, 0x26},
	} {
		if got := read(c, tt.reg); got != tt.want {
			t.Errorf("after writes, reg %#x = %#x, want %#x", tt.reg, got, tt.want)
		}
	}

	// The NMI-mask bit of the index does not change the register selected.
	c.Write(offIndex, []byte{nmiDisable | 0x40})
	var b [1]byte
	c.Read(offData, b[:])
	if b[0] != 0xab {
		t.Errorf("index 0xc0 read %#x, want RAM[0x40] = 0xab", b[0])
	}
	// Port 0x70 is write-only.
	c.Read(offIndex, b[:])
	if b[0] != 0xff {
		t.Errorf("port 0x70 read %#x, want 0xff", b[0])
	}
}

// TestLinuxRead replays mc146818_avoid_UIP + mc146818_get_time across a second
// boundary with a clock that advances on every access: the seconds re-check
// must see the change, and a retry must yield a consistent time.
func TestLinuxRead(t *testing.T) {
	now := time.Date(2024, 6, 30, 23, 59, 59, 999_000_000, time.UTC)
	c := New(func() time.Time {
		now = now.Add(100 * time.Microsecond)
		return now
	})
	for attempt := range 30 {
		sec := read(c, regSeconds)
		if read(c, regA)&aUIP != 0 {
			continue
		}
		if read(c, regSeconds) != sec {
			continue
		}
		got := fmt.Sprintf("%02x-%02x-%02x %02x:%02x:%02x",
			read(c, regYear), read(c, regMonth), read(c, regDayOfMonth),
			read(c, regHours), read(c, regMinutes), sec)
		if read(c, regA)&aUIP != 0 || read(c, regSeconds) != sec {
			continue
		}
		if want := "24-07-01 00:00:00"; got != want {
			t.Errorf("attempt %d read %s, want %s", attempt, got, want)
		}
		return
	}
	t.Fatal("never got a consistent read")
}

func TestBadAccesses(t *testing.T) {
	c := New(fixed(time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)))
	write(c, 0x20, 0x11)
	wide := []byte{1, 2}
	c.Read(offData, wide)
	if diff := cmp.Diff([]byte{0xff, 0xff}, wide); diff != "" {
		t.Errorf("2-byte read (-want +got):\n%s", diff)
	}
	c.Write(offData, []byte{0x22, 0x33})
	c.Write(5, []byte{0x44})
	if got := read(c, 0x20); got != 0x11 {
		t.Errorf("RAM changed by malformed writes: %#x", got)
	}
}

func FuzzRTC(f *testing.F) {
	f.Add([]byte{1, offIndex, regB, 1, offData, 0x06, 1, offIndex, regHours, 0, offData})
	f.Add([]byte{1, offIndex, 0xff, 1, offData, 0xff, 0, offData, 0, offIndex})
	f.Fuzz(func(t *testing.T, script []byte) {
		c := New(fixed(time.Date(2024, 2, 29, 23, 59, 59, 999_999_999, time.UTC)))
		for _, op := range devicestest.Ops(script, Size) {
			devicestest.Apply(c, op)
		}
	})
}
