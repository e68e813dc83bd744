package boot

import (
	"bytes"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func loadSynthetic(t *testing.T, img []byte, ram uint64) (*fakeMem, *Entry) {
	t.Helper()
	mem := newFakeMem(ram)
	e, err := Load(mem, Config{Kernel: bytes.NewReader(img), KernelSize: int64(len(img)), CPUs: 1})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return mem, e
}

func TestGDTInMemory(t *testing.T) {
	mem, _ := loadSynthetic(t, defaultBzSpec().build(), 128<<20)
	var got []uint64
	for i := range uint64(GDTSize / 8) {
		got = append(got, mem.u64(t, GDTAddr+8*i))
	}
	want := []uint64{
		0,
		0x00cf9b000000ffff, // 0x08 code32 (PVH)
		0x00af9b000000ffff, // 0x10 __BOOT_CS, L=1
		0x00cf93000000ffff, // 0x18 __BOOT_DS
		0x00008b0000000067, // 0x20 TSS, busy
		0,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GDT (-want +got):\n%s", diff)
	}
	if idt := mem.bytes(t, IDTAddr, IDTSize); !allZero(idt) {
		t.Errorf("IDT = %x, want zeros", idt)
	}
}

var (
	flatData = Segment{Limit: 0xffffffff, Selector: 0x18, Type: 3, Present: 1, DB: 1, S: 1, G: 1}
	tss      = Segment{Limit: 0x67, Selector: 0x20, Type: 11, Present: 1}
	ldt      = Segment{Limit: 0xffff, Type: 2, Present: 1}
)

func TestLongModeEntry(t *testing.T) {
	_, e := loadSynthetic(t, defaultBzSpec().build(), 128<<20)
	want := Entry{
		Protocol: ProtocolLinux64,
		Regs:     Regs{RIP: 0x100200, RSI: ZeroPageAddr, RSP: BootStackTop, RBP: BootStackTop, RFLAGS: 2},
		SRegs: SRegs{
			CS: Segment{Limit: 0xffffffff, Selector: 0x10, Type: 11, Present: 1, S: 1, L: 1, G: 1},
			DS: flatData, ES: flatData, FS: flatData, GS: flatData, SS: flatData,
			TR: tss, LDT: ldt,
			GDT:  DTable{Base: GDTAddr, Limit: GDTSize - 1},
			IDT:  DTable{Base: IDTAddr, Limit: IDTSize - 1},
			CR0:  0x80000011,
			CR3:  PML4Addr,
			CR4:  0x20,
			EFER: 0x500,
		},
		// 1 MiB up to pref_address (16 MiB) + init_size (8 MiB).
		Kernel: Region{Start: 0x100000, Size: 0x1800000 - 0x100000},
	}
	if diff := cmp.Diff(want, *e); diff != "" {
		t.Errorf("Entry (-want +got):\n%s", diff)
	}
}

func TestPVHEntry(t *testing.T) {
	_, e := loadSynthetic(t, defaultELFSpec().build(), 128<<20)
	want := Entry{
		Protocol: ProtocolPVH,
		Regs:     Regs{RIP: 0x1000100, RBX: PVHInfoAddr, RFLAGS: 2},
		SRegs: SRegs{
			CS: Segment{Limit: 0xffffffff, Selector: 0x08, Type: 11, Present: 1, DB: 1, S: 1, G: 1},
			DS: flatData, ES: flatData, FS: flatData, GS: flatData, SS: flatData,
			TR: tss, LDT: ldt,
			GDT: DTable{Base: GDTAddr, Limit: GDTSize - 1},
			IDT: DTable{Base: IDTAddr, Limit: IDTSize - 1},
			CR0: 0x11,
		},
		Kernel: Region{Start: 0x1000000, Size: 0x203000},
	}
	if diff := cmp.Diff(want, *e); diff != "" {
		t.Errorf("Entry (-want +got):\n%s", diff)
	}
}

func TestPageTables(t *testing.T) {
	mem := newFakeMem(128 << 20)
	mem.dirty(PML4Addr, PDAddr+PDCount*0x1000-PML4Addr)
	if err := writePageTables(mem); err != nil {
		t.Fatal(err)
	}
	check := func(name string, addr, want uint64) {
		t.Helper()
		if got := mem.u64(t, addr); got != want {
			t.Errorf("%s at %#x = %#x, want %#x", name, addr, got, want)
		}
	}
	check("PML4[0]", PML4Addr, 0xa003)
	for i := uint64(1); i < 512; i++ {
		check("PML4[i]", PML4Addr+8*i, 0)
	}
	for i := range uint64(512) {
		want := uint64(0)
		if i < 4 {
			want = 0xb003 + i*0x1000
		}
		check("PDPT[i]", PDPTAddr+8*i, want)
	}
	// 2048 2 MiB pages: entry n maps n*2 MiB, present|writable|PS.
	for n := range uint64(2048) {
		check("PD entry", PDAddr+8*n, n<<21|0x83)
	}
	check("last PD entry maps 4 GiB - 2 MiB", PDAddr+8*2047, 0xffe00083)
}

func TestSegmentFromDescriptor(t *testing.T) {
	tests := []struct {
		desc uint64
		want Segment
	}{
		// Byte-granular limit, base spread over three fields, DPL 3.
		{0x12_40_f3_345678_abcd, Segment{Base: 0x12345678, Limit: 0xabcd, Type: 3, S: 1, DPL: 3, Present: 1, DB: 1}},
		{0x00_cf_9b_000000_ffff, Segment{Limit: 0xffffffff, Type: 11, S: 1, Present: 1, DB: 1, G: 1}},
		{0x00_1f_9b_000000_ffff, Segment{Limit: 0xfffff, Type: 11, S: 1, Present: 1, AVL: 1}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, segmentFromDescriptor(tt.desc, 0)); diff != "" {
			t.Errorf("segmentFromDescriptor(%#x) (-want +got):\n%s", tt.desc, diff)
		}
	}
}
