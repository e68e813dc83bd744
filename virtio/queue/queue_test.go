package queue_test

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/boxd-dev/boxd/virtio/queue"
	"github.com/boxd-dev/boxd/virtio/virtiotest"
)

const (
	memBase = 0x10000
	memSize = 0x40000
	region  = memBase
)

// setup returns fake memory, a mock driver with a queue of the given size and
// the device-side queue over the same rings.
func setup(t testing.TB, size uint16, eventIdx bool) (*virtiotest.Memory, *virtiotest.Driver, *queue.Queue) {
	t.Helper()
	mem := virtiotest.NewMemory(memBase, memSize)
	d := virtiotest.NewDriver(mem, size, region, memSize)
	d.SetEventIdx(eventIdx)
	q, err := queue.New(d.State(), mem)
	if err != nil {
		t.Fatalf("queue.New: %v", err)
	}
	return mem, d, q
}

func mustPop(t *testing.T, mem *virtiotest.Memory, q *queue.Queue) *queue.Chain {
	t.Helper()
	c, err := q.Pop(mem)
	if err != nil {
		t.Fatalf("Pop: %v", err)
	}
	if c == nil {
		t.Fatal("Pop: ring empty, want a chain")
	}
	return c
}

func TestPopChains(t *testing.T) {
	for _, indirect := range []bool{false, true} {
		name := map[bool]string{false: "direct", true: "indirect"}[indirect]
		t.Run(name, func(t *testing.T) {
			mem, d, q := setup(t, 8, false)
			r1 := d.Buf(16, []byte("header-0123456789"))
			r2 := d.Buf(100, []byte("payload"))
			w1 := d.Buf(512, nil)
			w2 := d.Buf(1, nil)
			add := d.Add
			if indirect {
				add = d.AddIndirect
			}
			head, err := add([]queue.Buffer{r1, r2}, []queue.Buffer{w1, w2})
			if err != nil {
				t.Fatal(err)
			}
			c := mustPop(t, mem, q)
			want := &queue.Chain{Head: head, Readable: queue.Buffers{r1, r2}, Writable: queue.Buffers{w1, w2}}
			if diff := cmp.Diff(want, c); diff != "" {
				t.Errorf("chain (-want +got):\n%s", diff)
			}
			if c, err := q.Pop(mem); c != nil || err != nil {
				t.Errorf("second Pop = %v, %v; want empty", c, err)
			}
			if _, err := c.Writable.WriteAt(mem, []byte{0xaa}, 512); err != nil {
				t.Fatal(err)
			}
			if err := q.Push(mem, c.Head, 513); err != nil {
				t.Fatal(err)
			}
			used, err := d.Reap()
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]virtiotest.Used{{Head: head, Len: 513}}, used); diff != "" {
				t.Errorf("used (-want +got):\n%s", diff)
			}
			if got := d.Read(w2)[0]; got != 0xaa {
				t.Errorf("status byte = %#x, want 0xaa", got)
			}
		})
	}
}

// The spec lets a chain of normal descriptors end with one indirect
// descriptor (§2.7.5.3.2).
func TestPopDirectThenIndirect(t *testing.T) {
	mem, d, q := setup(t, 8, false)
	r := d.Buf(16, nil)
	w := d.Buf(8, nil)
	table := d.Alloc(16)
	// Indirect table: one writable buffer.
	var tbl [16]byte
	putDesc(tbl[:], w.Addr, w.Len, virtiotest.DescWrite, 0)
	d.Fill(queue.Buffer{Addr: table, Len: 16}, tbl[:])
	d.WriteDesc(0, r.Addr, r.Len, virtiotest.DescNext, 1)
	d.WriteDesc(1, table, 16, virtiotest.DescIndirect|virtiotest.DescWrite, 0) // WRITE on an indirect descriptor is ignored
	d.PushAvail(0)
	c := mustPop(t, mem, q)
	want := &queue.Chain{Head: 0, Readable: queue.Buffers{r}, Writable: queue.Buffers{w}}
	if diff := cmp.Diff(want, c); diff != "" {
		t.Errorf("chain (-want +got):\n%s", diff)
	}
}

func TestZeroLengthDescriptorsDropped(t *testing.T) {
	mem, d, q := setup(t, 8, false)
	r := d.Buf(16, nil)
	w := d.Buf(1, nil)
	d.WriteDesc(0, r.Addr, 0, virtiotest.DescNext, 1)
	d.WriteDesc(1, r.Addr, r.Len, virtiotest.DescNext, 2)
	d.WriteDesc(2, 0xdead_0000_0000, 0, virtiotest.DescNext|virtiotest.DescWrite, 3) // no bytes: address irrelevant
	d.WriteDesc(3, w.Addr, w.Len, virtiotest.DescWrite, 0)
	d.PushAvail(0)
	c := mustPop(t, mem, q)
	want := &queue.Chain{Head: 0, Readable: queue.Buffers{r}, Writable: queue.Buffers{w}}
	if diff := cmp.Diff(want, c); diff != "" {
		t.Errorf("chain (-want +got):\n%s", diff)
	}
}

func putDesc(b []byte, addr uint64, length uint32, flags, next uint16) {
	for i := range 8 {
		b[i] = byte(addr >> (8 * i))
	}
	for i := range 4 {
		b[8+i] = byte(length >> (8 * i))
	}
	b[12], b[13] = byte(flags), byte(flags>>8)
	b[14], b[15] = byte(next), byte(next>>8)
}

// Indices are free-running 16-bit counters: run more than 65536 chains
// through a small queue.
func TestIndexWrapAround(t *testing.T) {
	for _, eventIdx := range []bool{false, true} {
		mem, d, q := setup(t, 4, eventIdx)
		r := d.Buf(8, nil)
		w := d.Buf(8, nil)
		for i := range 70000 {
			head, err := d.Add([]queue.Buffer{r}, []queue.Buffer{w})
			if err != nil {
				t.Fatalf("iteration %d: Add: %v", i, err)
			}
			c := mustPop(t, mem, q)
			if c.Head != head {
				t.Fatalf("iteration %d: head %d, want %d", i, c.Head, head)
			}
			if err := q.Push(mem, c.Head, uint32(i)); err != nil {
				t.Fatalf("iteration %d: Push: %v", i, err)
			}
			used, err := d.Reap()
			if err != nil || len(used) != 1 || used[0].Len != uint32(i) {
				t.Fatalf("iteration %d: Reap = %v, %v", i, used, err)
			}
		}
		if got, want := q.State().NextAvail, uint16(70000%65536); got != want {
			t.Errorf("eventIdx=%v: NextAvail = %d, want %d", eventIdx, got, want)
		}
	}
}

// With EVENT_IDX the device interrupts exactly when the used index passes the
// driver's used_event.
func TestUsedEventSuppression(t *testing.T) {
	mem, d, q := setup(t, 8, true)
	r := d.Buf(8, nil)
	for range 6 {
		if _, err := d.Add([]queue.Buffer{r}, nil); err != nil {
			t.Fatal(err)
		}
	}
	d.SetUsedEvent(2) // interrupt when entry 2 is used (used idx reaches 3)
	var got []bool
	for range 6 {
		c := mustPop(t, mem, q)
		if err := q.Push(mem, c.Head, 0); err != nil {
			t.Fatal(err)
		}
		got = append(got, q.NeedsInterrupt(mem))
	}
	if diff := cmp.Diff([]bool{true, false, true, false, false, false}, got); diff != "" {
		// The first push always interrupts: the device has no previous
		// decision to compare with.
		t.Errorf("NeedsInterrupt per push (-want +got):\n%s", diff)
	}
	if q.NeedsInterrupt(mem) {
		t.Error("NeedsInterrupt with nothing pushed since the last call")
	}
}

func TestNoInterruptFlag(t *testing.T) {
	mem, d, q := setup(t, 8, false)
	r := d.Buf(8, nil)
	push := func() {
		t.Helper()
		if _, err := d.Add([]queue.Buffer{r}, nil); err != nil {
			t.Fatal(err)
		}
		c := mustPop(t, mem, q)
		if err := q.Push(mem, c.Head, 0); err != nil {
			t.Fatal(err)
		}
	}
	push()
	if !q.NeedsInterrupt(mem) {
		t.Error("NeedsInterrupt = false with flags 0")
	}
	d.SetNoInterrupt(true)
	push()
	if q.NeedsInterrupt(mem) {
		t.Error("NeedsInterrupt = true with VRING_AVAIL_F_NO_INTERRUPT")
	}
	d.SetNoInterrupt(false)
	if q.NeedsInterrupt(mem) {
		t.Error("NeedsInterrupt = true with nothing new pushed")
	}
	push()
	if !q.NeedsInterrupt(mem) {
		t.Error("NeedsInterrupt = false after re-enabling")
	}
}

// With EVENT_IDX, an idle device publishes avail_event so the driver kicks
// once for the first chain it adds and not again until the device goes idle.
func TestAvailEventSuppression(t *testing.T) {
	mem, d, q := setup(t, 8, true)
	r := d.Buf(8, nil)
	if c, err := q.Pop(mem); c != nil || err != nil {
		t.Fatalf("Pop on empty ring = %v, %v", c, err)
	}
	if got := d.AvailEvent(); got != 0 {
		t.Fatalf("avail_event = %d, want 0", got)
	}
	var kicks []bool
	for range 3 {
		if _, err := d.Add([]queue.Buffer{r}, nil); err != nil {
			t.Fatal(err)
		}
		kicks = append(kicks, d.Kick())
	}
	for range 3 {
		mustPop(t, mem, q)
	}
	if c, err := q.Pop(mem); c != nil || err != nil {
		t.Fatalf("Pop after draining = %v, %v", c, err)
	}
	if got := d.AvailEvent(); got != 3 {
		t.Errorf("avail_event after draining = %d, want 3", got)
	}
	if _, err := d.Add([]queue.Buffer{r}, nil); err != nil {
		t.Fatal(err)
	}
	kicks = append(kicks, d.Kick())
	if diff := cmp.Diff([]bool{true, false, false, true}, kicks); diff != "" {
		t.Errorf("kicks (-want +got):\n%s", diff)
	}
}

func TestPush(t *testing.T) {
	mem, d, q := setup(t, 8, false)
	if err := q.Push(mem, 0, 0); !errors.Is(err, queue.ErrBadHead) {
		t.Errorf("Push with nothing in flight = %v, want ErrBadHead", err)
	}
	r := d.Buf(8, nil)
	if _, err := d.Add([]queue.Buffer{r}, nil); err != nil {
		t.Fatal(err)
	}
	mustPop(t, mem, q)
	if err := q.Push(mem, 8, 0); !errors.Is(err, queue.ErrBadHead) {
		t.Errorf("Push(head 8) on size 8 = %v, want ErrBadHead", err)
	}
	var notReady queue.Queue
	if _, err := notReady.Pop(mem); !errors.Is(err, queue.ErrNotReady) {
		t.Errorf("Pop on zero Queue = %v, want ErrNotReady", err)
	}
}

func TestStateRoundTrip(t *testing.T) {
	mem, d, q := setup(t, 16, true)
	r := d.Buf(8, nil)
	for range 5 {
		if _, err := d.Add([]queue.Buffer{r}, nil); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		c := mustPop(t, mem, q)
		if err := q.Push(mem, c.Head, 1); err != nil {
			t.Fatal(err)
		}
	}
	mustPop(t, mem, q) // one chain in flight
	st := q.State()
	q2, err := queue.New(st, mem)
	if err != nil {
		t.Fatalf("New(State()): %v", err)
	}
	if diff := cmp.Diff(st, q2.State()); diff != "" {
		t.Errorf("state (-want +got):\n%s", diff)
	}
	// The restored queue continues where the first one stopped.
	c := mustPop(t, mem, q2)
	if err := q2.Push(mem, c.Head, 0); err != nil {
		t.Fatal(err)
	}
}

func TestRestoreRejectsInvalidState(t *testing.T) {
	mem, d, _ := setup(t, 16, false)
	good := d.State()
	tests := []struct {
		name string
		edit func(*queue.State)
	}{
		{"max size zero", func(s *queue.State) { s.MaxSize = 0 }},
		{"max size too big", func(s *queue.State) { s.MaxSize = 65535 }},
		{"size zero", func(s *queue.State) { s.Size = 0 }},
		{"size not power of two", func(s *queue.State) { s.Size = 12 }},
		{"size above max", func(s *queue.State) { s.Size = 32 }},
		{"desc misaligned", func(s *queue.State) { s.DescTable += 8 }},
		{"avail misaligned", func(s *queue.State) { s.AvailRing++ }},
		{"used misaligned", func(s *queue.State) { s.UsedRing += 2 }},
		{"desc outside RAM", func(s *queue.State) { s.DescTable = memBase + memSize - 16 }},
		{"avail below RAM", func(s *queue.State) { s.AvailRing = 0 }},
		{"used wraps", func(s *queue.State) { s.UsedRing = 1<<64 - 4 }},
		{"too many in flight", func(s *queue.State) { s.NextAvail = 17 }},
		{"in flight wraps", func(s *queue.State) { s.NextAvail, s.NextUsed = 3, 65500 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := good
			tt.edit(&s)
			q, err := queue.New(good, mem)
			if err != nil {
				t.Fatal(err)
			}
			if err := q.Restore(s, mem); !errors.Is(err, queue.ErrInvalidState) {
				t.Errorf("Restore = %v, want ErrInvalidState", err)
			}
			if diff := cmp.Diff(good, q.State()); diff != "" {
				t.Errorf("failed Restore changed the queue (-want +got):\n%s", diff)
			}
		})
	}
	// A queue that is not ready is valid whatever its addresses.
	if _, err := queue.New(queue.State{MaxSize: 16, DescTable: 3}, mem); err != nil {
		t.Errorf("New(not ready) = %v", err)
	}
	// Indices near the wrap are fine when consistent.
	s := good
	s.NextAvail, s.NextUsed = 2, 65534
	if _, err := queue.New(s, mem); err != nil {
		t.Errorf("New(wrapped indices) = %v", err)
	}
}

func TestIndexAccessors(t *testing.T) {
	mem := virtiotest.NewMemory(0x1000, 0x100)
	b := mem.Bytes()
	for i := range b {
		b[i] = 0xee
	}
	for _, gpa := range []uint64{0x1000, 0x1002, 0x10fe} {
		if err := queue.StoreIndex(mem, gpa, 0x1234); err != nil {
			t.Fatalf("StoreIndex(%#x): %v", gpa, err)
		}
		if v, err := queue.LoadIndex(mem, gpa); err != nil || v != 0x1234 {
			t.Errorf("LoadIndex(%#x) = %#x, %v", gpa, v, err)
		}
		off := gpa - 0x1000
		if b[off] != 0x34 || b[off+1] != 0x12 {
			t.Errorf("bytes at %#x = % x, want little-endian 34 12", gpa, b[off:off+2])
		}
	}
	if b[4] != 0xee || b[0xfd] != 0xee {
		t.Errorf("neighbouring bytes changed: % x ... % x", b[:6], b[0xfc:])
	}
	if _, err := queue.LoadIndex(mem, 0x1001); err == nil {
		t.Error("LoadIndex of an odd address succeeded")
	}
	if err := queue.StoreIndex(mem, 0x1100, 1); err == nil {
		t.Error("StoreIndex outside RAM succeeded")
	}
}
