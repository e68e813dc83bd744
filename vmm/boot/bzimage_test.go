package boot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const mib = 1 << 20

// zeroPageFields reads back the boot_params fields a loader decides on.
func zeroPageFields(t *testing.T, mem *fakeMem) map[string]uint64 {
	t.Helper()
	z := uint64(ZeroPageAddr)
	return map[string]uint64{
		"setup_sects":      mem.u8(t, z+0x1f1),
		"root_flags":       mem.u16(t, z+0x1f2),
		"vid_mode":         mem.u16(t, z+0x1fa),
		"boot_flag":        mem.u16(t, z+0x1fe),
		"header":           mem.u32(t, z+0x202),
		"version":          mem.u16(t, z+0x206),
		"type_of_loader":   mem.u8(t, z+0x210),
		"loadflags":        mem.u8(t, z+0x211),
		"code32_start":     mem.u32(t, z+0x214),
		"ramdisk_image":    mem.u32(t, z+0x218),
		"ramdisk_size":     mem.u32(t, z+0x21c),
		"heap_end_ptr":     mem.u16(t, z+0x224),
		"cmd_line_ptr":     mem.u32(t, z+0x228),
		"initrd_addr_max":  mem.u32(t, z+0x22c),
		"kernel_alignment": mem.u32(t, z+0x230),
		"relocatable":      mem.u8(t, z+0x234),
		"xloadflags":       mem.u16(t, z+0x236),
		"cmdline_size":     mem.u32(t, z+0x238),
		"hardware_subarch": mem.u32(t, z+0x23c),
		"setup_data":       mem.u64(t, z+0x250),
		"subarch_data":     mem.u64(t, z+0x240),
		"pref_address":     mem.u64(t, z+0x258),
		"init_size":        mem.u32(t, z+0x260),
		"e820_entries":     mem.u8(t, z+0x1e8),
		"ext_ramdisk":      mem.u64(t, z+0xc0),
		"acpi_rsdp_addr":   mem.u64(t, z+0x70),
	}
}

func TestBzImageZeroPage(t *testing.T) {
	spec := defaultBzSpec()
	img := spec.build()
	initrd := bytes.Repeat([]byte("INITRD!!"), 1000) // 8000 bytes, not page sized
	mem := newFakeMem(128 * mib)
	mem.dirty(0, 2*mib)
	e, err := Load(mem, Config{
		Kernel: bytes.NewReader(img), KernelSize: int64(len(img)),
		Initrd: bytes.NewReader(initrd), InitrdSize: int64(len(initrd)),
		Cmdline: "console=ttyS0 quiet", CPUs: 2,
	})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	wantInitrd := uint64(128*mib-8000) &^ 0xfff
	want := map[string]uint64{
		"setup_sects":      3,
		"root_flags":       1,
		"vid_mode":         0xffff,
		"boot_flag":        0xaa55,
		"header":           0x53726448, // "HdrS"
		"version":          0x020f,
		"type_of_loader":   0xff,
		"loadflags":        0x81, // LOADED_HIGH | CAN_USE_HEAP
		"code32_start":     0x100000,
		"ramdisk_image":    wantInitrd,
		"ramdisk_size":     8000,
		"heap_end_ptr":     0xde00,
		"cmd_line_ptr":     CmdlineAddr,
		"initrd_addr_max":  0x7fffffff,
		"kernel_alignment": 0x200000,
		"relocatable":      1,
		"xloadflags":       3,
		"cmdline_size":     2047,
		"hardware_subarch": 0,
		"setup_data":       0,
		"subarch_data":     0,
		"pref_address":     0x1000000,
		"init_size":        0x800000,
		"e820_entries":     3,
		"ext_ramdisk":      0,
		"acpi_rsdp_addr":   0,
	}
	if diff := cmp.Diff(want, zeroPageFields(t, mem)); diff != "" {
		t.Errorf("boot_params (-want +got):\n%s", diff)
	}
	// Outside the copied header and the fields above, the page is zero:
	// nothing leaks from dirty memory or from the image past the header end.
	zp := mem.bytes(t, ZeroPageAddr, ZeroPageSize)
	for _, r := range [][2]int{{0, 0x70}, {0x78, 0xc0}, {0xc8, 0x1e8}, {0x1e9, 0x1f1}, {0x26c, 0x2d0}, {0x2d0 + 3*20, 0x1000}} {
		if !allZero(zp[r[0]:r[1]]) {
			t.Errorf("zero page [%#x, %#x) is not zero: %x", r[0], r[1], zp[r[0]:r[1]])
		}
	}
	if got := string(mem.bytes(t, CmdlineAddr, 20)); got != "console=ttyS0 quiet\x00" {
		t.Errorf("command line = %q", got)
	}
	if got := mem.bytes(t, HighMemStart, len(spec.payload)); !bytes.Equal(got, spec.payload) {
		t.Errorf("protected-mode kernel not at 1 MiB")
	}
	if got := mem.bytes(t, wantInitrd, len(initrd)); !bytes.Equal(got, initrd) {
		t.Errorf("initrd not at %#x", wantInitrd)
	}
	if diff := cmp.Diff(Region{Start: wantInitrd, Size: 8000}, e.Initrd); diff != "" {
		t.Errorf("Entry.Initrd (-want +got):\n%s", diff)
	}
}

// A header length byte claiming more than boot_params holds is clamped at
// 0x290: the bytes after it (EDD signatures, e820) come from us, not the file.
func TestBzImageHeaderCopyBounded(t *testing.T) {
	spec := defaultBzSpec()
	spec.headerLen = 0xff
	img := spec.build()
	for i := setupHeaderLimit; i < 0x400; i++ {
		img[i] = 0xcc
	}
	mem, _ := loadSynthetic(t, img, 128*mib)
	if got := mem.bytes(t, ZeroPageAddr+setupHeaderLimit, e820TableOff-setupHeaderLimit); !allZero(got) {
		t.Errorf("zero page past the header limit: %x", got)
	}
}

type e820 struct {
	Addr, Size uint64
	Type       uint32
}

func readE820(t *testing.T, mem *fakeMem) []e820 {
	t.Helper()
	var got []e820
	for i := range mem.u8(t, ZeroPageAddr+0x1e8) {
		o := ZeroPageAddr + 0x2d0 + 20*i
		got = append(got, e820{mem.u64(t, o), mem.u64(t, o+8), uint32(mem.u32(t, o+16))})
	}
	return got
}

func readPVHMemmap(t *testing.T, mem *fakeMem) []e820 {
	t.Helper()
	var got []e820
	base, n := mem.u64(t, PVHInfoAddr+0x28), mem.u32(t, PVHInfoAddr+0x30)
	for i := range n {
		o := base + 24*i
		got = append(got, e820{mem.u64(t, o), mem.u64(t, o+8), uint32(mem.u32(t, o+16))})
	}
	return got
}

var memoryMapTests = []struct {
	name string
	ram  uint64
	want []e820
}{
	{"128MiB", 128 * mib, []e820{{0, 0x9e000, 1}, {0x9e000, 0x62000, 2}, {mib, 127 * mib, 1}}},
	{"3GiB", 3 << 30, []e820{{0, 0x9e000, 1}, {0x9e000, 0x62000, 2}, {mib, 3<<30 - mib, 1}}},
	{"4GiB", 4 << 30, []e820{{0, 0x9e000, 1}, {0x9e000, 0x62000, 2}, {mib, 3<<30 - mib, 1}, {4 << 30, 1 << 30, 1}}},
	{"8GiB", 8 << 30, []e820{{0, 0x9e000, 1}, {0x9e000, 0x62000, 2}, {mib, 3<<30 - mib, 1}, {4 << 30, 5 << 30, 1}}},
}

func TestBzImageE820(t *testing.T) {
	for _, tt := range memoryMapTests {
		t.Run(tt.name, func(t *testing.T) {
			mem, _ := loadSynthetic(t, defaultBzSpec().build(), tt.ram)
			if diff := cmp.Diff(tt.want, readE820(t, mem)); diff != "" {
				t.Errorf("e820 (-want +got):\n%s", diff)
			}
		})
	}
}

func TestInitrdPlacement(t *testing.T) {
	tests := []struct {
		name    string
		ram     uint64
		addrMax uint32
		size    int
		want    uint64
		wantErr error
	}{
		{"top of 128MiB", 128 * mib, 0x7fffffff, 4 * mib, 124 * mib, nil},
		{"unaligned size rounds down", 128 * mib, 0x7fffffff, 4096 + 1, 128*mib - 8192, nil},
		{"below initrd_addr_max", 8 << 30, 0x7fffffff, mib, 0x80000000 - mib, nil},
		{"top of low RAM under the gap", 8 << 30, 0xffffffff, mib, 3<<30 - mib, nil},
		{"old kernel limit when zero", 2 << 30, 0, mib, 0x38000000 - mib, nil},
		{"fills exactly to kernel end", 128 * mib, 0x7fffffff, 128*mib - 0x1800000, 0x1800000, nil},
		{"overlaps the kernel", 128 * mib, 0x7fffffff, 128*mib - 0x1800000 + 1, 0, ErrNoSpace},
		{"larger than RAM", 128 * mib, 0x7fffffff, 200 * mib, 0, ErrNoSpace},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := defaultBzSpec()
			spec.initrdAddrMax = tt.addrMax
			img := spec.build()
			mem := newFakeMem(tt.ram)
			// A zero-filled initrd: only placement matters here, and the
			// sparse fake memory stores nothing for zeros.
			e, err := Load(mem, Config{
				Kernel: bytes.NewReader(img), KernelSize: int64(len(img)),
				Initrd: bytes.NewReader(make([]byte, tt.size)), InitrdSize: int64(tt.size), CPUs: 1,
			})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if e.Initrd.Start != tt.want || e.Initrd.Size != uint64(tt.size) {
				t.Errorf("initrd at %#x+%#x, want %#x+%#x", e.Initrd.Start, e.Initrd.Size, tt.want, tt.size)
			}
			if e.Initrd.Start < e.Kernel.End() || e.Initrd.Start%4096 != 0 {
				t.Errorf("initrd %+v overlaps kernel %+v or is unaligned", e.Initrd, e.Kernel)
			}
			if got := mem.u32(t, ZeroPageAddr+0x218); got != tt.want {
				t.Errorf("ramdisk_image = %#x, want %#x", got, tt.want)
			}
		})
	}
}

func TestBzImageRejects(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*bzSpec)
		img     func([]byte) []byte
		ram     uint64
		cmdline string
		cpus    int
		want    error
	}{
		{name: "wrong magic", img: func(b []byte) []byte { copy(b[0x202:], "HdrZ"); return b }, want: ErrUnknownImage},
		{name: "empty", img: func(b []byte) []byte { return b[:0] }, want: ErrBadImage},
		{name: "tiny", img: func(b []byte) []byte { return b[:3] }, want: ErrUnknownImage},
		{name: "truncated header", img: func(b []byte) []byte { return b[:0x240] }, want: ErrBadImage},
		{name: "truncated setup", img: func(b []byte) []byte { return b[:0x600] }, want: ErrBadImage},
		{name: "boot flag", img: func(b []byte) []byte { b[0x1fe] = 0; return b }, want: ErrBadImage},
		{name: "protocol 2.10", mutate: func(s *bzSpec) { s.version = 0x020a }, want: ErrUnsupported},
		{name: "32-bit only", mutate: func(s *bzSpec) { s.xloadflags = 0 }, want: ErrUnsupported},
		{name: "zImage", mutate: func(s *bzSpec) { s.loadflags = 0 }, want: ErrUnsupported},
		{name: "alignment not a power of two", mutate: func(s *bzSpec) { s.kernelAlign = 0x300000 }, want: ErrBadImage},
		{name: "alignment zero", mutate: func(s *bzSpec) { s.kernelAlign = 0 }, want: ErrBadImage},
		{name: "header too short", mutate: func(s *bzSpec) { s.headerLen = 0x20 }, want: ErrBadImage},
		{name: "fixed address in boot area", mutate: func(s *bzSpec) { s.relocatable = false; s.prefAddress = 0x8000 }, want: ErrNoSpace},
		{name: "init_size beyond RAM", mutate: func(s *bzSpec) { s.initSize = 0xffffffff }, want: ErrNoSpace},
		{name: "pref_address wraps", mutate: func(s *bzSpec) { s.prefAddress = ^uint64(0) - 10 }, want: ErrNoSpace},
		{name: "pref_address in the gap", mutate: func(s *bzSpec) { s.prefAddress = 0xd0000000 }, ram: 8 << 30, want: ErrNoSpace},
		{name: "RAM below 1 MiB", ram: 512 << 10, want: ErrNoSpace},
		{name: "RAM too small for kernel", ram: 16 * mib, want: ErrNoSpace},
		{name: "cmdline over cmdline_size", mutate: func(s *bzSpec) { s.cmdlineSize = 8 }, cmdline: "console=ttyS0", want: ErrCmdline},
		{name: "cmdline over layout max", cmdline: strings.Repeat("x", CmdlineMax), mutate: func(s *bzSpec) { s.cmdlineSize = 1 << 20 }, want: ErrCmdline},
		{name: "cmdline with NUL", cmdline: "a\x00b", want: ErrCmdline},
		{name: "no cpus", cpus: -1, want: ErrCPUs},
		{name: "too many cpus", cpus: MaxCPUs + 1, want: ErrCPUs},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := defaultBzSpec()
			if tt.mutate != nil {
				tt.mutate(&spec)
			}
			img := spec.build()
			if tt.img != nil {
				img = tt.img(img)
			}
			ram, cpus := tt.ram, tt.cpus
			if ram == 0 {
				ram = 128 * mib
			}
			if cpus == 0 {
				cpus = 1
			}
			_, err := Load(newFakeMem(ram), Config{Kernel: bytes.NewReader(img), KernelSize: int64(len(img)), Cmdline: tt.cmdline, CPUs: cpus})
			if !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
			t.Log(err)
		})
	}
}

func TestBzImageSetupSectsZeroMeansFour(t *testing.T) {
	spec := defaultBzSpec()
	spec.setupSects = 0
	mem, _ := loadSynthetic(t, spec.build(), 128*mib)
	if got := mem.bytes(t, HighMemStart, 8); string(got) != "PMKERNEL" {
		t.Errorf("kernel at 1 MiB starts %q, want the payload after 4+1 sectors", got)
	}
}

func TestBzImageNonRelocatable(t *testing.T) {
	spec := defaultBzSpec()
	spec.relocatable = false
	spec.prefAddress = 0x2000000
	_, e := loadSynthetic(t, spec.build(), 128*mib)
	if want := (Region{Start: mib, Size: 0x2000000 + 0x800000 - mib}); e.Kernel != want {
		t.Errorf("kernel region %+v, want %+v", e.Kernel, want)
	}
}

// TestDebianBzImage loads the host's Debian kernel: the real header of a
// current distribution kernel must parse and place.
func TestDebianBzImage(t *testing.T) {
	paths, _ := filepath.Glob("/boot/vmlinuz-*")
	if len(paths) == 0 {
		t.Skip("no /boot/vmlinuz-* (install linux-image-amd64)")
	}
	img, err := os.ReadFile(paths[len(paths)-1])
	if err != nil {
		t.Skipf("read %s: %v", paths[len(paths)-1], err)
	}
	le := binary.LittleEndian
	initrd := bytes.Repeat([]byte{0x5a}, 3*mib+123)
	for _, ram := range []uint64{256 * mib, 8 << 30} {
		mem := newFakeMem(ram)
		e, err := Load(mem, Config{
			Kernel: bytes.NewReader(img), KernelSize: int64(len(img)),
			Initrd: bytes.NewReader(initrd), InitrdSize: int64(len(initrd)),
			Cmdline: "console=ttyS0 reboot=k panic=1", CPUs: 2,
		})
		if err != nil {
			t.Fatalf("Load %s in %d MiB: %v", paths[len(paths)-1], ram>>20, err)
		}
		if e.Protocol != ProtocolLinux64 || e.Regs.RIP != mib+0x200 || e.Regs.RSI != ZeroPageAddr {
			t.Errorf("entry %v rip %#x rsi %#x", e.Protocol, e.Regs.RIP, e.Regs.RSI)
		}
		sects := int(img[0x1f1])
		if sects == 0 {
			sects = 4
		}
		pm := img[(sects+1)*512:]
		if got := mem.bytes(t, mib, 4096); !bytes.Equal(got, pm[:4096]) {
			t.Errorf("protected-mode kernel head not at 1 MiB")
		}
		if got := mem.bytes(t, mib+uint64(len(pm))-4096, 4096); !bytes.Equal(got, pm[len(pm)-4096:]) {
			t.Errorf("protected-mode kernel tail not loaded")
		}
		f := zeroPageFields(t, mem)
		if f["version"] < 0x020c || f["xloadflags"]&1 == 0 || f["relocatable"] != 1 {
			t.Errorf("unexpected Debian header: %v", f)
		}
		// Untouched header fields are copied verbatim from the image.
		for _, off := range []uint64{0x1f4, 0x1fe, 0x202, 0x206, 0x20c, 0x214, 0x22c, 0x230, 0x236, 0x238, 0x248, 0x24c, 0x258, 0x260, 0x264} {
			if got, want := mem.u32(t, ZeroPageAddr+off), uint64(le.Uint32(img[off:])); got != want {
				t.Errorf("zero page %#x = %#x, image has %#x", off, got, want)
			}
		}
		runtime := max(f["pref_address"], (mib+f["kernel_alignment"]-1)&^(f["kernel_alignment"]-1))
		if e.Kernel.End() < runtime+f["init_size"] || e.Initrd.Start < e.Kernel.End() {
			t.Errorf("kernel %+v (runtime %#x + init_size %#x), initrd %+v", e.Kernel, runtime, f["init_size"], e.Initrd)
		}
		if e.Initrd.End() > min(ram, MMIOGapStart) || e.Initrd.End() > f["initrd_addr_max"]+1 {
			t.Errorf("initrd %+v above the limits", e.Initrd)
		}
		if got := mem.bytes(t, e.Initrd.Start, len(initrd)); !bytes.Equal(got, initrd) {
			t.Errorf("initrd contents differ")
		}
		if f["ramdisk_image"] != e.Initrd.Start || f["ramdisk_size"] != uint64(len(initrd)) {
			t.Errorf("ramdisk %#x+%#x, want %+v", f["ramdisk_image"], f["ramdisk_size"], e.Initrd)
		}
		wantE820 := memoryMapTests[0].want
		if ram > MMIOGapStart {
			wantE820 = memoryMapTests[3].want
		} else {
			wantE820 = append(wantE820[:2:2], e820{mib, ram - mib, 1})
		}
		if diff := cmp.Diff(wantE820, readE820(t, mem)); diff != "" {
			t.Errorf("e820 (-want +got):\n%s", diff)
		}
	}
}

// The synthetic header presets ramdisk_image/size, cmd_line_ptr and
// setup_data; without an initrd the loader's zeros must win.
func TestBzImageLoaderOwnedFields(t *testing.T) {
	mem, _ := loadSynthetic(t, defaultBzSpec().build(), 128*mib)
	f := zeroPageFields(t, mem)
	got := map[string]uint64{"ramdisk_image": f["ramdisk_image"], "ramdisk_size": f["ramdisk_size"], "cmd_line_ptr": f["cmd_line_ptr"], "setup_data": f["setup_data"]}
	want := map[string]uint64{"ramdisk_image": 0, "ramdisk_size": 0, "cmd_line_ptr": CmdlineAddr, "setup_data": 0}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("loader-owned fields (-want +got):\n%s", diff)
	}
}
