package boot

import (
	"bytes"
	"encoding/binary"
)

// Synthetic kernel images: small, deterministic, with every field a test may
// want to break reachable from a struct.

// bzSpec describes a synthetic bzImage.
type bzSpec struct {
	setupSects    uint8
	version       uint16
	loadflags     uint8
	xloadflags    uint16
	relocatable   bool
	kernelAlign   uint32
	prefAddress   uint64
	initSize      uint32
	cmdlineSize   uint32
	initrdAddrMax uint32
	headerLen     uint8 // byte at 0x201: header end - 0x202
	payload       []byte
}

func defaultBzSpec() bzSpec {
	return bzSpec{
		setupSects:    3,
		version:       0x020f,
		loadflags:     loadedHigh,
		xloadflags:    xlfKernel64 | 1<<1,
		relocatable:   true,
		kernelAlign:   0x200000,
		prefAddress:   0x1000000,
		initSize:      0x800000,
		cmdlineSize:   2047,
		initrdAddrMax: 0x7fffffff,
		headerLen:     0x6a, // 0x26c - 0x202, as in a 2.15 kernel
		payload:       bytes.Repeat([]byte("PMKERNEL"), 512),
	}
}

func (s bzSpec) build() []byte {
	sects := int(s.setupSects)
	if sects == 0 {
		sects = 4
	}
	img := make([]byte, (sects+1)*512+len(s.payload))
	le := binary.LittleEndian
	img[setupSectsOff] = s.setupSects
	le.PutUint16(img[0x1f2:], 1) // root_flags: a value to see copied through
	le.PutUint16(img[vidModeOff:], 0xfffd)
	le.PutUint16(img[bootFlagOff:], bootFlag)
	img[0x200] = 0xeb // jmp short
	img[jumpLenOff] = s.headerLen
	copy(img[hdrMagicOff:], bzMagic)
	le.PutUint16(img[versionOff:], s.version)
	img[loadflagsOff] = s.loadflags
	le.PutUint32(img[0x214:], 0x100000) // code32_start
	le.PutUint32(img[initrdAddrMaxOff:], s.initrdAddrMax)
	le.PutUint32(img[kernelAlignOff:], s.kernelAlign)
	if s.relocatable {
		img[relocatableOff] = 1
	}
	img[0x235] = 21 // min_alignment
	le.PutUint16(img[xloadflagsOff:], s.xloadflags)
	le.PutUint32(img[cmdlineSizeOff:], s.cmdlineSize)
	le.PutUint64(img[prefAddressOff:], s.prefAddress)
	le.PutUint32(img[initSizeOff:], s.initSize)
	// Loader-owned fields a hostile header might preset.
	le.PutUint32(img[ramdiskImageOff:], 0x4000000)
	le.PutUint32(img[ramdiskSizeOff:], 0x1000)
	le.PutUint64(img[setupDataOff:], 0x9000)
	le.PutUint64(img[hwSubarchDataOff:], 0x9000)
	le.PutUint32(img[cmdLinePtrOff:], 0x9000)
	// Bytes just past the header must not be copied into the zero page.
	for i := hdrMagicOff + int(s.headerLen); i < setupHeaderLimit && i < len(img); i++ {
		img[i] = 0xcc
	}
	copy(img[(sects+1)*512:], s.payload)
	return img
}

// elfSeg is one PT_LOAD of a synthetic ELF.
type elfSeg struct {
	paddr uint64
	data  []byte
	memsz uint64 // 0: len(data)
}

// elfSpec describes a synthetic x86-64 vmlinux.
type elfSpec struct {
	class     byte
	machine   uint16
	typ       uint16
	segs      []elfSeg
	notes     []byte // PT_NOTE contents (none when nil)
	noteSect  []byte // SHT_NOTE section contents, outside any segment
	phnumHack int    // when non-zero, overrides e_phnum
}

// pvhNote encodes the Xen PHYS32_ENTRY note with a 4- or 8-byte descriptor.
func pvhNote(entry uint64, descsz int) []byte {
	return elfNote("Xen", xenElfnotePhys32Entry, entry, descsz)
}

func elfNote(name string, typ uint32, val uint64, descsz int) []byte {
	var b bytes.Buffer
	le := binary.LittleEndian
	nm := append([]byte(name), 0)
	binary.Write(&b, le, uint32(len(nm)))
	binary.Write(&b, le, uint32(descsz))
	binary.Write(&b, le, typ)
	b.Write(nm)
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
	d := make([]byte, (descsz+3)&^3)
	if descsz == 4 {
		le.PutUint32(d, uint32(val))
	} else if descsz >= 8 {
		le.PutUint64(d, val)
	}
	b.Write(d)
	return b.Bytes()
}

func defaultELFSpec() elfSpec {
	return elfSpec{
		segs: []elfSeg{
			{paddr: 0x1000000, data: bytes.Repeat([]byte("TEXT"), 1024), memsz: 0x2000},
			{paddr: 0x1200000, data: bytes.Repeat([]byte("DATA"), 256), memsz: 0x3000},
		},
		notes: append(elfNote("GNU", 3, 0x1234, 8), pvhNote(0x1000100, 4)...),
	}
}

func (s elfSpec) build() []byte {
	le := binary.LittleEndian
	nph := len(s.segs)
	if s.notes != nil {
		nph++
	}
	phoff := uint64(64)
	dataOff := phoff + uint64(nph)*56
	var body bytes.Buffer
	type ph struct {
		typ, flags           uint32
		off, paddr, fsz, msz uint64
	}
	var phs []ph
	for _, sg := range s.segs {
		msz := sg.memsz
		if msz == 0 {
			msz = uint64(len(sg.data))
		}
		phs = append(phs, ph{uint32(1), 7, dataOff + uint64(body.Len()), sg.paddr, uint64(len(sg.data)), msz})
		body.Write(sg.data)
	}
	if s.notes != nil {
		phs = append(phs, ph{uint32(4), 4, dataOff + uint64(body.Len()), 0, uint64(len(s.notes)), uint64(len(s.notes))})
		body.Write(s.notes)
	}
	var shoff uint64
	var shnum uint16
	var sects bytes.Buffer
	if s.noteSect != nil {
		// Sections: null, .note, .shstrtab.
		noteOff := dataOff + uint64(body.Len())
		body.Write(s.noteSect)
		strtab := []byte("\x00.note\x00.shstrtab\x00")
		strOff := dataOff + uint64(body.Len())
		body.Write(strtab)
		for body.Len()%8 != 0 {
			body.WriteByte(0)
		}
		shoff = dataOff + uint64(body.Len())
		shnum = 3
		sh := func(name, typ uint32, off, size uint64) {
			b := make([]byte, 64)
			le.PutUint32(b[0:], name)
			le.PutUint32(b[4:], typ)
			le.PutUint64(b[24:], off)
			le.PutUint64(b[32:], size)
			le.PutUint64(b[48:], 4) // addralign
			sects.Write(b)
		}
		sh(0, 0, 0, 0)
		sh(1, 7, noteOff, uint64(len(s.noteSect))) // SHT_NOTE
		sh(7, 3, strOff, uint64(len(strtab)))      // SHT_STRTAB
	}

	h := make([]byte, 64)
	copy(h, "\x7fELF")
	h[4] = 2 // ELFCLASS64
	if s.class != 0 {
		h[4] = s.class
	}
	h[5], h[6] = 1, 1 // little-endian, version 1
	typ, machine := s.typ, s.machine
	if typ == 0 {
		typ = 2 // ET_EXEC
	}
	if machine == 0 {
		machine = 62 // EM_X86_64
	}
	le.PutUint16(h[16:], typ)
	le.PutUint16(h[18:], machine)
	le.PutUint32(h[20:], 1)
	le.PutUint64(h[24:], 0xffffffff81000000) // e_entry: virtual, unused by PVH
	le.PutUint64(h[32:], phoff)
	le.PutUint64(h[40:], shoff)
	le.PutUint16(h[52:], 64)
	le.PutUint16(h[54:], 56)
	le.PutUint16(h[56:], uint16(nph))
	if s.phnumHack != 0 {
		le.PutUint16(h[56:], uint16(s.phnumHack))
	}
	if shnum > 0 {
		le.PutUint16(h[58:], 64)
		le.PutUint16(h[60:], shnum)
		le.PutUint16(h[62:], 2)
	}
	var out bytes.Buffer
	out.Write(h)
	for _, p := range phs {
		b := make([]byte, 56)
		le.PutUint32(b[0:], p.typ)
		le.PutUint32(b[4:], p.flags)
		le.PutUint64(b[8:], p.off)
		le.PutUint64(b[16:], 0xffffffff80000000+p.paddr) // p_vaddr
		le.PutUint64(b[24:], p.paddr)
		le.PutUint64(b[32:], p.fsz)
		le.PutUint64(b[40:], p.msz)
		le.PutUint64(b[48:], 0x1000)
		out.Write(b)
	}
	out.Write(body.Bytes())
	out.Write(sects.Bytes())
	return out.Bytes()
}
