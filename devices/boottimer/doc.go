// Package boottimer is the boot-timer pseudo-device: one MMIO page the guest
// writes to at milestones of its boot, so the host can time them without
// trusting the guest's clock.
//
// Protocol (guest side). The device sits at guest-physical 0xc0000000
// (layout.BootTimerAddr), one page, outside RAM. Guest init opens /dev/mem,
// maps the page at that offset and stores a mark:
//
//	fd := open("/dev/mem", O_RDWR|O_SYNC)
//	p := mmap(nil, 4096, PROT_WRITE, MAP_SHARED, fd, 0xc0000000)
//	*(*uint32)(p) = 2 // MarkAgentReady
//
// (busybox: devmem 0xc0000000 32 2). A 4- or 8-byte store at offset 0 records
// its little-endian value as the mark id; 1 (MarkInit) means the kernel reached
// init, 2 (MarkAgentReady) means the guest agent is serving, any other non-zero
// value is a custom mark. Firecracker's convention also works: a single-byte
// store of 123 at offset 0 records MarkInit, so guest images built for
// Firecracker time correctly here. Other single-byte and 2-byte stores record
// their value. A store of 0 records nothing, so clearing the page is harmless.
// Reads return zeros; stores elsewhere in the page are ignored and counted.
//
// Host side. Each mark is stamped with the host's monotonic time since the
// start instant the monitor gives (Config.Start, or SetStart just before the
// first vCPU runs), appended to Marks, passed to Config.OnMark and logged as
// "boot-timer: mark N at X.XXX ms". At most Config.MaxMarks are kept; later
// ones are dropped and counted, so a guest looping on the register cannot grow
// the monitor's memory.
package boottimer
