// Package devices holds the monitor's emulated platform devices (serial console,
// i8042, boot timer) and the bus that routes port-I/O and MMIO exits to them.
//
// Devices never touch KVM: they see an access as (offset, bytes) relative to their
// own base address and raise interrupts through a small interface, so they are
// tested without /dev/kvm. The devices themselves live in subpackages (serial,
// i8042, rtc, boottimer); this package owns the interfaces they implement, the
// Bus, and Ignore for ports that must answer but need no behaviour.
//
// Invariants:
//   - A Bus never hands a device an access that is not wholly inside the range the
//     device was inserted over, nor one whose length is not 1, 2, 4 or 8 bytes;
//     anything else is a miss the monitor counts (reads of a miss see all-ones, as
//     on a floating bus).
//   - Bus lookups take no lock and allocate nothing: vCPU goroutines call them on
//     every exit. Devices do their own locking.
//   - Every device tolerates any byte sequence the guest sends: malformed accesses
//     are ignored (and counted where it helps debugging), never a panic.
package devices
