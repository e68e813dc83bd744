// Package serial emulates the 16550A UART that Linux's 8250 driver finds on COM1
// (port 0x3f8, IRQ 4): the guest's console.
//
// What it owns: the eight UART registers (THR/RBR, IER, IIR/FCR, LCR with the
// divisor latch, MCR, LSR, MSR, SCR), the receive buffer filled by the host, and
// the interrupt condition derived from them.
//
// Behaviour the guest relies on:
//   - Transmission is instantaneous: LSR always reports THRE|TEMT, and every byte
//     written to THR reaches Config.Out before the write returns. There is no
//     output buffering in the device, so a monitor that dies loses nothing the
//     guest already wrote. The cost is one Out.Write per byte, paid on the vCPU
//     that did the OUT; that is small next to the VM exit the byte already cost,
//     but it means Out must not block for long: give it a file (the console log)
//     or a pipe that is always drained, never a peer that can stall. A failed
//     write loses the byte and is counted, it never stalls or kills the guest.
//   - Input arrives through Enqueue into one bounded buffer (Config.RXBuffer
//     bytes, default 4 KiB) which the guest sees as an endlessly deep RX FIFO:
//     LSR.DR is set while any byte is buffered. A hardware-sized 16-byte FIFO
//     would only add overrun timing that a host feeding at its own pace does not
//     need. Input beyond the buffer is dropped, counted, and reported to the guest
//     as an overrun (LSR.OE), as real hardware would.
//   - The probe in Linux's autoconfig() passes as a plain 16550A: IER keeps only
//     its four defined bits, loopback mode (MCR bit 4) routes MCR's outputs to
//     MSR's inputs (RTS->CTS, DTR->DSR, OUT1->RI, OUT2->DCD) and transmitted bytes
//     back into the receiver, IIR's top bits read 11 once FCR enables the FIFO,
//     and no register answers the EFR/16650/16750/XScale probes.
//   - Interrupts: IIR reports the highest-priority pending condition (line
//     status > received data > THR empty > modem status), each gated by its IER
//     bit. The device tracks the level of the 16550's INTR output and calls
//     Interrupt.Trigger on each rising edge, which is what an edge-triggered
//     ISA line (an irqfd on GSI 4) needs. The THR-empty condition is re-raised
//     after every THR write and whenever IER.ETBEI goes from 0 to 1 with THR
//     empty, which is what the 8250 driver's transmit path and its THRE-bug test
//     expect. Reading IIR while it reports THR empty clears that condition.
//
// Accesses that are not one byte wide are ignored (reads see 0xff) and counted.
//
// Locking: one mutex guards all state, so vCPU goroutines and the host goroutine
// calling Enqueue may race freely. Out.Write and Interrupt.Trigger are called
// with the mutex held (that keeps output in THR order and edges in step with
// the state); they must not call back into the Serial.
package serial
