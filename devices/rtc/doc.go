// Package rtc emulates the MC146818 CMOS real-time clock at ports 0x70/0x71,
// reduced to what a Linux guest reads: the wall-clock time at boot.
//
// Ports: insert the CMOS on the port-I/O bus at 0x70 over Size (2) ports.
// Offset 0 (port 0x70) selects a register (bit 7 is the NMI mask, kept but
// without effect) and reads 0xff; offset 1 (port 0x71) reads or writes it.
//
// Time: seconds, minutes, hours, day of week, day of month, month and year
// (and the century byte at 0x32) are computed from the injected clock (host
// UTC by default) on every read, in BCD or binary and 24- or 12-hour form as
// status register B says. The host clock is the authority: guest writes to the
// time registers are ignored, so a VM restored or forked later reads the right
// time without any fix-up.
//
// Update-in-progress: status A's UIP bit is set during the last 244 µs of each
// second, as on the real part, so a guest that follows the datasheet (wait for
// UIP clear, then read) never reads across a second boundary. Linux 6.1 also
// re-reads the seconds register to catch that case; both work.
//
// Not emulated: alarms, the periodic and update interrupts (no IRQ 8: status
// C reads 0) and the divider chain; status D always reports a valid battery.
// The other CMOS bytes are 128 bytes of plain RAM, zero at start.
package rtc
