package boot

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/boxd-dev/boxd/kernel"
	"github.com/google/go-cmp/cmp"
)

// startInfo reads hvm_start_info and its module list back from guest memory.
type startInfo struct {
	Magic, Version, Flags, NrModules uint64
	ModlistPaddr, CmdlinePaddr, Rsdp uint64
	MemmapPaddr, MemmapEntries       uint64
	Modules                          []Region
}

func readStartInfo(t *testing.T, mem *fakeMem) startInfo {
	t.Helper()
	a := uint64(PVHInfoAddr)
	s := startInfo{
		Magic: mem.u32(t, a), Version: mem.u32(t, a+4), Flags: mem.u32(t, a+8), NrModules: mem.u32(t, a+0xc),
		ModlistPaddr: mem.u64(t, a+0x10), CmdlinePaddr: mem.u64(t, a+0x18), Rsdp: mem.u64(t, a+0x20),
		MemmapPaddr: mem.u64(t, a+0x28), MemmapEntries: mem.u32(t, a+0x30),
	}
	for i := range s.NrModules {
		m := s.ModlistPaddr + 32*i
		s.Modules = append(s.Modules, Region{mem.u64(t, m), mem.u64(t, m+8)})
		if rest := mem.bytes(t, m+16, 16); !allZero(rest) {
			t.Errorf("module %d cmdline/reserved = %x, want zero", i, rest)
		}
	}
	return s
}

func TestELFLoad(t *testing.T) {
	spec := defaultELFSpec()
	img := spec.build()
	initrd := bytes.Repeat([]byte("rd"), 3000)
	mem := newFakeMem(256 * mib)
	mem.dirty(0, 2*mib)
	mem.dirty(16*mib, 3*mib) // the segments' bss must be zeroed, not assumed zero
	e, err := Load(mem, Config{
		Kernel: bytes.NewReader(img), KernelSize: int64(len(img)),
		Initrd: bytes.NewReader(initrd), InitrdSize: int64(len(initrd)),
		Cmdline: "console=hvc0", CPUs: 4,
	})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	for _, sg := range spec.segs {
		if got := mem.bytes(t, sg.paddr, len(sg.data)); !bytes.Equal(got, sg.data) {
			t.Errorf("segment at %#x not loaded", sg.paddr)
		}
		if bss := mem.bytes(t, sg.paddr+uint64(len(sg.data)), int(sg.memsz)-len(sg.data)); !allZero(bss) {
			t.Errorf("bss of segment at %#x not zeroed", sg.paddr)
		}
	}
	wantInitrd := Region{Start: (256*mib - 6000) &^ 0xfff, Size: 6000}
	want := startInfo{
		Magic: 0x336ec578, Version: 1, NrModules: 1,
		ModlistPaddr: PVHModlistAddr, CmdlinePaddr: CmdlineAddr,
		MemmapPaddr: PVHMemmapAddr, MemmapEntries: 3,
		Modules: []Region{wantInitrd},
	}
	if diff := cmp.Diff(want, readStartInfo(t, mem)); diff != "" {
		t.Errorf("hvm_start_info (-want +got):\n%s", diff)
	}
	if e.Initrd != wantInitrd {
		t.Errorf("Entry.Initrd = %+v, want %+v", e.Initrd, wantInitrd)
	}
	if got := mem.bytes(t, wantInitrd.Start, len(initrd)); !bytes.Equal(got, initrd) {
		t.Errorf("initrd not loaded")
	}
	if got := string(mem.bytes(t, CmdlineAddr, 13)); got != "console=hvc0\x00" {
		t.Errorf("cmdline %q", got)
	}
	if n := len(parseMP(t, mem).APICIDs); n != 4 {
		t.Errorf("MP table lists %d CPUs, want 4", n)
	}
}

func TestELFNoInitrd(t *testing.T) {
	mem, _ := loadSynthetic(t, defaultELFSpec().build(), 128*mib)
	s := readStartInfo(t, mem)
	if s.NrModules != 0 || s.ModlistPaddr != 0 {
		t.Errorf("no initrd but %d modules at %#x", s.NrModules, s.ModlistPaddr)
	}
}

func TestPVHMemmap(t *testing.T) {
	for _, tt := range memoryMapTests {
		t.Run(tt.name, func(t *testing.T) {
			mem, _ := loadSynthetic(t, defaultELFSpec().build(), tt.ram)
			if diff := cmp.Diff(tt.want, readPVHMemmap(t, mem)); diff != "" {
				t.Errorf("PVH memmap (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPVHNoteForms(t *testing.T) {
	tests := []struct {
		name  string
		spec  func(*elfSpec)
		entry uint64
	}{
		{"4-byte descriptor", func(s *elfSpec) {}, 0x1000100},
		{"8-byte descriptor", func(s *elfSpec) { s.notes = pvhNote(0x1000200, 8) }, 0x1000200},
		{"section only", func(s *elfSpec) { s.notes = nil; s.noteSect = pvhNote(0x1000300, 4) }, 0x1000300},
		{"after other Xen notes", func(s *elfSpec) {
			s.notes = append(elfNote("Xen", 6, 0, 16), pvhNote(0x1000400, 4)...)
		}, 0x1000400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := defaultELFSpec()
			tt.spec(&spec)
			_, e := loadSynthetic(t, spec.build(), 128*mib)
			if e.Regs.RIP != tt.entry {
				t.Errorf("RIP = %#x, want %#x", e.Regs.RIP, tt.entry)
			}
		})
	}
}

func TestELFRejects(t *testing.T) {
	tests := []struct {
		name string
		spec func(*elfSpec)
		img  func([]byte) []byte
		ram  uint64
		want error
	}{
		{name: "no PVH note", spec: func(s *elfSpec) { s.notes = elfNote("GNU", 3, 1, 8) }, want: ErrNoPVHEntry},
		{name: "no notes at all", spec: func(s *elfSpec) { s.notes = nil }, want: ErrNoPVHEntry},
		{name: "note type 18 of another owner", spec: func(s *elfSpec) { s.notes = elfNote("Xenx", 18, 0x1000100, 4) }, want: ErrNoPVHEntry},
		{name: "odd descriptor size", spec: func(s *elfSpec) { s.notes = elfNote("Xen", 18, 0x1000100, 2) }, want: ErrBadImage},
		{name: "note runs past segment", spec: func(s *elfSpec) { s.notes = pvhNote(0x1000100, 4)[:18] }, want: ErrBadImage},
		{name: "entry outside kernel", spec: func(s *elfSpec) { s.notes = pvhNote(0x2000000, 4) }, want: ErrBadImage},
		{name: "32-bit ELF", spec: func(s *elfSpec) { s.class = 1 }, want: ErrUnsupported},
		{name: "aarch64", spec: func(s *elfSpec) { s.machine = 183 }, want: ErrUnsupported},
		{name: "shared object", spec: func(s *elfSpec) { s.typ = 3 }, want: ErrUnsupported},
		{name: "truncated header", img: func(b []byte) []byte { return b[:40] }, want: ErrBadImage},
		{name: "truncated segment data", img: func(b []byte) []byte { return b[:300] }, want: ErrBadImage},
		{name: "program headers past EOF", img: func(b []byte) []byte { return b[:64+3*56-1] }, want: ErrBadImage},
		{name: "too many program headers", spec: func(s *elfSpec) { s.phnumHack = 1000 }, want: ErrBadImage},
		{name: "no PT_LOAD", spec: func(s *elfSpec) { s.segs = nil }, want: ErrBadImage},
		{name: "segment in low boot area", spec: func(s *elfSpec) { s.segs[0].paddr = 0x8000 }, want: ErrNoSpace},
		{name: "segment just below 1 MiB", spec: func(s *elfSpec) { s.segs[0].paddr = mib - 16 }, want: ErrNoSpace},
		{name: "segment outside RAM", spec: func(s *elfSpec) { s.segs[1].paddr = 0x10000000 }, want: ErrNoSpace},
		{name: "segment in MMIO gap", spec: func(s *elfSpec) { s.segs[1].paddr = 0xd0000000 }, ram: 8 << 30, want: ErrNoSpace},
		{name: "segment straddles gap", spec: func(s *elfSpec) { s.segs[1].paddr = 0xc0000000 - 0x1000 }, ram: 8 << 30, want: ErrNoSpace},
		{name: "huge p_memsz", spec: func(s *elfSpec) { s.segs[1].memsz = 1 << 62 }, want: ErrNoSpace},
		{name: "p_memsz wraps", spec: func(s *elfSpec) { s.segs[1].memsz = ^uint64(0) - 0x1000 }, want: ErrNoSpace},
		{name: "filesz over memsz", spec: func(s *elfSpec) { s.segs[1].memsz = 4 }, want: ErrBadImage},
		{name: "overlapping segments", spec: func(s *elfSpec) { s.segs[1].paddr = 0x1001000 }, want: ErrBadImage},
		{name: "initrd over kernel", spec: func(s *elfSpec) { s.segs[1].paddr = 128*mib - 0x4000 }, want: ErrNoSpace},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := defaultELFSpec()
			if tt.spec != nil {
				tt.spec(&spec)
			}
			img := spec.build()
			if tt.img != nil {
				img = tt.img(img)
			}
			ram := tt.ram
			if ram == 0 {
				ram = 128 * mib
			}
			initrd := make([]byte, 64<<10)
			_, err := Load(newFakeMem(ram), Config{
				Kernel: bytes.NewReader(img), KernelSize: int64(len(img)),
				Initrd: bytes.NewReader(initrd), InitrdSize: int64(len(initrd)), CPUs: 1,
			})
			if !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
			t.Log(err)
		})
	}
}

func TestNoPVHEntryMessage(t *testing.T) {
	spec := defaultELFSpec()
	spec.notes = nil
	img := spec.build()
	_, err := Load(newFakeMem(128*mib), Config{Kernel: bytes.NewReader(img), KernelSize: int64(len(img)), CPUs: 1})
	if err == nil || !strings.Contains(err.Error(), "kernel has no PVH entry note: build with CONFIG_PVH=y") {
		t.Errorf("err = %v, want the CONFIG_PVH hint", err)
	}
}

// TestGuestVmlinux loads the project's guest kernel (kernel/build.sh).
func TestGuestVmlinux(t *testing.T) {
	path, err := kernel.Path()
	if errors.Is(err, kernel.ErrNotBuilt) {
		t.Skipf("guest kernel not built (%v)", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	img, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.NewFile(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	initrd := bytes.Repeat([]byte{0xa5}, 2*mib)
	mem := newFakeMem(256 * mib)
	e, err := Load(mem, Config{
		Kernel: bytes.NewReader(img), KernelSize: int64(len(img)),
		Initrd: bytes.NewReader(initrd), InitrdSize: int64(len(initrd)),
		Cmdline: "console=ttyS0", CPUs: 2,
	})
	if err != nil {
		t.Fatalf("Load %s: %v", path, err)
	}
	if e.Protocol != ProtocolPVH || e.Regs.RBX != PVHInfoAddr || e.SRegs.CR0 != 0x11 {
		t.Errorf("entry %+v", e.Regs)
	}
	if e.Regs.RIP < e.Kernel.Start || e.Regs.RIP >= e.Kernel.End() {
		t.Errorf("PVH entry %#x outside kernel %+v", e.Regs.RIP, e.Kernel)
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_LOAD || p.Filesz == 0 {
			continue
		}
		n := min(p.Filesz, 4096)
		want := img[p.Off : p.Off+n]
		if got := mem.bytes(t, p.Paddr, int(n)); !bytes.Equal(got, want) {
			t.Errorf("segment at %#x not loaded", p.Paddr)
		}
	}
	s := readStartInfo(t, mem)
	if s.Magic != 0x336ec578 || s.NrModules != 1 || s.Modules[0] != e.Initrd || e.Initrd.Start < e.Kernel.End() {
		t.Errorf("start_info %+v, kernel %+v", s, e.Kernel)
	}
}

// TestDebianVmlinuxPVH boots the PVH path on a real distribution vmlinux: the
// ELF inside the host's Debian bzImage (payload_offset/payload_length, XZ
// compressed, CONFIG_PVH=y), so the note parsing is checked against what a
// real kernel emits even before the project's own kernel is built.
func TestDebianVmlinuxPVH(t *testing.T) {
	paths, _ := filepath.Glob("/boot/vmlinuz-*")
	if len(paths) == 0 {
		t.Skip("no /boot/vmlinuz-* (install linux-image-amd64)")
	}
	xz, err := exec.LookPath("xz")
	if err != nil {
		t.Skip("no xz binary to unpack the vmlinux payload")
	}
	bz, err := os.ReadFile(paths[len(paths)-1])
	if err != nil {
		t.Fatal(err)
	}
	sects := int(bz[setupSectsOff])
	if sects == 0 {
		sects = 4
	}
	off := (sects+1)*512 + int(binary.LittleEndian.Uint32(bz[0x248:]))
	n := int(binary.LittleEndian.Uint32(bz[0x24c:]))
	if off+n > len(bz) || !bytes.HasPrefix(bz[off:], []byte("\xfd7zXZ\x00")) {
		t.Skipf("%s payload is not XZ", paths[len(paths)-1])
	}
	cmd := exec.Command(xz, "-dc", "--single-stream")
	cmd.Stdin = bytes.NewReader(bz[off : off+n])
	img, err := cmd.Output()
	if err != nil {
		t.Fatalf("xz: %v", err)
	}
	mem := newFakeMem(256 * mib)
	initrd := []byte("initrd")
	e, err := Load(mem, Config{
		Kernel: bytes.NewReader(img), KernelSize: int64(len(img)),
		Initrd: bytes.NewReader(initrd), InitrdSize: int64(len(initrd)),
		Cmdline: "console=ttyS0", CPUs: 2,
	})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	f, err := elf.NewFile(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	var loads int
	for _, p := range f.Progs {
		if p.Type != elf.PT_LOAD {
			continue
		}
		loads++
		if got := mem.bytes(t, p.Paddr, 4096); !bytes.Equal(got, img[p.Off:p.Off+4096]) {
			t.Errorf("segment at %#x not loaded", p.Paddr)
		}
	}
	// Linux's PVH entry (pvh_start_xen) is in .head.text, within the first
	// pages of the kernel's physical load address.
	if e.Protocol != ProtocolPVH || loads < 2 || e.Regs.RIP < e.Kernel.Start || e.Regs.RIP >= e.Kernel.Start+mib {
		t.Errorf("protocol %v, %d PT_LOADs, entry %#x, kernel %+v", e.Protocol, loads, e.Regs.RIP, e.Kernel)
	}
	if s := readStartInfo(t, mem); s.Magic != 0x336ec578 || s.NrModules != 1 {
		t.Errorf("start_info %+v", s)
	}
}
