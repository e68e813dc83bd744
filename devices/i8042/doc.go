// Package i8042 emulates as much of the PC keyboard controller as a Linux guest
// needs: the reset line it pulses to reboot, the self-test and command-byte
// handshakes of the i8042 driver, and a keyboard that acknowledges commands.
//
// Ports: insert the Controller on the port-I/O bus at 0x60 over Size (5)
// ports. Offset 0 (port 0x60) is the data port, offset 4 (port 0x64) is status
// on read and command on write. Ports 0x61-0x63 read 0xff: 0x61 (the speaker /
// PIT gate port) is served by KVM's in-kernel PIT before an exit ever happens.
//
// Reset: command 0xFE (or any 0xF0-0xFF pulse with bit 0 clear, or output port
// bit 0 cleared through command 0xD1) asserts the CPU reset line. The monitor's
// Config.Reset runs the first time only: Linux's reboot=k path pulses ten times
// in a row and the VM is already on its way out after the first.
//
// What the guest sees:
//   - Status never reports the input buffer full, so kb_wait() and the driver's
//     write waits return at once; KEYLOCK reads "not inhibited" and the system
//     flag follows the command byte, as after a passed POST.
//   - 0xAA (controller self-test) answers 0x55, 0xAB (keyboard port test) 0x00,
//     0x20/0x60 read and write the command byte, 0xA7/0xA8/0xAD/0xAE toggle its
//     port-disable bits, 0xD0/0xD1 read and write the output port, 0xD2 echoes
//     a byte as keyboard data.
//   - There is no AUX (mouse) port. The AUX loopback 0xD3 echoes its byte
//     without the AUX-data status bit and the AUX test 0xA9 reports a stuck
//     clock line, so Linux concludes "no AUX port" in a few accesses instead of
//     waiting out its timeouts; i8042.noaux skips even that.
//   - Bytes written to the data port outside a command go to the keyboard, which
//     acknowledges them (0xFA), answers reset (0xFF) with ACK and a passed
//     self-test (0xAA), identify (0xF2) with an MF2 id and echo (0xEE) with
//     0xEE. That is enough for atkbd; i8042.dumbkbd skips it.
//   - Scancodes (only SendCtrlAltDel produces any) are set 2: the command byte
//     starts with translation off, so Linux drives the keyboard in raw mode.
//
// Interrupts: with Config.IRQ set (GSI 1) and the command byte's keyboard
// interrupt bit on, the line is triggered each time a byte becomes visible in
// the output buffer, the edge an ISA IRQ 1 would give.
//
// Accesses that are not one byte wide, unknown commands and bytes that do not
// fit the 16-byte output queue are ignored and counted.
package i8042
