package queue_test

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/boxd-dev/boxd/virtio/queue"
	"github.com/boxd-dev/boxd/virtio/virtiotest"
)

const (
	fuzzBase = 0x1000
	fuzzSize = 0x4000 // rings at the start, buffers after
)

func cmpDiff(want, got any) string { return cmp.Diff(want, got) }

// FuzzQueuePop lets the fuzzer write the whole of guest memory (descriptor
// table, rings, indirect tables) and pick the queue geometry and device
// position. Pop and Push must never panic or loop, and every chain returned
// must lie inside RAM.
func FuzzQueuePop(f *testing.F) {
	// Seeds: images a well-behaved driver produced.
	for _, indirect := range []bool{false, true} {
		mem := virtiotest.NewMemory(fuzzBase, fuzzSize)
		d := virtiotest.NewDriver(mem, 8, fuzzBase, fuzzSize)
		add := d.Add
		if indirect {
			add = d.AddIndirect
		}
		r, w := d.Buf(16, []byte("hdr")), d.Buf(64, nil)
		for range 3 {
			if _, err := add([]queue.Buffer{r}, []queue.Buffer{w}); err != nil {
				f.Fatal(err)
			}
		}
		f.Add(append([]byte(nil), mem.Bytes()...), uint8(3), uint16(0), false)
		f.Add(append([]byte(nil), mem.Bytes()...), uint8(3), uint16(0), true)
	}
	f.Add([]byte{}, uint8(0), uint16(0xfffe), true)

	f.Fuzz(func(t *testing.T, image []byte, sizeLog uint8, start uint16, eventIdx bool) {
		mem := virtiotest.NewMemory(fuzzBase, fuzzSize)
		copy(mem.Bytes(), image)
		size := uint16(1) << (sizeLog % 5) // 1..16
		// Same layout as the mock driver: rings at fixed places.
		d := virtiotest.NewDriver(virtiotest.NewMemory(fuzzBase, fuzzSize), size, fuzzBase, fuzzSize)
		st := d.State()
		st.EventIdx = eventIdx
		st.NextAvail, st.NextUsed = start, start
		q, err := queue.New(st, mem)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		for range 2*int(size) + 2 {
			c, err := q.Pop(mem)
			var ce *queue.ChainError
			switch {
			case errors.As(err, &ce):
				if !errors.Is(err, queue.ErrInvalidChain) || ce.Head >= size {
					t.Fatalf("bad ChainError %v", err)
				}
				if err := q.Push(mem, ce.Head, 0); err != nil {
					t.Fatalf("Push(broken head): %v", err)
				}
				continue
			case errors.Is(err, queue.ErrInvalidChain):
				continue
			case err != nil:
				if !errors.Is(err, queue.ErrAvailIdx) && !errors.Is(err, queue.ErrRing) {
					t.Fatalf("unexpected error %v", err)
				}
				return
			case c == nil:
				return
			}
			for _, b := range append(append(queue.Buffers(nil), c.Readable...), c.Writable...) {
				if _, err := mem.Slice(b.Addr, uint64(b.Len)); err != nil || b.Len == 0 {
					t.Fatalf("chain buffer %+v not in RAM: %v", b, err)
				}
			}
			if c.Readable.Len()+c.Writable.Len() > 1<<32-1 {
				t.Fatal("chain longer than 4 GiB")
			}
			if _, err := c.Writable.WriteAt(mem, make([]byte, min(c.Writable.Len(), 64)), 0); err != nil {
				t.Fatalf("writing a validated chain: %v", err)
			}
			if err := q.Push(mem, c.Head, uint32(c.Writable.Len())); err != nil {
				t.Fatalf("Push: %v", err)
			}
			q.NeedsInterrupt(mem)
		}
	})
}
