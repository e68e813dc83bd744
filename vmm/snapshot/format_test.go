package snapshot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"hash/crc32"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/boxd-dev/boxd/vmm/kvm"
)

var update = flag.Bool("update", false, "rewrite the golden state files in testdata/")

// sample is a deterministic state with every field set to something other
// than zero, so a field the encoder forgets shows up in the round trip.
func sample(ncpu int) *State {
	s := &State{MemSize: 256 << 20}
	for i := range ncpu {
		c := VCPU{ID: uint32(i), MPState: uint32(i % 2 * kvm.MPStateHalted), TSCKHz: 2_000_000}
		c.CPUID = []kvm.CPUIDEntry{{Function: 1, EAX: 0x806f8, EBX: uint32(i) << 24}, {Function: 7, Index: 0, Flags: kvm.CPUIDFlagSignificantIndex, EBX: 0x219c07ab}}
		c.Regs = kvm.Regs{RAX: 1, RBX: 2, RCX: 3, R15: 15, RIP: 0x10000 + uint64(i), RFLAGS: 0x202, RSP: 0x1ff000}
		c.Sregs.CS = kvm.Segment{Base: 0, Limit: 0xffffffff, Selector: 0x1b, Type: 0xb, Present: 1, DPL: 3, S: 1, L: 1, G: 1}
		c.Sregs.GDT = kvm.DTable{Base: 0x7000, Limit: 47}
		c.Sregs.CR0, c.Sregs.CR3, c.Sregs.CR4, c.Sregs.EFER = 0x80000031, 0x1000, 0x20, 0x500
		c.Sregs.APICBase = 0xfee00900
		c.FPU.FCW, c.FPU.MXCSR = 0x37f, 0x1f80
		c.FPU.XMM[3][7] = 0x42
		c.XSave = make(kvm.XSave, 4096)
		for j := range c.XSave {
			c.XSave[j] = byte(j * 7)
		}
		c.XCRs[0], c.XCRs[8] = 1, 7
		c.MSRs = []kvm.MSR{{Index: 0x10, Data: 123456789}, {Index: 0xc0000080, Data: 0x500}, {Index: 0x1a0, Data: 1}}
		c.LAPIC[0x20], c.LAPIC[0xf0] = byte(i), 0xff
		c.Events[0], c.Events[63] = 1, 2
		c.DebugRegs[0], c.DebugRegs[40] = 3, 4
		s.VCPUs = append(s.VCPUs, c)
	}
	binary.LittleEndian.PutUint32(s.VM.PICMaster[:], kvm.IRQChipPICMaster)
	binary.LittleEndian.PutUint32(s.VM.PICSlave[:], kvm.IRQChipPICSlave)
	binary.LittleEndian.PutUint32(s.VM.IOAPIC[:], kvm.IRQChipIOAPIC)
	s.VM.PICMaster[8], s.VM.IOAPIC[519] = 0x11, 0x22
	s.VM.PIT[0], s.VM.PIT[111] = 5, 6
	s.VM.Clock = kvm.ClockData{Clock: 987654321, Flags: 2, Realtime: 1, HostTSC: 42}
	s.SetDevice("serial", []byte{1, 2, 3})
	s.SetDevice("virtio-blk0", bytes.Repeat([]byte{9}, 100))
	return s
}

// sampleV2 is sample with the fields version 2 added.
func sampleV2(ncpu int) *State {
	s := sample(ncpu)
	s.SavedAt = 1_764_400_000_123_456_789
	return s
}

func TestRoundTrip(t *testing.T) {
	for _, n := range []int{1, 2, 8} {
		s := sampleV2(n)
		b, err := Encode(s)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(s, got); d != "" {
			t.Errorf("%d vcpus: decode(encode(s)) (-want +got):\n%s", n, d)
		}
		got2, err := Read(bytes.NewReader(b))
		if err != nil || !cmp.Equal(s, got2) {
			t.Errorf("Read: %v, equal %v", err, cmp.Equal(s, got2))
		}
	}
}

// The decoder keeps reading every version it ever wrote. -update rewrites
// only the current version's files, and only when the encoder's output
// changed on purpose within that version (a released version's bytes never
// change: that is a new version).
func TestGolden(t *testing.T) {
	for _, tc := range []struct {
		file     string
		version  uint32
		compress bool
		want     *State
	}{
		{"v1.snap", 1, false, sample(2)},
		{"v2.snap", 2, false, sampleV2(2)},
		{"v2-lz4.snap", 2, true, sampleV2(2)},
	} {
		path := filepath.Join("testdata", tc.file)
		if *update && tc.version == Version {
			b, err := encode(tc.want, tc.compress)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("decode golden %s: %v", tc.file, err)
		}
		if d := cmp.Diff(tc.want, got); d != "" {
			t.Errorf("golden %s (-want +got):\n%s", tc.file, d)
		}
		if h, _ := checkHeader(b); h.version != tc.version || (h.flags&FlagLZ4 != 0) != tc.compress {
			t.Errorf("golden %s: version %d flags %#x, want version %d, compressed %v", tc.file, h.version, h.flags, tc.version, tc.compress)
		}
		if tc.version != Version {
			continue
		}
		enc, err := encode(tc.want, tc.compress)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(enc, b) {
			t.Errorf("Encode no longer writes the golden %s bytes: bump Version and add a golden file", tc.file)
		}
	}
}

func TestCompressedRoundTrip(t *testing.T) {
	s := sampleV2(8)
	plain, err := Encode(s)
	if err != nil {
		t.Fatal(err)
	}
	z, err := EncodeCompressed(s)
	if err != nil {
		t.Fatal(err)
	}
	if len(z) >= len(plain) {
		t.Errorf("compressed %d bytes, plain %d: no gain", len(z), len(plain))
	}
	var w bytes.Buffer
	if err := WriteCompressed(&w, s); err != nil {
		t.Fatal(err)
	}
	got, err := Read(&w)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(s, got); d != "" {
		t.Errorf("read(write compressed) (-want +got):\n%s", d)
	}
}

// A compressed body that lies about its length, decompresses to something
// else, or is corrupt under a valid outer checksum is refused; a claimed
// length beyond what the block can hold is refused before it is allocated.
func TestDecodeRefusesCompressed(t *testing.T) {
	good, err := EncodeCompressed(sampleV2(1))
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"claims 256 MiB", mod(func(b []byte) []byte { le.PutUint64(b[HeaderSize:], MaxBodySize); return reseal(b) })},
		{"claims 1 TiB", mod(func(b []byte) []byte { le.PutUint64(b[HeaderSize:], 1<<40); return reseal(b) })},
		{"claims one byte more", mod(func(b []byte) []byte { le.PutUint64(b[HeaderSize:], le.Uint64(b[HeaderSize:])+1); return reseal(b) })},
		{"claims one byte less", mod(func(b []byte) []byte { le.PutUint64(b[HeaderSize:], le.Uint64(b[HeaderSize:])-1); return reseal(b) })},
		{"inner checksum", mod(func(b []byte) []byte { b[HeaderSize+8] ^= 1; return reseal(b) })},
		{"block bit flip", mod(func(b []byte) []byte { b[len(b)-40] ^= 0x40; return reseal(b) })},
		{"no prefix", mod(func(b []byte) []byte { return reseal(b[:HeaderSize+5]) })},
		{"flag on version 1", mod(func(b []byte) []byte { le.PutUint32(b[8:], 1); return reseal(b) })},
		{"unknown flag", mod(func(b []byte) []byte { le.PutUint32(b[12:], 3); return reseal(b) })},
		{"outer bit flip", mod(func(b []byte) []byte { b[len(b)-40] ^= 0x40; return b })},
	} {
		s, err := Decode(tc.b)
		if err == nil || s != nil || !errors.Is(err, ErrFormat) {
			t.Errorf("%s: Decode = %v, %v; want an ErrFormat error and no state", tc.name, s != nil, err)
		}
	}
	// A hostile 1 KiB file claiming MaxBodySize is refused without
	// allocating it.
	bomb := mod(func(b []byte) []byte { le.PutUint64(b[HeaderSize:], MaxBodySize); return reseal(b) })
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	Decode(bomb)
	runtime.ReadMemStats(&ms1)
	if d := ms1.TotalAlloc - ms0.TotalAlloc; d > 1<<20 {
		t.Errorf("decoding a lying 1 KiB file allocated %d bytes", d)
	}
}

// reseal recomputes both checksums, so a test can reach the body validation
// with a structurally bad body.
func reseal(b []byte) []byte {
	le := binary.LittleEndian
	le.PutUint64(b[16:], uint64(len(b)-HeaderSize))
	le.PutUint32(b[24:], crc32.Checksum(b[HeaderSize:], castagnoli))
	le.PutUint32(b[28:], crc32.Checksum(b[:28], castagnoli))
	return b
}

func TestDecodeRefuses(t *testing.T) {
	good, err := Encode(sample(1))
	if err != nil {
		t.Fatal(err)
	}
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"short header", good[:20]},
		{"foreign magic", mod(func(b []byte) []byte { copy(b, "\x7fELF\x02\x01\x01\x00"); return b })},
		{"header bit flip", mod(func(b []byte) []byte { b[17] ^= 1; return b })},
		{"body bit flip", mod(func(b []byte) []byte { b[HeaderSize+100] ^= 0x10; return b })},
		{"truncated body", good[:len(good)-1]},
		{"extra byte", append(bytes.Clone(good), 0)},
		{"future version", mod(func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[8:], Version+1)
			binary.LittleEndian.PutUint32(b[28:], crc32.Checksum(b[:28], castagnoli))
			return b
		})},
		{"trailing record bytes", mod(func(b []byte) []byte { return reseal(append(b, 0, 0)) })},
		{"vcpu count huge", mod(func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[HeaderSize+16:], 1<<30)
			return reseal(b)
		})},
		{"zero vcpus", mod(func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[HeaderSize+16:], 0)
			return reseal(b)
		})},
		{"vcpu id wrong", mod(func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[HeaderSize+20:], 5)
			return reseal(b)
		})},
		{"negative saved-at", mod(func(b []byte) []byte {
			binary.LittleEndian.PutUint64(b[HeaderSize+8:], 1<<63)
			return reseal(b)
		})},
	} {
		s, err := Decode(tc.b)
		if err == nil || s != nil {
			t.Errorf("%s: Decode = %v, %v; want an error and no state", tc.name, s != nil, err)
			continue
		}
		if !errors.Is(err, ErrFormat) {
			t.Errorf("%s: error %v does not wrap ErrFormat", tc.name, err)
		}
		// Read stops at the end of one file, so bytes after it are the
		// caller's business, not corruption.
		if _, err := Read(bytes.NewReader(tc.b)); err == nil && tc.name != "extra byte" {
			t.Errorf("%s: Read accepted it", tc.name)
		}
	}
}

func TestEncodeRefusesInvalid(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    func(s *State)
	}{
		{"duplicate device", func(s *State) { s.Devices = append(s.Devices, Device{Name: "serial"}) }},
		{"empty device name", func(s *State) { s.Devices = append(s.Devices, Device{}) }},
		{"short xsave", func(s *State) { s.VCPUs[0].XSave = s.VCPUs[0].XSave[:100] }},
		{"bad mp state", func(s *State) { s.VCPUs[0].MPState = 99 }},
		{"irqchip id", func(s *State) { s.VM.IOAPIC[0] = 0 }},
		{"memory size", func(s *State) { s.MemSize = 4095 }},
		{"saved at", func(s *State) { s.SavedAt = -1 }},
	} {
		s := sample(1)
		tc.f(s)
		if _, err := Encode(s); err == nil {
			t.Errorf("%s: Encode accepted an invalid state", tc.name)
		}
	}
}

func TestDeviceAccessors(t *testing.T) {
	var s State
	s.SetDevice("a", []byte{1})
	s.SetDevice("b", []byte{2})
	s.SetDevice("a", []byte{3})
	if d, ok := s.Device("a"); !ok || !bytes.Equal(d, []byte{3}) {
		t.Errorf("Device(a) = %v, %v", d, ok)
	}
	if _, ok := s.Device("c"); ok {
		t.Error("Device(c) found")
	}
	if len(s.Devices) != 2 {
		t.Errorf("%d devices, want 2", len(s.Devices))
	}
}

// FuzzDecodeSnapshot: no input panics the decoder or makes it allocate past
// its limits, and whatever it accepts re-encodes to a state file that decodes
// to the same State; an accepted uncompressed current-version file re-encodes
// to the same bytes (nothing is silently dropped or invented).
func FuzzDecodeSnapshot(f *testing.F) {
	for _, n := range []int{1, 2} {
		b, _ := Encode(sampleV2(n))
		f.Add(b)
		b, _ = EncodeCompressed(sampleV2(n))
		f.Add(b)
	}
	for _, name := range []string{"v1.snap", "v2.snap", "v2-lz4.snap"} {
		if b, err := os.ReadFile(filepath.Join("testdata", name)); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(Magic))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Decode(b)
		if err != nil {
			if s != nil {
				t.Fatal("state returned with an error")
			}
			return
		}
		h, _ := checkHeader(b)
		again, err := encode(s, h.flags&FlagLZ4 != 0)
		if err != nil {
			t.Fatalf("accepted state does not re-encode: %v", err)
		}
		if h.version == Version && h.flags == 0 && !bytes.Equal(again, b) {
			t.Fatal("re-encoding an accepted file gives different bytes")
		}
		s2, err := Decode(again)
		if err != nil {
			t.Fatalf("re-encoded state does not decode: %v", err)
		}
		if d := cmp.Diff(s, s2); d != "" {
			t.Fatalf("decode(encode(decode(b))) differs (-first +second):\n%s", d)
		}
	})
}
