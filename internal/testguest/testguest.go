package testguest

import (
	"encoding/binary"
	"fmt"

	"github.com/boxd-dev/boxd/vmm/kvm"
)

// Addresses of a test guest.
const (
	pml4Addr   = 0x1000
	pdptAddr   = 0x2000
	pdAddr     = 0x3000 // four page directories: 0x3000-0x6fff
	gdtAddr    = 0x7000
	CodeAddr   = 0x10000
	StackTop   = 0x1ff000
	MMIOBase   = 0x1000_0000
	ResultAddr = MMIOBase       // 8-byte write: the computed value
	DoneAddr   = MMIOBase + 0x8 // any write: the guest is finished
	RAMSize    = 2 << 20
)

// Writer is guest memory as the builder needs it.
type Writer interface {
	WriteAt(p []byte, gpa int64) (int, error)
}

// SumLoop returns code that computes 1+2+...+n in RAX (64-bit), writes it to
// ResultAddr, writes DoneAddr, and then spins. n must be at least 1.
//
//	mov rcx, n            48 b9 imm64
//	xor eax, eax          31 c0
//	loop: add rax, rcx    48 01 c8
//	dec rcx               48 ff c9
//	jnz loop              75 f8
//	mov rbx, ResultAddr   48 bb imm64
//	mov [rbx], rax        48 89 03
//	mov [rbx+8], eax      89 43 08
//	spin: jmp spin        eb fe
func SumLoop(n uint64) []byte {
	code := []byte{0x48, 0xb9}
	code = binary.LittleEndian.AppendUint64(code, n)
	code = append(code, 0x31, 0xc0, 0x48, 0x01, 0xc8, 0x48, 0xff, 0xc9, 0x75, 0xf8, 0x48, 0xbb)
	code = binary.LittleEndian.AppendUint64(code, ResultAddr)
	code = append(code, 0x48, 0x89, 0x03, 0x89, 0x43, 0x08, 0xeb, 0xfe)
	return code
}

// Print returns code that writes msg byte by byte to I/O port port, then writes
// value (4 bytes) to MMIO address addr, then spins.
//
//	mov dx, port          66 ba imm16
//	mov al, c; out dx, al b0 c; ee      (per byte)
//	mov rbx, addr         48 bb imm64
//	mov dword [rbx], v    c7 03 imm32
//	spin: jmp spin        eb fe
func Print(port uint16, msg string, addr uint64, value uint32) []byte {
	code := []byte{0x66, 0xba, byte(port), byte(port >> 8)}
	for i := range len(msg) {
		code = append(code, 0xb0, msg[i], 0xee)
	}
	code = append(code, Store(addr, value)...)
	return append(code, Spin...)
}

// Store returns 64-bit code for "mov rbx, addr; mov dword [rbx], value".
func Store(addr uint64, value uint32) []byte {
	code := []byte{0x48, 0xbb}
	code = binary.LittleEndian.AppendUint64(code, addr)
	code = append(code, 0xc7, 0x03)
	return binary.LittleEndian.AppendUint32(code, value)
}

// Spin is "jmp $": the end of every test program.
var Spin = []byte{0xeb, 0xfe}

// Sum is the value SumLoop(n) reports.
func Sum(n uint64) uint64 { return n * (n + 1) / 2 }

// Load writes page tables, a GDT and code into guest memory.
func Load(mem Writer, code []byte) error {
	const (
		present = 1 << 0
		rw      = 1 << 1
		user    = 1 << 2
		huge    = 1 << 7
	)
	var page [4096]byte
	put := func(gpa int64, entries func(i int) uint64, n int) error {
		clear(page[:])
		for i := range n {
			binary.LittleEndian.PutUint64(page[8*i:], entries(i))
		}
		_, err := mem.WriteAt(page[:], gpa)
		return err
	}
	if err := put(pml4Addr, func(int) uint64 { return pdptAddr | present | rw | user }, 1); err != nil {
		return fmt.Errorf("testguest: %w", err)
	}
	if err := put(pdptAddr, func(i int) uint64 { return uint64(pdAddr+i*4096) | present | rw | user }, 4); err != nil {
		return fmt.Errorf("testguest: %w", err)
	}
	for d := range 4 {
		if err := put(int64(pdAddr+d*4096), func(i int) uint64 { return uint64(d*512+i)<<21 | present | rw | user | huge }, 512); err != nil {
			return fmt.Errorf("testguest: %w", err)
		}
	}
	gdt := make([]byte, 8*6)
	for i, d := range []uint64{
		0,
		0x00af9b000000ffff, // 0x08 ring-0 code64
		0x00cf93000000ffff, // 0x10 ring-0 data
		0x00affb000000ffff, // 0x18 ring-3 code64
		0x00cff3000000ffff, // 0x20 ring-3 data
		0x00008b0000000067, // 0x28 TSS (busy)
	} {
		binary.LittleEndian.PutUint64(gdt[8*i:], d)
	}
	if _, err := mem.WriteAt(gdt, gdtAddr); err != nil {
		return fmt.Errorf("testguest: %w", err)
	}
	if _, err := mem.WriteAt(code, CodeAddr); err != nil {
		return fmt.Errorf("testguest: %w", err)
	}
	return nil
}

// SetupVCPU puts a vCPU in 64-bit long mode at CodeAddr, at the given ring (0 or 3).
func SetupVCPU(c *kvm.VCPU, ring int) error {
	s, err := c.Sregs()
	if err != nil {
		return err
	}
	dpl := uint8(ring)
	codeSel, dataSel := uint16(0x08), uint16(0x10)
	if ring == 3 {
		codeSel, dataSel = 0x18|3, 0x20|3
	}
	code := kvm.Segment{Limit: 0xffffffff, Selector: codeSel, Type: 0xb, Present: 1, DPL: dpl, S: 1, L: 1, G: 1}
	data := kvm.Segment{Limit: 0xffffffff, Selector: dataSel, Type: 0x3, Present: 1, DPL: dpl, S: 1, DB: 1, G: 1}
	s.CS = code
	s.DS, s.ES, s.FS, s.GS, s.SS = data, data, data, data, data
	s.TR = kvm.Segment{Limit: 0x67, Selector: 0x28, Type: 0xb, Present: 1}
	s.GDT = kvm.DTable{Base: gdtAddr, Limit: 8*6 - 1}
	s.IDT = kvm.DTable{}
	s.CR0 = 1<<0 | 1<<4 | 1<<5 | 1<<31 // PE, ET, NE, PG
	s.CR3 = pml4Addr
	s.CR4 = 1 << 5        // PAE
	s.EFER = 1<<8 | 1<<10 // LME, LMA
	if err := c.SetSregs(s); err != nil {
		return err
	}
	// IOPL 3 lets ring-3 test code use IN/OUT, so port-I/O exits are testable
	// at native speed.
	return c.SetRegs(kvm.Regs{RIP: CodeAddr, RSP: StackTop, RFLAGS: 2 | 3<<12})
}
