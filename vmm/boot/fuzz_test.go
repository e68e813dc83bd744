package boot

import (
	"bytes"
	"testing"
)

// fuzzRAM is small so that a segment or bss the fuzzer makes as large as RAM
// still loads quickly into the sparse fake memory.
const fuzzRAM = 48 * mib

// fuzzLoad runs Load on img and checks the invariants that must hold for any
// input: no panic, and on success an entry inside the kernel and all the
// kernel's pieces in RAM above the boot area.
func fuzzLoad(t *testing.T, img []byte) {
	mem := newFakeMem(fuzzRAM)
	initrd := []byte("fuzz initrd")
	e, err := Load(mem, Config{
		Kernel: bytes.NewReader(img), KernelSize: int64(len(img)),
		Initrd: bytes.NewReader(initrd), InitrdSize: int64(len(initrd)),
		Cmdline: "console=ttyS0", CPUs: 2,
	})
	if err != nil {
		return
	}
	if e.Kernel.Start < HighMemStart || !inRAM(fuzzRAM, e.Kernel.Start, e.Kernel.Size) {
		t.Fatalf("kernel %+v outside RAM above 1 MiB", e.Kernel)
	}
	if e.Initrd.Start < e.Kernel.End() || !inRAM(fuzzRAM, e.Initrd.Start, e.Initrd.Size) {
		t.Fatalf("initrd %+v, kernel %+v", e.Initrd, e.Kernel)
	}
	if e.Regs.RIP < e.Kernel.Start || e.Regs.RIP >= e.Kernel.End() {
		t.Fatalf("entry %#x outside kernel %+v", e.Regs.RIP, e.Kernel)
	}
}

func FuzzLoadELF(f *testing.F) {
	f.Add(defaultELFSpec().build())
	s := defaultELFSpec()
	s.notes = pvhNote(0x1000000, 8)
	f.Add(s.build())
	s = defaultELFSpec()
	s.notes, s.noteSect = nil, append(elfNote("Xen", 6, 0, 16), pvhNote(0x1000010, 4)...)
	f.Add(s.build())
	s = defaultELFSpec()
	s.notes = nil
	f.Add(s.build())
	f.Fuzz(fuzzLoad)
}

func FuzzLoadBzImage(f *testing.F) {
	f.Add(defaultBzSpec().build())
	s := defaultBzSpec()
	s.setupSects, s.relocatable, s.prefAddress = 0, false, 0x200000
	f.Add(s.build())
	s = defaultBzSpec()
	s.headerLen, s.initSize = 0xff, 0x100000
	f.Add(s.build())
	f.Fuzz(fuzzLoad)
}

// FuzzPVHNote drives the note scanner directly: the whole-image fuzzers rarely
// produce a well-formed ELF around a mutated note area.
func FuzzPVHNote(f *testing.F) {
	f.Add(pvhNote(0x1000000, 4))
	f.Add(pvhNote(0x1000000, 8))
	f.Add(append(elfNote("GNU", 3, 7, 20), pvhNote(0x1000000, 4)...))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		entry, ok, err := findPVHNote(bytes.NewReader(b), uint64(len(b)))
		if err != nil && ok {
			t.Fatalf("found entry %#x and error %v", entry, err)
		}
		if ok && len(b) < 12+4+4 {
			t.Fatalf("found entry %#x in %d bytes", entry, len(b))
		}
	})
}
