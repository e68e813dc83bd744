package boot

// Every guest-physical address the monitor uses is defined here, in one place, so
// that overlaps can be seen (and are checked by TestLayoutNoOverlap).
//
//	0x0000_0000  real-mode IVT / BDA (left zero)
//	0x0000_0500  GDT (6 slots: 5 descriptors, 64-bit TSS) GDTAddr
//	0x0000_0540  IDT (empty, every vector faults)       IDTAddr
//	0x0000_6000  PVH hvm_start_info                     PVHInfoAddr
//	0x0000_6040  PVH module list (initrd)               PVHModlistAddr
//	0x0000_6100  PVH memory map                         PVHMemmapAddr
//	0x0000_7000  Linux zero page (boot_params)          ZeroPageAddr
//	0x0000_8ff0  initial stack pointer                  BootStackTop
//	0x0000_9000  PML4                                   PML4Addr
//	0x0000_a000  PDPT                                   PDPTAddr
//	0x0000_b000  4 page directories (identity 0-4 GiB)  PDAddr
//	0x0002_0000  kernel command line                    CmdlineAddr
//	0x0009_e000  MP configuration table ("PCMP")        MPConfigAddr
//	0x0009_fc00  MP floating pointer ("_MP_")           MPTableAddr
//	0x000a_0000  legacy VGA / BIOS hole (not RAM)
//	0x0010_0000  kernel load address (bzImage)          HighMemStart
//	...          initrd, placed at the top of low RAM
//	0xc000_0000  MMIO gap start                         MMIOGapStart
//	0xc000_0000  boot-timer device (one page)           BootTimerAddr
//	0xc000_1000  power register (poweroff/reboot)       PowerAddr
//	0xd000_0000  virtio-mmio devices, 4 KiB apart       VirtioMMIOBase
//	0xfec0_0000  IOAPIC
//	0xfee0_0000  local APIC
//	0xfffb_c000  KVM identity map page, then TSS (VMX) KVMIdentityMapAddr
//	0x1_0000_0000 RAM above the gap, when guest RAM > MMIOGapStart
const (
	GDTAddr        = 0x500
	GDTSize        = 48 // null, code32, code64, data, 16-byte TSS descriptor
	IDTAddr        = 0x540
	IDTSize        = 16
	PVHInfoAddr    = 0x6000
	PVHModlistAddr = 0x6040
	PVHMemmapAddr  = 0x6100
	PVHMemmapMax   = 16 // entries of 24 bytes; we write at most 4
	ZeroPageAddr   = 0x7000
	ZeroPageSize   = 0x1000
	BootStackTop   = 0x8ff0 // the stack grows down into 0x8000-0x8fef
	PML4Addr       = 0x9000
	PDPTAddr       = 0xa000
	PDAddr         = 0xb000 // four consecutive pages: 0xb000-0xefff
	PDCount        = 4
	CmdlineAddr    = 0x20000
	CmdlineMax     = 4096
	// The MP floating pointer must sit in the last KiB of base memory, where
	// Linux scans for it (639 KiB..640 KiB). The configuration table it points
	// to may be anywhere; it gets the 7 KiB below so that 64+ vCPUs fit (the
	// last KiB alone holds only ~37 processor entries).
	MPConfigAddr = 0x9e000
	MPTableAddr  = 0x9fc00
	MPFloatSize  = 16
	EBDAStart    = 0x9e000 // e820: RAM below, reserved from here to HighMemStart
	LowRAMEnd    = 0xa0000 // end of conventional memory; 0xa0000-0xfffff is reserved
	HighMemStart = 0x100000

	// MMIOGapStart..MMIOGapEnd is never RAM; guest RAM beyond MMIOGapStart is
	// placed from MMIOGapEnd (4 GiB) up.
	MMIOGapStart = 0xc000_0000
	MMIOGapEnd   = 0x1_0000_0000

	BootTimerAddr = 0xc000_0000
	BootTimerSize = 0x1000

	// PowerAddr is a register the guest init writes to power off or reboot: a
	// machine without ACPI has no other way to say "power off" (Linux just halts).
	PowerAddr = 0xc000_1000
	PowerSize = 0x1000

	VirtioMMIOBase   = 0xd000_0000
	VirtioMMIOStride = 0x1000
	VirtioMMIOMax    = 16 // at most this many virtio-mmio devices (GSIs 5..20)
	VirtioIRQBase    = 5  // GSI of the first virtio-mmio device

	// Intel VMX needs a three-page TSS region and a one-page identity map
	// somewhere in guest-physical space that is not RAM (ignored on AMD SVM).
	KVMIdentityMapAddr = 0xfffb_c000
	KVMTSSAddr         = 0xfffb_d000

	IOAPICAddr = 0xfec0_0000
	LAPICAddr  = 0xfee0_0000

	// Legacy port I/O.
	COM1Port  = 0x3f8
	COM1IRQ   = 4
	I8042Data = 0x60
	I8042Cmd  = 0x64
	PortDebug = 0x80 // POST code port, ignored
	RTCPort   = 0x70 // CMOS index, then data at 0x71
)

// Region is a half-open guest-physical range [Start, Start+Size).
type Region struct {
	Start, Size uint64
}

// End returns the first address after the region.
func (r Region) End() uint64 { return r.Start + r.Size }

// RAMRegions returns where size bytes of guest RAM live: [0, min(size,
// MMIOGapStart)) and, when size exceeds MMIOGapStart, the rest from MMIOGapEnd
// (4 GiB) up. The monitor maps memory slots from it and the loaders build the
// e820/PVH memory maps from it, so the two cannot disagree.
func RAMRegions(size uint64) []Region {
	if size <= MMIOGapStart {
		return []Region{{Start: 0, Size: size}}
	}
	return []Region{
		{Start: 0, Size: MMIOGapStart},
		{Start: MMIOGapEnd, Size: size - MMIOGapStart},
	}
}
