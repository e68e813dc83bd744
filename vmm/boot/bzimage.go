package boot

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/bits"
)

// Offsets in the bzImage file and in boot_params (the zero page), which share
// the setup header layout (Documentation/arch/x86/boot.rst, zero-page.rst).
const (
	setupHeaderOff   = 0x1f1
	setupHeaderLimit = 0x290 // boot_params.hdr ends where edd_mbr_sig_buffer starts
	setupSectsOff    = 0x1f1
	vidModeOff       = 0x1fa
	bootFlagOff      = 0x1fe
	jumpLenOff       = 0x201 // second byte of the jump: header length - 0x202 + 0x202
	hdrMagicOff      = 0x202
	versionOff       = 0x206
	typeOfLoaderOff  = 0x210
	loadflagsOff     = 0x211
	ramdiskImageOff  = 0x218
	ramdiskSizeOff   = 0x21c
	heapEndPtrOff    = 0x224
	cmdLinePtrOff    = 0x228
	initrdAddrMaxOff = 0x22c
	kernelAlignOff   = 0x230
	relocatableOff   = 0x234
	xloadflagsOff    = 0x236
	cmdlineSizeOff   = 0x238
	hwSubarchOff     = 0x23c
	hwSubarchDataOff = 0x240
	setupDataOff     = 0x250
	prefAddressOff   = 0x258
	initSizeOff      = 0x260

	e820EntriesOff = 0x1e8
	e820TableOff   = 0x2d0
	e820EntrySize  = 20
	e820Max        = 128

	bzMagic         = "HdrS"
	bootFlag        = 0xaa55
	minProtocol     = 0x020c // 2.12: xloadflags, and with it XLF_KERNEL_64
	loadedHigh      = 1 << 0
	canUseHeap      = 1 << 7
	xlfKernel64     = 1 << 0
	loaderUndefined = 0xff
	vidModeNormal   = 0xffff
	// heapEndPtr is what a 2.02+ loader puts here for a heap ending at 0xe000
	// in the real-mode segment; the 64-bit entry never runs the real-mode
	// code, but CAN_USE_HEAP promises a sane value.
	heapEndPtr = 0xe000 - 0x200

	entry64Offset = 0x200 // startup_64 relative to the protected-mode kernel
)

// setupHeader is the part of a bzImage setup header the loader decides on.
type setupHeader struct {
	raw           []byte // the file's bytes [0, header end), header end <= 0x290
	setupSects    uint64
	loadflags     uint8
	xloadflags    uint16
	initrdAddrMax uint32
	kernelAlign   uint32
	relocatable   bool
	cmdlineSize   uint32
	prefAddress   uint64
	initSize      uint32
}

func parseSetupHeader(r io.ReaderAt, size int64) (*setupHeader, error) {
	if size < setupHeaderLimit {
		return nil, fmt.Errorf("%w: bzImage of %d bytes is shorter than its setup header", ErrBadImage, size)
	}
	b := make([]byte, setupHeaderLimit)
	if err := readFull(r, b, 0); err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	if string(b[hdrMagicOff:hdrMagicOff+4]) != bzMagic {
		return nil, fmt.Errorf("%w: no HdrS magic", ErrUnknownImage)
	}
	if f := le.Uint16(b[bootFlagOff:]); f != bootFlag {
		return nil, fmt.Errorf("%w: boot flag %#x, want %#x", ErrBadImage, f, bootFlag)
	}
	// The header length is encoded in the jump at 0x200; copying more than
	// boot_params has room for would clobber fields the kernel reads. Fields
	// past the end are not the header's, so nothing is read before this.
	end := min(hdrMagicOff+int(b[jumpLenOff]), setupHeaderLimit)
	if end < versionOff+2 {
		return nil, fmt.Errorf("%w: setup header ends at %#x, before its version", ErrBadImage, end)
	}
	if v := le.Uint16(b[versionOff:]); v < minProtocol {
		return nil, fmt.Errorf("%w: boot protocol %d.%02d, need 2.12 or later", ErrUnsupported, v>>8, v&0xff)
	}
	if end < initSizeOff+4 {
		return nil, fmt.Errorf("%w: setup header ends at %#x, before init_size", ErrBadImage, end)
	}
	h := &setupHeader{
		raw:           b[:end],
		setupSects:    uint64(b[setupSectsOff]),
		loadflags:     b[loadflagsOff],
		xloadflags:    le.Uint16(b[xloadflagsOff:]),
		initrdAddrMax: le.Uint32(b[initrdAddrMaxOff:]),
		kernelAlign:   le.Uint32(b[kernelAlignOff:]),
		relocatable:   b[relocatableOff] != 0,
		cmdlineSize:   le.Uint32(b[cmdlineSizeOff:]),
		prefAddress:   le.Uint64(b[prefAddressOff:]),
		initSize:      le.Uint32(b[initSizeOff:]),
	}
	if h.loadflags&loadedHigh == 0 {
		return nil, fmt.Errorf("%w: not a bzImage (LOADED_HIGH clear)", ErrUnsupported)
	}
	if h.xloadflags&xlfKernel64 == 0 {
		return nil, fmt.Errorf("%w: no 64-bit entry point (XLF_KERNEL_64 clear)", ErrUnsupported)
	}
	if h.setupSects == 0 {
		h.setupSects = 4 // boot.rst: 0 means the historical 4
	}
	if h.relocatable && (h.kernelAlign == 0 || bits.OnesCount32(h.kernelAlign) != 1) {
		return nil, fmt.Errorf("%w: kernel_alignment %#x is not a power of two", ErrBadImage, h.kernelAlign)
	}
	return h, nil
}

// parseBzImage validates a bzImage and plans its placement: the
// protected-mode kernel is loaded at HighMemStart (1 MiB), the address the
// boot protocol defines for bzImages. The 64-bit entry is position
// independent: the decompressor moves itself to its runtime start (for a
// relocatable kernel max(align_up(1 MiB, kernel_alignment), pref_address) in
// practice, else pref_address) and needs init_size bytes from there, so the
// kernel's reservation runs from 1 MiB to runtime start + init_size and the
// initrd is kept above that.
func parseBzImage(r io.ReaderAt, size int64, ram uint64) (*image, error) {
	h, err := parseSetupHeader(r, size)
	if err != nil {
		return nil, err
	}
	pmOff := int64((h.setupSects + 1) * 512)
	if pmOff >= size {
		return nil, fmt.Errorf("%w: %d setup sectors but the file is %d bytes", ErrBadImage, h.setupSects, size)
	}
	pmSize := uint64(size - pmOff)

	runtime := h.prefAddress
	if h.relocatable {
		aligned := (HighMemStart + uint64(h.kernelAlign) - 1) &^ (uint64(h.kernelAlign) - 1)
		runtime = max(aligned, h.prefAddress)
	}
	if runtime < HighMemStart {
		return nil, fmt.Errorf("%w: kernel runs at %#x, inside the boot area below 1 MiB", ErrNoSpace, runtime)
	}
	low := lowRAMEnd(ram)
	if runtime >= low {
		return nil, fmt.Errorf("%w: kernel runs at %#x, low RAM ends at %#x", ErrNoSpace, runtime, low)
	}
	// runtime < 4 GiB and init_size is 32 bits: no overflow.
	end := max(HighMemStart+pmSize, runtime+uint64(h.initSize))
	if end > low {
		return nil, fmt.Errorf("%w: kernel needs RAM up to %#x, low RAM ends at %#x", ErrNoSpace, end, low)
	}

	cmdlineMax := int(min(h.cmdlineSize, CmdlineMax-1))
	initrdMax := uint64(h.initrdAddrMax)
	if initrdMax == 0 {
		initrdMax = 0x37ffffff // boot.rst: the value to assume for old kernels
	}
	return &image{
		protocol:   ProtocolLinux64,
		kernel:     Region{Start: HighMemStart, Size: end - HighMemStart},
		entry:      HighMemStart + entry64Offset,
		initrdMax:  initrdMax,
		cmdlineMax: cmdlineMax,
		load: func(mem Memory) error {
			return copyIn(mem, HighMemStart, r, pmOff, int64(pmSize))
		},
		params: func(mem Memory, initrd Region) error {
			zp, err := zeroPage(h, initrd, memoryMap(mem.Size()))
			if err != nil {
				return err
			}
			if err := writeAt(mem, ZeroPageAddr, zp); err != nil {
				return fmt.Errorf("zero page: %w", err)
			}
			return nil
		},
	}, nil
}

// zeroPage builds boot_params: all zero, the image's setup header copied in,
// then the fields a loader writes.
func zeroPage(h *setupHeader, initrd Region, mm []memEntry) ([]byte, error) {
	zp := make([]byte, ZeroPageSize)
	copy(zp[setupHeaderOff:], h.raw[setupHeaderOff:])
	le := binary.LittleEndian
	le.PutUint16(zp[vidModeOff:], vidModeNormal)
	zp[typeOfLoaderOff] = loaderUndefined
	zp[loadflagsOff] = h.loadflags | canUseHeap
	le.PutUint16(zp[heapEndPtrOff:], heapEndPtr)
	le.PutUint32(zp[cmdLinePtrOff:], CmdlineAddr)
	// Fields the loader owns are set whatever the image carried in them: a
	// header must not smuggle in an initrd or a setup_data chain of its own.
	le.PutUint32(zp[hwSubarchOff:], 0) // default x86/PC
	le.PutUint64(zp[hwSubarchDataOff:], 0)
	le.PutUint64(zp[setupDataOff:], 0)
	if initrd.End() > 1<<32 {
		return nil, fmt.Errorf("%w: initrd at %#x is above 4 GiB", ErrNoSpace, initrd.Start)
	}
	le.PutUint32(zp[ramdiskImageOff:], uint32(initrd.Start))
	le.PutUint32(zp[ramdiskSizeOff:], uint32(initrd.Size))
	if len(mm) > e820Max {
		return nil, fmt.Errorf("%d e820 entries, at most %d fit", len(mm), e820Max)
	}
	zp[e820EntriesOff] = uint8(len(mm))
	for i, e := range mm {
		o := e820TableOff + i*e820EntrySize
		le.PutUint64(zp[o:], e.addr)
		le.PutUint64(zp[o+8:], e.size)
		le.PutUint32(zp[o+16:], e.typ)
	}
	return zp, nil
}
