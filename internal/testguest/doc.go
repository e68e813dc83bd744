// Package testguest builds tiny x86-64 guests for tests and benchmarks that run on
// a real /dev/kvm without a Linux kernel: a few hand-assembled instructions in long
// mode, at ring 3 (native speed even on PVM hosts) or ring 0, that report results
// through MMIO writes the test reads back.
//
// Guest-physical layout of a test guest (2 MiB of RAM by default):
//
//	0x1000  PML4, 0x2000 PDPT, 0x3000-0x6fff PDs: identity map of the first
//	        4 GiB with 2 MiB pages, user-accessible so ring-3 code can run
//	0x7000  GDT
//	0x10000 code
//	0x1ff000 stack top
//	0x1000_0000 MMIO window (not RAM): ResultAddr, DoneAddr
package testguest
