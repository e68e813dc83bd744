package boot

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"math"
)

// Limits applied to ELF headers before debug/elf sees them, so that a hostile
// image cannot make it allocate or loop in proportion to a forged count.
const (
	elfMaxProgs    = 64      // vmlinux has ~5 program headers
	elfMaxSections = 1 << 12 // vmlinux has ~40-80 sections
	elfMaxNotes    = 1 << 20 // bytes of notes read per segment/section
	elfHeaderSize  = 64
	elfPhentSize   = 56
	elfShentSize   = 64

	xenElfnotePhys32Entry = 18 // XEN_ELFNOTE_PHYS32_ENTRY
)

// checkELFHeader validates the ELF64 file header's table bounds against the
// file size before debug/elf trusts them.
func checkELFHeader(r io.ReaderAt, size int64) error {
	if size < elfHeaderSize {
		return fmt.Errorf("%w: ELF file of %d bytes is shorter than its header", ErrBadImage, size)
	}
	h := make([]byte, elfHeaderSize)
	if err := readFull(r, h, 0); err != nil {
		return err
	}
	if h[elf.EI_CLASS] != byte(elf.ELFCLASS64) {
		return fmt.Errorf("%w: ELF class %v, need a 64-bit vmlinux", ErrUnsupported, elf.Class(h[elf.EI_CLASS]))
	}
	if h[elf.EI_DATA] != byte(elf.ELFDATA2LSB) {
		return fmt.Errorf("%w: ELF data encoding %v, need little-endian", ErrUnsupported, elf.Data(h[elf.EI_DATA]))
	}
	le := binary.LittleEndian
	if m := elf.Machine(le.Uint16(h[18:])); m != elf.EM_X86_64 {
		return fmt.Errorf("%w: ELF machine %v, need x86-64", ErrUnsupported, m)
	}
	usize := uint64(size)
	phoff, phentsize, phnum := le.Uint64(h[32:]), uint64(le.Uint16(h[54:])), uint64(le.Uint16(h[56:]))
	if phnum == 0 || phnum > elfMaxProgs || phentsize != elfPhentSize || phoff > usize || phnum*phentsize > usize-phoff {
		return fmt.Errorf("%w: bad program header table (offset %#x, %d entries of %d bytes)", ErrBadImage, phoff, phnum, phentsize)
	}
	shoff, shentsize, shnum := le.Uint64(h[40:]), uint64(le.Uint16(h[58:])), uint64(le.Uint16(h[60:]))
	if shnum == 0 && shoff != 0 {
		// Extended numbering (count in section 0) is for >65k sections,
		// which no kernel has.
		return fmt.Errorf("%w: extended section numbering", ErrBadImage)
	}
	if shnum > 0 && (shnum > elfMaxSections || shentsize != elfShentSize || shoff > usize || shnum*shentsize > usize-shoff) {
		return fmt.Errorf("%w: bad section header table (offset %#x, %d entries of %d bytes)", ErrBadImage, shoff, shnum, shentsize)
	}
	return nil
}

// parseELF validates an x86-64 vmlinux and plans loading its PT_LOAD segments
// at their physical addresses, to be entered through the PVH entry point.
func parseELF(r io.ReaderAt, size int64, ram uint64) (img *image, err error) {
	if err := checkELFHeader(r, size); err != nil {
		return nil, err
	}
	// debug/elf has panicked on malformed input in past releases; a parser
	// bug must not take the monitor down with it.
	defer func() {
		if p := recover(); p != nil {
			img, err = nil, fmt.Errorf("%w: ELF parser: %v", ErrBadImage, p)
		}
	}()
	f, err := elf.NewFile(io.NewSectionReader(r, 0, size))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadImage, err)
	}
	if f.Type != elf.ET_EXEC {
		return nil, fmt.Errorf("%w: ELF type %v, need an executable", ErrUnsupported, f.Type)
	}

	var loads []*elf.Prog
	lo, hi := uint64(math.MaxUint64), uint64(0)
	for _, p := range f.Progs {
		if p.Type != elf.PT_LOAD || p.Memsz == 0 {
			continue
		}
		if err := checkSegment(p, uint64(size), ram); err != nil {
			return nil, err
		}
		for _, q := range loads {
			if p.Paddr < q.Paddr+q.Memsz && q.Paddr < p.Paddr+p.Memsz {
				return nil, fmt.Errorf("%w: segments at %#x and %#x overlap", ErrBadImage, q.Paddr, p.Paddr)
			}
		}
		loads = append(loads, p)
		lo, hi = min(lo, p.Paddr), max(hi, p.Paddr+p.Memsz)
	}
	if len(loads) == 0 {
		return nil, fmt.Errorf("%w: no PT_LOAD segments", ErrBadImage)
	}

	entry, err := pvhEntry(f)
	if err != nil {
		return nil, err
	}
	if entry > math.MaxUint32 || !inRAM(ram, entry, 1) || entry < lo || entry >= hi {
		return nil, fmt.Errorf("%w: PVH entry %#x is outside the loaded kernel [%#x, %#x)", ErrBadImage, entry, lo, hi)
	}

	return &image{
		protocol:   ProtocolPVH,
		kernel:     Region{Start: lo, Size: hi - lo},
		entry:      entry,
		initrdMax:  math.MaxUint32, // hvm_start_info takes 64-bit addresses; stay in low RAM anyway
		cmdlineMax: CmdlineMax - 1,
		load: func(mem Memory) error {
			for _, p := range loads {
				if err := copyIn(mem, p.Paddr, r, int64(p.Off), int64(p.Filesz)); err != nil {
					return fmt.Errorf("segment at %#x: %w", p.Paddr, err)
				}
				if err := zeroFill(mem, p.Paddr+p.Filesz, p.Memsz-p.Filesz); err != nil {
					return fmt.Errorf("segment at %#x: %w", p.Paddr, err)
				}
			}
			return nil
		},
		params: writeStartInfo,
	}, nil
}

// checkSegment validates one PT_LOAD against the file and guest RAM: file
// bytes inside the file, memory image inside one RAM region and clear of the
// boot structures below HighMemStart.
func checkSegment(p *elf.Prog, fileSize, ram uint64) error {
	if p.Filesz > p.Memsz {
		return fmt.Errorf("%w: segment at %#x has filesz %#x > memsz %#x", ErrBadImage, p.Paddr, p.Filesz, p.Memsz)
	}
	if p.Off > fileSize || p.Filesz > fileSize-p.Off {
		return fmt.Errorf("%w: segment at %#x reads [%#x, +%#x) past the end of the %d-byte file", ErrBadImage, p.Paddr, p.Off, p.Filesz, fileSize)
	}
	if p.Paddr < HighMemStart {
		return fmt.Errorf("%w: segment at %#x overlaps the boot area below %#x", ErrNoSpace, p.Paddr, HighMemStart)
	}
	if !inRAM(ram, p.Paddr, p.Memsz) {
		return fmt.Errorf("%w: segment [%#x, +%#x) is outside guest RAM", ErrNoSpace, p.Paddr, p.Memsz)
	}
	return nil
}

// pvhEntry finds XEN_ELFNOTE_PHYS32_ENTRY, first in PT_NOTE segments (what a
// stripped vmlinux still has), then in SHT_NOTE sections.
func pvhEntry(f *elf.File) (uint64, error) {
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		if entry, ok, err := findPVHNote(p.Open(), p.Filesz); err != nil || ok {
			return entry, err
		}
	}
	for _, s := range f.Sections {
		if s.Type != elf.SHT_NOTE {
			continue
		}
		if entry, ok, err := findPVHNote(s.Open(), s.Size); err != nil || ok {
			return entry, err
		}
	}
	return 0, ErrNoPVHEntry
}

// findPVHNote scans an ELF note area for the Xen PHYS32_ENTRY note. Each note
// is namesz, descsz, type (u32 each), then name and desc, each padded to 4.
func findPVHNote(r io.ReadSeeker, n uint64) (entry uint64, ok bool, err error) {
	if n > elfMaxNotes {
		return 0, false, fmt.Errorf("%w: %d bytes of notes", ErrBadImage, n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return 0, false, fmt.Errorf("%w: notes: %w", ErrBadImage, err)
	}
	le := binary.LittleEndian
	for len(b) >= 12 {
		namesz, descsz, typ := uint64(le.Uint32(b)), uint64(le.Uint32(b[4:])), le.Uint32(b[8:])
		b = b[12:]
		nameEnd := (namesz + 3) &^ 3
		if nameEnd > uint64(len(b)) {
			return 0, false, fmt.Errorf("%w: note name runs past its section", ErrBadImage)
		}
		name := b[:namesz]
		b = b[nameEnd:]
		descEnd := (descsz + 3) &^ 3
		if descEnd > uint64(len(b)) {
			return 0, false, fmt.Errorf("%w: note descriptor runs past its section", ErrBadImage)
		}
		desc := b[:descsz]
		b = b[descEnd:]
		if typ != xenElfnotePhys32Entry || !bytes.Equal(bytes.TrimRight(name, "\x00"), []byte("Xen")) {
			continue
		}
		// Linux emits the entry as .long (newer) or _ASM_PTR (older).
		switch len(desc) {
		case 4:
			return uint64(le.Uint32(desc)), true, nil
		case 8:
			return le.Uint64(desc), true, nil
		}
		return 0, false, fmt.Errorf("%w: PVH entry note has a %d-byte descriptor", ErrBadImage, len(desc))
	}
	return 0, false, nil
}
