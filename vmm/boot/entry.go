package boot

import (
	"encoding/binary"
	"fmt"
)

// Protocol says which entry convention Entry describes.
type Protocol int

const (
	// ProtocolPVH is the Xen/Linux PVH entry of an ELF vmlinux: 32-bit
	// protected mode, paging off, EBX = hvm_start_info address.
	ProtocolPVH Protocol = iota + 1
	// ProtocolLinux64 is the 64-bit entry of a bzImage (startup_64): long mode
	// on identity-mapped page tables, RSI = boot_params address.
	ProtocolLinux64
)

func (p Protocol) String() string {
	switch p {
	case ProtocolPVH:
		return "pvh"
	case ProtocolLinux64:
		return "linux64"
	}
	return fmt.Sprintf("protocol(%d)", int(p))
}

// Entry is the start state of vCPU 0 after Load, as plain data. The monitor
// copies it field by field onto its KVM structures; every field is an absolute
// value (nothing is to be OR-ed into the vCPU's reset state). Registers not
// listed (R8-R15, CR2, CR8, DR*) are zero; the APIC base, FPU, MSRs and LAPIC
// LINT0/LINT1 setup are the monitor's.
type Entry struct {
	Protocol Protocol
	Regs     Regs
	SRegs    SRegs

	// Kernel is the guest-physical range the kernel occupies or will
	// decompress/relocate into (bzImage: up to runtime start + init_size).
	Kernel Region
	// Initrd is where the initrd was loaded; zero Size when there is none.
	Initrd Region
}

// Regs are the general-purpose registers (field names as kvm_regs).
type Regs struct {
	RAX, RBX, RCX, RDX, RSI, RDI, RSP, RBP uint64
	RIP, RFLAGS                            uint64
}

// SRegs are the system registers (field names as kvm_sregs).
type SRegs struct {
	CS, DS, ES, FS, GS, SS Segment
	TR, LDT                Segment
	GDT, IDT               DTable
	CR0, CR3, CR4, EFER    uint64
}

// Segment is a segment register's hidden state, in the form of kvm_segment.
// Limit is byte-granular (already scaled by G), as KVM expects: a flat 4 GiB
// segment has Limit 0xffffffff and G 1.
type Segment struct {
	Base     uint64
	Limit    uint32
	Selector uint16
	Type     uint8
	Present  uint8
	DPL      uint8
	DB       uint8
	S        uint8
	L        uint8
	G        uint8
	AVL      uint8
	Unusable uint8
}

// DTable is a descriptor-table register (GDTR/IDTR). Limit is size-1.
type DTable struct {
	Base  uint64
	Limit uint16
}

// Control-register and EFER bits the entry states use.
const (
	CR0PE   = 1 << 0  // protected mode
	CR0ET   = 1 << 4  // extension type; hardwired to 1 on modern CPUs
	CR0PG   = 1 << 31 // paging
	CR4PAE  = 1 << 5
	EFERLME = 1 << 8  // long mode enable
	EFERLMA = 1 << 10 // long mode active

	rflagsReserved = 1 << 1 // bit 1 of RFLAGS always reads as 1
)

// GDT selectors. __BOOT_CS (0x10) and __BOOT_DS (0x18) are fixed by the Linux
// 64-bit boot protocol; the PVH entry only needs flat 32-bit segments, so it
// uses its own code descriptor in the otherwise unused slot 1.
const (
	SelectorCode32 = 0x08
	SelectorCode64 = 0x10
	SelectorData   = 0x18
	SelectorTSS    = 0x20
)

// gdt returns the descriptors written at GDTAddr, as GDT slots. The TSS is a
// 16-byte long-mode system descriptor (two slots); it is never used for task
// switching, it only gives TR a valid busy-TSS type, which VM entry checks.
func gdt() [GDTSize / 8]uint64 {
	return [GDTSize / 8]uint64{
		0,                     // null
		0x00cf_9b00_0000_ffff, // 0x08 code32: base 0, limit 4 GiB, G, D, P, exec/read, accessed
		0x00af_9b00_0000_ffff, // 0x10 code64: as code32 but L=1, D=0
		0x00cf_9300_0000_ffff, // 0x18 data: base 0, limit 4 GiB, G, B, P, read/write, accessed
		0x0000_8b00_0000_0067, // 0x20 TSS: base 0, limit 0x67, P, busy 64-bit TSS
		0,                     // TSS high half: base bits 63:32
	}
}

// segmentFromDescriptor decodes a GDT descriptor into the hidden segment
// state, so the registers we hand out always agree with the table in memory.
func segmentFromDescriptor(d uint64, selector uint16) Segment {
	limit := uint32(d&0xffff) | uint32((d>>48)&0xf)<<16
	g := uint8((d >> 55) & 1)
	if g == 1 {
		limit = limit<<12 | 0xfff
	}
	return Segment{
		Base:     (d >> 16 & 0xff_ffff) | (d>>56&0xff)<<24,
		Limit:    limit,
		Selector: selector,
		Type:     uint8(d >> 40 & 0xf),
		S:        uint8(d >> 44 & 1),
		DPL:      uint8(d >> 45 & 3),
		Present:  uint8(d >> 47 & 1),
		AVL:      uint8(d >> 52 & 1),
		L:        uint8(d >> 53 & 1),
		DB:       uint8(d >> 54 & 1),
		G:        g,
	}
}

// writeGDT writes the GDT and an all-zero IDT (every vector faults, so an
// early exception ends in a triple fault the monitor sees, not a wild jump).
func writeGDT(mem Memory) error {
	b := make([]byte, GDTSize)
	for i, d := range gdt() {
		binary.LittleEndian.PutUint64(b[i*8:], d)
	}
	if err := writeAt(mem, GDTAddr, b); err != nil {
		return fmt.Errorf("gdt: %w", err)
	}
	if err := writeAt(mem, IDTAddr, make([]byte, IDTSize)); err != nil {
		return fmt.Errorf("idt: %w", err)
	}
	return nil
}

// baseSRegs returns the segment state shared by both entries: data segments
// flat, TR on the TSS descriptor, LDT as KVM's reset value (usable on both
// VMX and SVM), GDTR/IDTR on our tables.
func baseSRegs(code uint16) SRegs {
	t := gdt()
	data := segmentFromDescriptor(t[SelectorData/8], SelectorData)
	return SRegs{
		CS: segmentFromDescriptor(t[code/8], code),
		DS: data, ES: data, FS: data, GS: data, SS: data,
		TR:  segmentFromDescriptor(t[SelectorTSS/8], SelectorTSS),
		LDT: Segment{Limit: 0xffff, Type: 2, Present: 1},
		GDT: DTable{Base: GDTAddr, Limit: GDTSize - 1},
		IDT: DTable{Base: IDTAddr, Limit: IDTSize - 1},
	}
}

// pvhState is the PVH entry: 32-bit protected mode, paging off, flat
// segments, EBX = hvm_start_info.
func pvhState(entry uint64) (Regs, SRegs) {
	s := baseSRegs(SelectorCode32)
	s.CR0 = CR0PE | CR0ET
	return Regs{RIP: entry, RBX: PVHInfoAddr, RFLAGS: rflagsReserved}, s
}

// longModeState is the 64-bit Linux entry: long mode on the identity map,
// RSI = boot_params, a small stack below the page tables.
func longModeState(entry uint64) (Regs, SRegs) {
	s := baseSRegs(SelectorCode64)
	s.CR0 = CR0PE | CR0ET | CR0PG
	s.CR3 = PML4Addr
	s.CR4 = CR4PAE
	s.EFER = EFERLME | EFERLMA
	return Regs{
		RIP:    entry,
		RSI:    ZeroPageAddr,
		RSP:    BootStackTop,
		RBP:    BootStackTop,
		RFLAGS: rflagsReserved,
	}, s
}

// Page-table entry bits.
const (
	ptePresent  = 1 << 0
	pteWritable = 1 << 1
	pteHuge     = 1 << 7 // PS: 2 MiB page in a page directory
)

// writePageTables identity-maps 0..4 GiB with 2 MiB pages: one PML4 entry,
// PDCount PDPT entries, PDCount full page directories. 4 GiB covers the
// kernel, boot_params, command line and the MMIO gap, which is all the
// decompressor touches before it builds its own tables.
func writePageTables(mem Memory) error {
	page := make([]byte, 4096)
	binary.LittleEndian.PutUint64(page, PDPTAddr|ptePresent|pteWritable)
	if err := writeAt(mem, PML4Addr, page); err != nil {
		return fmt.Errorf("pml4: %w", err)
	}
	clear(page)
	for i := range uint64(PDCount) {
		binary.LittleEndian.PutUint64(page[i*8:], (PDAddr+i*4096)|ptePresent|pteWritable)
	}
	if err := writeAt(mem, PDPTAddr, page); err != nil {
		return fmt.Errorf("pdpt: %w", err)
	}
	for d := range uint64(PDCount) {
		for i := range uint64(512) {
			phys := (d*512 + i) << 21
			binary.LittleEndian.PutUint64(page[i*8:], phys|ptePresent|pteWritable|pteHuge)
		}
		if err := writeAt(mem, PDAddr+d*4096, page); err != nil {
			return fmt.Errorf("page directory %d: %w", d, err)
		}
	}
	return nil
}
