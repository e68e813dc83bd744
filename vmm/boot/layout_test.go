package boot

import (
	"sort"
	"testing"

	"github.com/google/go-cmp/cmp"
)

type namedRegion struct {
	name       string
	start, end uint64
}

// bootArea lists every structure the loaders write below 1 MiB, with its
// largest possible extent.
func bootArea() []namedRegion {
	return []namedRegion{
		{"gdt", GDTAddr, GDTAddr + GDTSize},
		{"idt", IDTAddr, IDTAddr + IDTSize},
		{"pvh start_info", PVHInfoAddr, PVHInfoAddr + pvhInfoSize},
		{"pvh modlist", PVHModlistAddr, PVHModlistAddr + pvhModlistSize},
		{"pvh memmap", PVHMemmapAddr, PVHMemmapAddr + PVHMemmapMax*pvhMemmapEntSize},
		{"zero page", ZeroPageAddr, ZeroPageAddr + ZeroPageSize},
		{"boot stack", ZeroPageAddr + ZeroPageSize, BootStackTop},
		{"pml4", PML4Addr, PML4Addr + 0x1000},
		{"pdpt", PDPTAddr, PDPTAddr + 0x1000},
		{"page directories", PDAddr, PDAddr + PDCount*0x1000},
		{"cmdline", CmdlineAddr, CmdlineAddr + CmdlineMax},
		{"mp config table", MPConfigAddr, MPConfigAddr + mpFixedSize + MaxCPUs*mpProcEntrySize},
		{"mp floating pointer", MPTableAddr, MPTableAddr + MPFloatSize},
	}
}

func checkDisjoint(t *testing.T, rs []namedRegion) {
	t.Helper()
	sort.Slice(rs, func(i, j int) bool { return rs[i].start < rs[j].start })
	for i, r := range rs {
		if r.end <= r.start {
			t.Errorf("%s: empty or inverted range [%#x, %#x)", r.name, r.start, r.end)
		}
		if i > 0 && rs[i-1].end > r.start {
			t.Errorf("%s [%#x, %#x) overlaps %s [%#x, %#x)", rs[i-1].name, rs[i-1].start, rs[i-1].end, r.name, r.start, r.end)
		}
	}
}

func TestLayoutNoOverlap(t *testing.T) {
	low := bootArea()
	checkDisjoint(t, low)
	for _, r := range low {
		// 0..0x500 is the real-mode IVT and BDA, left zero for Linux's
		// BIOS-area probes.
		if r.start < 0x500 || r.end > LowRAMEnd {
			t.Errorf("%s [%#x, %#x) is outside [0x500, LowRAMEnd)", r.name, r.start, r.end)
		}
	}
	// Linux scans only 639 KiB..640 KiB (and the BIOS ROM) for "_MP_".
	if MPTableAddr < 639*1024 || MPTableAddr+MPFloatSize > 640*1024 {
		t.Errorf("MP floating pointer at %#x is outside the last KiB of base memory", MPTableAddr)
	}
	// Everything the loaders write between 0 and EBDAStart is in e820 RAM;
	// the MP tables must be in the reserved part so the kernel keeps them.
	for _, r := range low {
		isMP := r.name == "mp config table" || r.name == "mp floating pointer"
		if isMP && r.start < EBDAStart {
			t.Errorf("%s at %#x is below EBDAStart %#x, in e820 RAM", r.name, r.start, EBDAStart)
		}
		if !isMP && r.end > EBDAStart {
			t.Errorf("%s [%#x, %#x) reaches into the reserved area at %#x", r.name, r.start, r.end, EBDAStart)
		}
	}
	if BootStackTop%16 != 0 {
		t.Errorf("BootStackTop %#x is not 16-byte aligned", BootStackTop)
	}
	for _, a := range []uint64{PML4Addr, PDPTAddr, PDAddr, ZeroPageAddr} {
		if a%0x1000 != 0 {
			t.Errorf("%#x is not page aligned", a)
		}
	}

	gap := []namedRegion{
		{"boot timer", BootTimerAddr, BootTimerAddr + BootTimerSize},
		{"power register", PowerAddr, PowerAddr + PowerSize},
		{"kvm identity map", KVMIdentityMapAddr, KVMIdentityMapAddr + 0x1000},
		{"kvm tss", KVMTSSAddr, KVMTSSAddr + 0x3000},
		{"virtio-mmio", VirtioMMIOBase, VirtioMMIOBase + VirtioMMIOMax*VirtioMMIOStride},
		{"ioapic", IOAPICAddr, IOAPICAddr + 0x1000},
		{"lapic", LAPICAddr, LAPICAddr + 0x1000},
	}
	checkDisjoint(t, gap)
	for _, r := range gap {
		if r.start < MMIOGapStart || r.end > MMIOGapEnd {
			t.Errorf("%s [%#x, %#x) is outside the MMIO gap", r.name, r.start, r.end)
		}
	}
	if VirtioIRQBase+VirtioMMIOMax > ioapicPins {
		t.Errorf("virtio GSIs %d..%d exceed the %d IOAPIC pins", VirtioIRQBase, VirtioIRQBase+VirtioMMIOMax-1, ioapicPins)
	}
	if COM1IRQ >= VirtioIRQBase && COM1IRQ < VirtioIRQBase+VirtioMMIOMax {
		t.Errorf("COM1 IRQ %d collides with the virtio GSIs", COM1IRQ)
	}
}

func TestRAMRegions(t *testing.T) {
	const gib = 1 << 30
	tests := []struct {
		size uint64
		want []Region
	}{
		{128 << 20, []Region{{0, 128 << 20}}},
		{3 * gib, []Region{{0, 3 * gib}}},
		{4 * gib, []Region{{0, 3 * gib}, {4 * gib, gib}}},
		{8 * gib, []Region{{0, 3 * gib}, {4 * gib, 5 * gib}}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, RAMRegions(tt.size)); diff != "" {
			t.Errorf("RAMRegions(%#x) (-want +got):\n%s", tt.size, diff)
		}
	}
}

func TestInRAM(t *testing.T) {
	const gib = 1 << 30
	tests := []struct {
		size, gpa, n uint64
		want         bool
	}{
		{128 << 20, 0, 128 << 20, true},
		{128 << 20, 0, 128<<20 + 1, false},
		{128 << 20, 128<<20 - 1, 1, true},
		{128 << 20, 128 << 20, 0, true}, // empty range at the end
		{128 << 20, 128 << 20, 1, false},
		{8 * gib, 3*gib - 1, 2, false}, // straddles the gap start
		{8 * gib, 3 * gib, 1, false},
		{8 * gib, 4 * gib, 5 * gib, true},
		{8 * gib, 4 * gib, 5*gib + 1, false},
		{8 * gib, ^uint64(0), 2, false}, // would wrap
		{8 * gib, 1, ^uint64(0), false},
	}
	for _, tt := range tests {
		if got := inRAM(tt.size, tt.gpa, tt.n); got != tt.want {
			t.Errorf("inRAM(%#x, %#x, %#x) = %v, want %v", tt.size, tt.gpa, tt.n, got, tt.want)
		}
	}
}
