package boot

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// mpSummary is what Linux's MP parser would learn from the tables.
type mpSummary struct {
	APICIDs   []uint8
	BSP       []uint8
	Buses     []string
	IOAPICIDs []uint8
	IOAPICs   []uint64
	IOInts    int
	IOIntMap  map[uint8]uint8 // source bus IRQ -> IOAPIC pin
	LocInts   []uint8         // interrupt types on LINT0, LINT1
}

// parseMP reads the MP tables back from guest memory the way a kernel would:
// find "_MP_", verify both checksums, walk the entries by type.
func parseMP(t *testing.T, mem *fakeMem) mpSummary {
	t.Helper()
	f := mem.bytes(t, MPTableAddr, 16)
	if string(f[:4]) != "_MP_" {
		t.Fatalf("floating pointer signature %q", f[:4])
	}
	if s := sum(f); s != 0 {
		t.Errorf("floating pointer checksum: bytes sum to %#x", s)
	}
	if f[8] != 1 || f[9] != 4 {
		t.Errorf("floating pointer length %d spec %d, want 1, 4", f[8], f[9])
	}
	phys := uint64(f[4]) | uint64(f[5])<<8 | uint64(f[6])<<16 | uint64(f[7])<<24
	hdr := mem.bytes(t, phys, 44)
	if string(hdr[:4]) != "PCMP" {
		t.Fatalf("config table signature %q", hdr[:4])
	}
	length := int(hdr[4]) | int(hdr[5])<<8
	table := mem.bytes(t, phys, length)
	if s := sum(table); s != 0 {
		t.Errorf("config table checksum: bytes sum to %#x", s)
	}
	if got := mem.u32(t, phys+36); got != LAPICAddr {
		t.Errorf("LAPIC address %#x, want %#x", got, LAPICAddr)
	}
	count := int(hdr[34]) | int(hdr[35])<<8
	s := mpSummary{IOIntMap: map[uint8]uint8{}}
	o := 44
	for range count {
		if o >= length {
			t.Fatalf("entry count %d runs past the table length %d", count, length)
		}
		e := table[o:]
		switch e[0] {
		case 0:
			s.APICIDs = append(s.APICIDs, e[1])
			if e[3]&2 != 0 {
				s.BSP = append(s.BSP, e[1])
			}
			if e[3]&1 == 0 {
				t.Errorf("CPU %d not enabled", e[1])
			}
			o += 20
			continue
		case 1:
			s.Buses = append(s.Buses, string(e[2:8]))
		case 2:
			s.IOAPICIDs = append(s.IOAPICIDs, e[1])
			s.IOAPICs = append(s.IOAPICs, uint64(e[4])|uint64(e[5])<<8|uint64(e[6])<<16|uint64(e[7])<<24)
		case 3:
			s.IOInts++
			if e[6] != s.IOAPICIDs[0] {
				t.Errorf("I/O interrupt for IRQ %d goes to IOAPIC %d", e[5], e[6])
			}
			s.IOIntMap[e[5]] = e[7]
		case 4:
			if e[6] != 0xff || int(e[7]) != len(s.LocInts) {
				t.Errorf("local interrupt entry %x", e[:8])
			}
			s.LocInts = append(s.LocInts, e[1])
		default:
			t.Fatalf("unknown entry type %d at %d", e[0], o)
		}
		o += 8
	}
	if o != length {
		t.Errorf("entries end at %d, table length %d", o, length)
	}
	return s
}

func sum(b []byte) uint8 {
	var s uint8
	for _, c := range b {
		s += c
	}
	return s
}

func TestMPTable(t *testing.T) {
	for _, cpus := range []int{1, 2, 64, MaxCPUs} {
		mem := newFakeMem(128 << 20)
		mem.dirty(MPConfigAddr, LowRAMEnd-MPConfigAddr)
		if err := WriteMPTable(mem, cpus); err != nil {
			t.Fatalf("%d cpus: %v", cpus, err)
		}
		want := mpSummary{
			BSP:       []uint8{0},
			Buses:     []string{"ISA   "},
			IOAPICIDs: []uint8{uint8(cpus)},
			IOAPICs:   []uint64{IOAPICAddr},
			IOInts:    24,
			IOIntMap:  map[uint8]uint8{},
			LocInts:   []uint8{3, 1}, // ExtINT on LINT0, NMI on LINT1
		}
		for i := range cpus {
			want.APICIDs = append(want.APICIDs, uint8(i))
		}
		for irq := range uint8(24) {
			want.IOIntMap[irq] = irq
		}
		if diff := cmp.Diff(want, parseMP(t, mem)); diff != "" {
			t.Errorf("%d cpus: MP table (-want +got):\n%s", cpus, diff)
		}
	}
}

func TestMPTableCPUBounds(t *testing.T) {
	for _, cpus := range []int{-1, 0, MaxCPUs + 1, 1000} {
		err := WriteMPTable(newFakeMem(128<<20), cpus)
		if !errors.Is(err, ErrCPUs) {
			t.Errorf("%d cpus: err = %v, want ErrCPUs", cpus, err)
		}
	}
}

// The configuration area must hold MaxCPUs, so that the APIC ID space, not
// the layout, is what bounds the vCPU count.
func TestMPTableCapacity(t *testing.T) {
	if need := mpFixedSize + mpProcEntrySize*MaxCPUs; need > MPTableAddr-MPConfigAddr {
		t.Errorf("MP table for %d CPUs needs %d bytes, %d reserved", MaxCPUs, need, MPTableAddr-MPConfigAddr)
	}
}
