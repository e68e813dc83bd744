package boot

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Errors callers can test with errors.Is. Every error Load returns wraps one
// of them or an I/O error from reading the images or writing guest memory.
var (
	// ErrUnknownImage: the kernel is neither an ELF file nor a bzImage.
	ErrUnknownImage = errors.New("kernel image is neither ELF nor bzImage")
	// ErrBadImage: the image is truncated or internally inconsistent.
	ErrBadImage = errors.New("corrupt kernel image")
	// ErrUnsupported: a well-formed image this loader cannot boot (32-bit
	// only, old boot protocol, not x86-64).
	ErrUnsupported = errors.New("unsupported kernel image")
	// ErrNoPVHEntry: an ELF vmlinux without XEN_ELFNOTE_PHYS32_ENTRY.
	ErrNoPVHEntry = errors.New("kernel has no PVH entry note: build with CONFIG_PVH=y")
	// ErrNoSpace: something does not fit in guest RAM or would overlap the
	// boot structures below 1 MiB.
	ErrNoSpace = errors.New("does not fit in guest memory")
	// ErrCmdline: the command line is too long or contains a NUL byte.
	ErrCmdline = errors.New("invalid kernel command line")
	// ErrCPUs: the vCPU count is below 1 or above MaxCPUs.
	ErrCPUs = errors.New("unsupported vCPU count")
)

// Config describes what to boot. Kernel is an ELF vmlinux (booted through its
// PVH entry) or a bzImage (booted through the 64-bit boot protocol); the
// format is detected from the first bytes.
type Config struct {
	Kernel     io.ReaderAt
	KernelSize int64
	Initrd     io.ReaderAt // nil: no initrd
	InitrdSize int64
	Cmdline    string
	CPUs       int
}

// image is what a format-specific parser learned, before anything is written.
type image struct {
	protocol Protocol
	kernel   Region // occupied or reserved by the kernel
	entry    uint64
	// initrdMax is the last address the initrd may occupy (inclusive).
	initrdMax uint64
	// cmdlineMax is the longest command line (without NUL) the kernel takes.
	cmdlineMax int
	// load writes the kernel into guest memory.
	load func(Memory) error
	// params writes the protocol's boot information (zero page or
	// hvm_start_info) once the initrd location is known.
	params func(mem Memory, initrd Region) error
}

// Load writes everything vCPU 0 needs to start cfg's kernel into mem — the
// kernel, the initrd, the command line, the boot information for its
// protocol, the MP table, the GDT and (for the 64-bit entry) page tables —
// and returns the register state to start vCPU 0 in. Other vCPUs start in
// the usual INIT/SIPI wait state.
func Load(mem Memory, cfg Config) (*Entry, error) {
	if cfg.Kernel == nil || cfg.KernelSize <= 0 {
		return nil, fmt.Errorf("%w: empty kernel", ErrBadImage)
	}
	if cfg.CPUs < 1 || cfg.CPUs > MaxCPUs {
		return nil, fmt.Errorf("%w: %d (want 1..%d)", ErrCPUs, cfg.CPUs, MaxCPUs)
	}
	if cfg.Initrd != nil && cfg.InitrdSize < 0 || cfg.Initrd == nil && cfg.InitrdSize != 0 {
		return nil, fmt.Errorf("initrd size %d without a matching reader", cfg.InitrdSize)
	}
	if strings.IndexByte(cfg.Cmdline, 0) >= 0 {
		return nil, fmt.Errorf("%w: contains a NUL byte", ErrCmdline)
	}
	ram := mem.Size()
	if lowRAMEnd(ram) <= HighMemStart {
		return nil, fmt.Errorf("%w: %d bytes of RAM is less than the 1 MiB boot area", ErrNoSpace, ram)
	}

	img, err := parse(cfg.Kernel, cfg.KernelSize, ram)
	if err != nil {
		return nil, err
	}
	if len(cfg.Cmdline) > img.cmdlineMax {
		return nil, fmt.Errorf("%w: %d bytes, the kernel takes at most %d", ErrCmdline, len(cfg.Cmdline), img.cmdlineMax)
	}
	var initrd Region
	if cfg.InitrdSize > 0 {
		initrd, err = placeInitrd(ram, uint64(cfg.InitrdSize), img.kernel.End(), img.initrdMax)
		if err != nil {
			return nil, err
		}
	}

	if err := img.load(mem); err != nil {
		return nil, fmt.Errorf("load kernel: %w", err)
	}
	if initrd.Size > 0 {
		if err := copyIn(mem, initrd.Start, cfg.Initrd, 0, cfg.InitrdSize); err != nil {
			return nil, fmt.Errorf("load initrd: %w", err)
		}
	}
	if err := writeCmdline(mem, cfg.Cmdline); err != nil {
		return nil, err
	}
	if err := img.params(mem, initrd); err != nil {
		return nil, err
	}
	if err := WriteMPTable(mem, cfg.CPUs); err != nil {
		return nil, err
	}
	if err := writeGDT(mem); err != nil {
		return nil, err
	}

	e := &Entry{Protocol: img.protocol, Kernel: img.kernel, Initrd: initrd}
	switch img.protocol {
	case ProtocolPVH:
		e.Regs, e.SRegs = pvhState(img.entry)
	case ProtocolLinux64:
		if err := writePageTables(mem); err != nil {
			return nil, err
		}
		e.Regs, e.SRegs = longModeState(img.entry)
	}
	return e, nil
}

// parse detects the image format and validates it against a guest of ram bytes.
func parse(r io.ReaderAt, size int64, ram uint64) (*image, error) {
	var magic [4]byte
	if size < int64(len(magic)) {
		return nil, fmt.Errorf("%w: %d bytes", ErrUnknownImage, size)
	}
	if err := readFull(r, magic[:], 0); err != nil {
		return nil, err
	}
	if bytes.Equal(magic[:], []byte("\x7fELF")) {
		return parseELF(r, size, ram)
	}
	var hdrS [4]byte
	if size >= hdrMagicOff+4 {
		if err := readFull(r, hdrS[:], hdrMagicOff); err != nil {
			return nil, err
		}
		if string(hdrS[:]) == bzMagic {
			return parseBzImage(r, size, ram)
		}
	}
	return nil, ErrUnknownImage
}

// writeCmdline writes the NUL-terminated command line at CmdlineAddr. The
// length was checked against the kernel's limit by the caller; CmdlineMax
// bounds the area reserved for it in the layout.
func writeCmdline(mem Memory, cmdline string) error {
	if len(cmdline)+1 > CmdlineMax {
		return fmt.Errorf("%w: %d bytes, at most %d fit", ErrCmdline, len(cmdline), CmdlineMax-1)
	}
	b := make([]byte, len(cmdline)+1)
	copy(b, cmdline)
	if err := writeAt(mem, CmdlineAddr, b); err != nil {
		return fmt.Errorf("command line: %w", err)
	}
	return nil
}

// placeInitrd puts an initrd of n bytes page-aligned as high as possible
// below both the end of low RAM and maxAddr (inclusive), and not below
// kernelEnd. Linux expects the initrd near the top of memory, clear of the
// kernel's decompression area.
func placeInitrd(ram, n, kernelEnd, maxAddr uint64) (Region, error) {
	top := lowRAMEnd(ram)
	if maxAddr < top-1 {
		top = maxAddr + 1
	}
	if n > top {
		return Region{}, fmt.Errorf("%w: initrd of %d bytes is larger than the %d bytes below %#x", ErrNoSpace, n, top, top)
	}
	start := (top - n) &^ 0xfff
	if start < kernelEnd {
		return Region{}, fmt.Errorf("%w: initrd of %d bytes does not fit between the kernel end %#x and %#x", ErrNoSpace, n, kernelEnd, top)
	}
	return Region{Start: start, Size: n}, nil
}

// Memory-map entry types, shared by e820 and the PVH memory map.
const (
	memTypeRAM      = 1
	memTypeReserved = 2
)

type memEntry struct {
	addr, size uint64
	typ        uint32
}

// memoryMap is the guest's memory map: RAM below the EBDA, the EBDA/BIOS hole
// reserved (it holds the MP table), RAM from 1 MiB to the MMIO gap, RAM above
// 4 GiB. The caller guarantees RAM extends past HighMemStart.
func memoryMap(ram uint64) []memEntry {
	m := []memEntry{
		{0, EBDAStart, memTypeRAM},
		{EBDAStart, HighMemStart - EBDAStart, memTypeReserved},
	}
	regions := RAMRegions(ram)
	m = append(m, memEntry{HighMemStart, regions[0].End() - HighMemStart, memTypeRAM})
	if len(regions) > 1 {
		m = append(m, memEntry{regions[1].Start, regions[1].Size, memTypeRAM})
	}
	return m
}
