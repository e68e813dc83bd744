package queue_test

import (
	"errors"
	"testing"

	"github.com/boxd-dev/boxd/virtio/queue"
	"github.com/boxd-dev/boxd/virtio/virtiotest"
)

const (
	next     = virtiotest.DescNext
	write    = virtiotest.DescWrite
	indirect = virtiotest.DescIndirect
)

// desc is one descriptor as a test writes it.
type desc struct {
	addr   uint64
	len    uint32
	flags  uint16
	next   uint16
	inHole bool // place the buffer in the memory hole (addr ignored)
}

// bigMem pretends that everything from 1 TiB up is RAM, so chains whose
// lengths are near 4 GiB can be built without allocating them.
type bigMem struct{ *virtiotest.Memory }

func (m bigMem) Slice(gpa, n uint64) ([]byte, error) {
	if gpa >= 1<<40 && gpa+n >= gpa {
		return nil, nil
	}
	return m.Memory.Slice(gpa, n)
}

func TestMalformedChains(t *testing.T) {
	const (
		size = 8
		hole = memBase + 0x30000
	)
	tests := []struct {
		name  string
		head  uint16
		descs []desc // descriptor i of the queue's table
		table []desc // indirect table written at a fixed address, if any
		want  error  // nil: the chain is valid
	}{
		{name: "buffer below RAM", descs: []desc{{addr: 0x100, len: 16}}, want: queue.ErrInvalidChain},
		{name: "buffer past end of RAM", descs: []desc{{addr: memBase + memSize - 8, len: 16}}, want: queue.ErrInvalidChain},
		{name: "buffer in hole", descs: []desc{{inHole: true, len: 16}}, want: queue.ErrInvalidChain},
		{name: "address wraps", descs: []desc{{addr: 1<<64 - 8, len: 16}}, want: queue.ErrInvalidChain},
		{name: "head out of range", head: size, descs: []desc{{addr: memBase, len: 16}}, want: queue.ErrInvalidChain},
		{name: "next out of range", descs: []desc{{addr: memBase, len: 16, flags: next, next: size}}, want: queue.ErrInvalidChain},
		{name: "self loop", descs: []desc{{addr: memBase, len: 16, flags: next, next: 0}}, want: queue.ErrInvalidChain},
		{name: "loop", descs: []desc{
			{addr: memBase, len: 1, flags: next, next: 1},
			{addr: memBase, len: 1, flags: next, next: 2},
			{addr: memBase, len: 1, flags: next, next: 1},
		}, want: queue.ErrInvalidChain},
		{name: "chain uses whole table", descs: func() []desc {
			var ds []desc
			for i := range size {
				ds = append(ds, desc{addr: memBase, len: 1, flags: next, next: uint16(i + 1)})
			}
			ds[size-1].flags = 0
			return ds
		}(), want: nil},
		{name: "readable after writable", descs: []desc{
			{addr: memBase, len: 1, flags: write | next, next: 1},
			{addr: memBase, len: 1},
		}, want: queue.ErrInvalidChain},
		{name: "zero-length readable after writable", descs: []desc{
			{addr: memBase, len: 1, flags: write | next, next: 1},
			{addr: memBase, len: 0},
		}, want: queue.ErrInvalidChain},
		{name: "huge buffer", descs: []desc{{addr: memBase, len: 0xffff_ffff}}, want: queue.ErrInvalidChain},
		{name: "chain of 4 GiB", descs: []desc{
			{addr: 1 << 40, len: 0xffff_ffff, flags: next, next: 1},
			{addr: 1 << 41, len: 1},
		}, want: queue.ErrInvalidChain},
		{name: "chain just under 4 GiB", descs: []desc{
			{addr: 1 << 40, len: 0xffff_fff0, flags: next, next: 1},
			{addr: 1 << 41, len: 0xf},
		}, want: nil},
		{name: "indirect", descs: []desc{{len: 32, flags: indirect}}, table: []desc{
			{addr: memBase, len: 4, flags: next, next: 1},
			{addr: memBase, len: 4, flags: write},
		}, want: nil},
		{name: "indirect with next", descs: []desc{
			{len: 16, flags: indirect | next, next: 1},
			{addr: memBase, len: 1},
		}, table: []desc{{addr: memBase, len: 4}}, want: queue.ErrInvalidChain},
		{name: "indirect inside indirect", descs: []desc{{len: 32, flags: indirect}}, table: []desc{
			{addr: memBase, len: 4, flags: next, next: 1},
			{len: 16, flags: indirect},
		}, want: queue.ErrInvalidChain},
		{name: "indirect length not multiple of 16", descs: []desc{{len: 24, flags: indirect}}, table: []desc{{addr: memBase, len: 4}}, want: queue.ErrInvalidChain},
		{name: "indirect length zero", descs: []desc{{len: 0, flags: indirect}}, table: []desc{{addr: memBase, len: 4}}, want: queue.ErrInvalidChain},
		{name: "indirect longer than queue", descs: []desc{{len: 16 * (size + 1), flags: indirect}}, table: []desc{{addr: memBase, len: 4}}, want: queue.ErrInvalidChain},
		{name: "indirect table outside RAM", descs: []desc{{addr: memBase + memSize - 8, len: 16, flags: indirect}}, want: queue.ErrInvalidChain},
		{name: "indirect next out of table", descs: []desc{{len: 32, flags: indirect}}, table: []desc{
			{addr: memBase, len: 4, flags: next, next: 2},
			{addr: memBase, len: 4},
		}, want: queue.ErrInvalidChain},
		{name: "indirect loop", descs: []desc{{len: 32, flags: indirect}}, table: []desc{
			{addr: memBase, len: 4, flags: next, next: 1},
			{addr: memBase, len: 4, flags: next, next: 0},
		}, want: queue.ErrInvalidChain},
		{name: "writable then indirect readable", descs: []desc{
			{addr: memBase, len: 4, flags: write | next, next: 1},
			{len: 16, flags: indirect},
		}, table: []desc{{addr: memBase, len: 4}}, want: queue.ErrInvalidChain},
		{name: "indirect buffer in hole", descs: []desc{{len: 16, flags: indirect}}, table: []desc{{inHole: true, len: 4}}, want: queue.ErrInvalidChain},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := virtiotest.NewMemory(memBase, memSize)
			raw.AddHole(hole, 0x1000)
			mem := bigMem{raw}
			d := virtiotest.NewDriver(raw, size, region, 0x20000)
			tableAddr := d.Alloc(16 * 16)
			place := func(ds desc) desc {
				if ds.inHole {
					ds.addr = hole + 8
				}
				if ds.flags&indirect != 0 && ds.addr == 0 {
					ds.addr = tableAddr
				}
				return ds
			}
			for i, ds := range tt.descs {
				ds = place(ds)
				d.WriteDesc(uint16(i), ds.addr, ds.len, ds.flags, ds.next)
			}
			for i, ds := range tt.table {
				ds = place(ds)
				var b [16]byte
				putDesc(b[:], ds.addr, ds.len, ds.flags, ds.next)
				d.Fill(queue.Buffer{Addr: tableAddr + 16*uint64(i), Len: 16}, b[:])
			}
			d.PushAvail(tt.head)
			q, err := queue.New(d.State(), mem)
			if err != nil {
				t.Fatal(err)
			}
			c, err := q.Pop(mem)
			if tt.want == nil {
				if err != nil || c == nil {
					t.Fatalf("Pop = %v, %v; want a valid chain", c, err)
				}
			} else {
				if !errors.Is(err, tt.want) {
					t.Fatalf("Pop = %v, %v; want %v", c, err, tt.want)
				}
				var ce *queue.ChainError
				if got := errors.As(err, &ce); got != (tt.head < size) || got && ce.Head != tt.head {
					t.Fatalf("Pop error %v: ChainError %v (head %d)", err, got, tt.head)
				}
				if ce != nil {
					// The device can hand the broken chain back.
					if err := q.Push(mem, ce.Head, 0); err != nil {
						t.Errorf("Push(broken head): %v", err)
					}
				}
			}
			// The queue moved past the entry either way.
			if c, err := q.Pop(mem); c != nil || err != nil {
				t.Errorf("next Pop = %v, %v; want empty", c, err)
			}
		})
	}
}

func TestBadAvailIdx(t *testing.T) {
	mem, d, q := setup(t, 8, true)
	d.SetAvailIdx(9) // nine chains claimed on an eight-entry ring
	for range 3 {
		if c, err := q.Pop(mem); !errors.Is(err, queue.ErrAvailIdx) {
			t.Fatalf("Pop = %v, %v; want ErrAvailIdx", c, err)
		}
	}
	d.SetAvailIdx(0xffff) // "behind" the device: also more than size ahead modulo 2^16
	if _, err := q.Pop(mem); !errors.Is(err, queue.ErrAvailIdx) {
		t.Fatalf("Pop = %v; want ErrAvailIdx", err)
	}
}

func TestRingInHoleAfterRestore(t *testing.T) {
	// Rings validated at activation cannot move, but memory could be
	// replaced under a restored queue; accesses then fail cleanly.
	mem, d, q := setup(t, 8, false)
	if _, err := d.Add([]queue.Buffer{d.Buf(8, nil)}, nil); err != nil {
		t.Fatal(err)
	}
	mem.AddHole(d.AvailAddr(), 8)
	if _, err := q.Pop(mem); !errors.Is(err, queue.ErrRing) {
		t.Errorf("Pop with avail ring in a hole = %v, want ErrRing", err)
	}
}

func TestChainBuffers(t *testing.T) {
	mem := virtiotest.NewMemory(0, 0x1000)
	bs := queue.Buffers{{Addr: 0x100, Len: 4}, {Addr: 0x200, Len: 2}, {Addr: 0x300, Len: 6}}
	if got := bs.Len(); got != 12 {
		t.Errorf("Len = %d", got)
	}
	sub, err := bs.Range(3, 5)
	if err != nil {
		t.Fatal(err)
	}
	want := queue.Buffers{{Addr: 0x103, Len: 1}, {Addr: 0x200, Len: 2}, {Addr: 0x300, Len: 2}}
	if diff := cmpDiff(want, sub); diff != "" {
		t.Errorf("Range(3, 5) (-want +got):\n%s", diff)
	}
	if _, err := bs.Range(10, 3); err == nil {
		t.Error("Range past the end succeeded")
	}
	if _, err := bs.Range(1<<63, 1<<63); err == nil {
		t.Error("Range with overflowing bounds succeeded")
	}
	if n, err := bs.WriteAt(mem, []byte("abcdefghijkl"), 0); err != nil || n != 12 {
		t.Fatalf("WriteAt = %d, %v", n, err)
	}
	p := make([]byte, 4)
	if _, err := bs.ReadAt(mem, p, 2); err != nil || string(p) != "cdef" {
		t.Errorf("ReadAt(2) = %q, %v", p, err)
	}
	c := &queue.Chain{Readable: bs}
	all, err := c.ReadAll(mem, 12)
	if err != nil || string(all) != "abcdefghijkl" {
		t.Errorf("ReadAll = %q, %v", all, err)
	}
	if _, err := c.ReadAll(mem, 11); !errors.Is(err, queue.ErrTooLarge) {
		t.Errorf("ReadAll over the bound = %v, want ErrTooLarge", err)
	}
}
