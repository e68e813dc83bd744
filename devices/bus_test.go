package devices_test

import (
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/boxd-dev/boxd/devices"
	"github.com/google/go-cmp/cmp"
)

// recorder is a device that remembers its last access and answers reads with
// its id in every byte.
type recorder struct {
	id     byte
	mu     sync.Mutex
	last   access
	writes atomic.Int64
}

type access struct {
	write  bool
	offset uint64
	data   string
}

func (r *recorder) Read(offset uint64, data []byte) {
	for i := range data {
		data[i] = r.id
	}
	r.mu.Lock()
	r.last = access{offset: offset, data: string(data)}
	r.mu.Unlock()
}

func (r *recorder) Write(offset uint64, data []byte) {
	r.writes.Add(1)
	r.mu.Lock()
	r.last = access{write: true, offset: offset, data: string(data)}
	r.mu.Unlock()
}

func (r *recorder) lastAccess() access {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

func TestInsert(t *testing.T) {
	tests := []struct {
		name       string
		base, size uint64
		want       error // nil, ErrOverlap or ErrRange
	}{
		// Existing ranges: [0x100, 0x107] and [0x200, 0x2ff].
		{"disjoint below", 0x0, 0x100, nil},
		{"between", 0x108, 0xf8, nil},
		{"disjoint above", 0x300, 0x10, nil},
		{"same base", 0x100, 1, devices.ErrOverlap},
		{"ends on first byte", 0xf0, 0x11, devices.ErrOverlap},
		{"starts on last byte", 0x107, 4, devices.ErrOverlap},
		{"inside", 0x210, 4, devices.ErrOverlap},
		{"covers", 0x1ff, 0x102, devices.ErrOverlap},
		{"spans both", 0x0, 0x1000, devices.ErrOverlap},
		{"zero size", 0x500, 0, devices.ErrRange},
		{"wraps", math.MaxUint64 - 3, 8, devices.ErrRange},
		{"ends at top of address space", math.MaxUint64 - 7, 8, nil},
		{"whole address space", 0, math.MaxUint64, devices.ErrOverlap},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b devices.Bus
			for _, r := range [][2]uint64{{0x100, 8}, {0x200, 0x100}} {
				if err := b.Insert(r[0], r[1], &recorder{}); err != nil {
					t.Fatalf("setup Insert(%#x, %#x): %v", r[0], r[1], err)
				}
			}
			err := b.Insert(tt.base, tt.size, &recorder{})
			if tt.want == nil && err != nil {
				t.Fatalf("Insert(%#x, %#x) = %v, want nil", tt.base, tt.size, err)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("Insert(%#x, %#x) = %v, want %v", tt.base, tt.size, err, tt.want)
			}
		})
	}
}

func TestInsertNil(t *testing.T) {
	var b devices.Bus
	if err := b.Insert(0, 1, nil); err == nil {
		t.Fatal("Insert of a nil device succeeded")
	}
}

func TestRouting(t *testing.T) {
	var b devices.Bus
	com1 := &recorder{id: 1}
	kbd := &recorder{id: 2}
	top := &recorder{id: 3}
	mustInsert(t, &b, 0x3f8, 8, com1)
	mustInsert(t, &b, 0x60, 5, kbd)
	mustInsert(t, &b, math.MaxUint64-7, 8, top)

	tests := []struct {
		name   string
		addr   uint64
		n      int
		dev    *recorder // nil: a miss
		offset uint64
	}{
		{"first byte", 0x3f8, 1, com1, 0},
		{"last byte", 0x3ff, 1, com1, 7},
		{"word at end", 0x3fe, 2, com1, 6},
		{"quad filling device", 0x3f8, 8, com1, 0},
		{"straddles end", 0x3fe, 4, nil, 0},
		{"straddles start", 0x3f7, 2, nil, 0},
		{"just past end", 0x400, 1, nil, 0},
		{"just before", 0x3f7, 1, nil, 0},
		{"other device", 0x64, 1, kbd, 4},
		{"below all", 0, 1, nil, 0},
		{"hole", 0x100, 4, nil, 0},
		{"odd length", 0x3f8, 3, nil, 0},
		{"zero length", 0x3f8, 0, nil, 0},
		{"too long", 0x3f8, 16, nil, 0},
		{"top of space", math.MaxUint64 - 7, 8, top, 0},
		{"last address", math.MaxUint64, 1, top, 7},
		{"wrapping access", math.MaxUint64, 2, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, d := range []*recorder{com1, kbd, top} {
				d.last = access{}
			}
			data := make([]byte, tt.n)
			for i := range data {
				data[i] = 0x5a
			}
			ok := b.Read(tt.addr, data)
			if ok != (tt.dev != nil) {
				t.Fatalf("Read(%#x, %d) = %v, want %v", tt.addr, tt.n, ok, tt.dev != nil)
			}
			wantFill := byte(0xff)
			if tt.dev != nil {
				wantFill = tt.dev.id
				if got, want := tt.dev.lastAccess(), (access{offset: tt.offset, data: string(data)}); got != want {
					t.Errorf("device saw %+v, want %+v", got, want)
				}
			}
			for i, v := range data {
				if v != wantFill {
					t.Fatalf("data[%d] = %#x, want %#x", i, v, wantFill)
				}
			}

			payload := make([]byte, tt.n)
			for i := range payload {
				payload[i] = byte(i + 1)
			}
			writes := com1.writes.Load() + kbd.writes.Load() + top.writes.Load()
			ok = b.Write(tt.addr, payload)
			if ok != (tt.dev != nil) {
				t.Fatalf("Write(%#x, %d) = %v, want %v", tt.addr, tt.n, ok, tt.dev != nil)
			}
			after := com1.writes.Load() + kbd.writes.Load() + top.writes.Load()
			if tt.dev == nil {
				if after != writes {
					t.Errorf("a refused write reached a device")
				}
				return
			}
			if diff := cmp.Diff(access{write: true, offset: tt.offset, data: string(payload)}, tt.dev.lastAccess(), cmp.AllowUnexported(access{})); diff != "" {
				t.Errorf("device saw (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEmptyBus(t *testing.T) {
	var b devices.Bus
	data := []byte{0}
	if b.Read(0x3f8, data) || data[0] != 0xff {
		t.Errorf("empty bus Read = true or data %#x", data[0])
	}
	if b.Write(0x3f8, data) {
		t.Error("empty bus Write = true")
	}
}

func TestIgnore(t *testing.T) {
	var b devices.Bus
	mustInsert(t, &b, 0x80, 1, devices.Ignore{})
	mustInsert(t, &b, 0x81, 1, devices.Ignore{Fill: 0xff})
	data := []byte{0x5a}
	if !b.Read(0x80, data) || data[0] != 0 {
		t.Errorf("Ignore{} read: %#x", data[0])
	}
	if !b.Read(0x81, data) || data[0] != 0xff {
		t.Errorf("Ignore{0xff} read: %#x", data[0])
	}
	if !b.Write(0x80, data) {
		t.Error("write to Ignore refused")
	}
}

// TestLookupDoesNotAllocate guards the hot path: every vCPU exit goes through it.
func TestLookupDoesNotAllocate(t *testing.T) {
	var b devices.Bus
	for i := range uint64(64) {
		mustInsert(t, &b, 0x1000*i, 0x100, devices.Ignore{})
	}
	data := make([]byte, 4)
	allocs := testing.AllocsPerRun(1000, func() {
		b.Read(0x1f004, data)
		b.Write(0x1f004, data)
		b.Read(0x1f804, data) // miss
	})
	if allocs != 0 {
		t.Errorf("%v allocations per lookup, want 0", allocs)
	}
}

// TestConcurrentInsertAndAccess inserts devices while other goroutines access
// ones inserted before: under -race it checks the copy-on-write table, and no
// access to an already-present device may ever miss.
func TestConcurrentInsertAndAccess(t *testing.T) {
	var b devices.Bus
	fixed := &recorder{id: 7}
	mustInsert(t, &b, 0x8000, 0x100, fixed)

	var (
		wg     sync.WaitGroup
		stop   atomic.Bool
		misses atomic.Int64
	)
	for g := range 4 {
		wg.Go(func() {
			data := make([]byte, 4)
			for !stop.Load() {
				if !b.Read(0x8000+uint64(g*4), data) || !b.Write(0x8010, data) {
					misses.Add(1)
				}
			}
		})
	}
	for i := range uint64(500) {
		if err := b.Insert(0x10000+i*0x10, 0x10, &recorder{}); err != nil {
			t.Errorf("Insert %d: %v", i, err)
		}
		// Also race inserts that must fail.
		if err := b.Insert(0x8080, 1, &recorder{}); !errors.Is(err, devices.ErrOverlap) {
			t.Errorf("overlapping Insert = %v", err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if n := misses.Load(); n != 0 {
		t.Errorf("%d accesses to a present device missed", n)
	}
	data := []byte{0}
	if !b.Read(0x10000+499*0x10+0xf, data) {
		t.Error("last inserted device not reachable")
	}
}

func mustInsert(t *testing.T, b *devices.Bus, base, size uint64, d devices.Device) {
	t.Helper()
	if err := b.Insert(base, size, d); err != nil {
		t.Fatalf("Insert(%#x, %#x): %v", base, size, err)
	}
}

// FuzzBus inserts fuzz-chosen ranges and routes fuzz-chosen accesses, checking
// both against a linear-scan model of the bus.
func FuzzBus(f *testing.F) {
	f.Add([]byte{0, 0x10, 8, 0, 0x20, 8, 1, 0x14, 2, 1, 0x17, 4, 1, 0x18, 1})
	f.Add([]byte{0, 0xf8, 8, 1, 0xff, 1, 1, 0xfe, 2, 0, 0, 0, 1, 0, 8})
	f.Add([]byte{0, 0, 0xff, 0, 0x80, 1, 1, 0x7f, 8})
	f.Fuzz(func(t *testing.T, script []byte) {
		type span struct {
			base, last uint64
			dev        *recorder
		}
		var (
			b     devices.Bus
			model []span
		)
		// Addresses are scaled into the top of the 64-bit space so wraparound
		// is exercised, as are ordinary low addresses.
		addr := func(v byte, high bool) uint64 {
			if high {
				return math.MaxUint64 - 0xff + uint64(v)
			}
			return uint64(v)
		}
		for len(script) >= 3 {
			op, a, n := script[0], script[1], script[2]
			script = script[3:]
			high := op&0x80 != 0
			switch op & 3 {
			case 0: // insert [a, a+n)
				base, size := addr(a, high), uint64(n)
				d := &recorder{id: byte(len(model) + 1)}
				err := b.Insert(base, size, d)
				wantErr := size == 0 || base+size-1 < base
				for _, s := range model {
					if !wantErr && base <= s.last && s.base <= base+size-1 {
						wantErr = true
					}
				}
				if (err != nil) != wantErr {
					t.Fatalf("Insert(%#x, %d) = %v, model says error=%v", base, size, err, wantErr)
				}
				if err == nil {
					model = append(model, span{base, base + size - 1, d})
				}
			default: // read (1) or write (2, 3) of length n%9 at a
				at, length := addr(a, high), int(n%9)
				var want *recorder
				var off uint64
				if length == 1 || length == 2 || length == 4 || length == 8 {
					for _, s := range model {
						if at >= s.base && at <= s.last && uint64(length-1) <= s.last-at {
							want, off = s.dev, at-s.base
						}
					}
				}
				data := make([]byte, length)
				var ok bool
				if op&3 == 1 {
					ok = b.Read(at, data)
				} else {
					ok = b.Write(at, data)
				}
				if ok != (want != nil) {
					t.Fatalf("access %#x+%d: bus says %v, model says %v", at, length, ok, want != nil)
				}
				if ok && want.lastAccess().offset != off {
					t.Fatalf("access %#x+%d: device saw offset %#x, want %#x", at, length, want.lastAccess().offset, off)
				}
			}
		}
	})
}

func BenchmarkBusRead(b *testing.B) {
	var bus devices.Bus
	for i := range uint64(32) {
		if err := bus.Insert(0xd000_0000+0x1000*i, 0x1000, devices.Ignore{}); err != nil {
			b.Fatal(err)
		}
	}
	data := make([]byte, 4)
	for b.Loop() {
		bus.Read(0xd001_7004, data)
	}
}
