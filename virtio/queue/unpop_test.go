package queue_test

import (
	"testing"

	"github.com/boxd-dev/boxd/virtio/queue"
)

// Unpop puts chains in flight back on the ring when that is exact, and
// refuses (changing nothing) when a chain was completed out of order.
func TestUnpop(t *testing.T) {
	for _, tc := range []struct {
		name     string
		pop      int   // chains popped
		push     []int // indexes (in pop order) pushed back
		unpop    []int // indexes (in pop order) to unpop
		want     bool
		wantNext []int // pop order of the chains popped after Unpop
	}{
		{name: "none", pop: 2, push: []int{0, 1}, unpop: nil, want: true},
		{name: "tail", pop: 3, push: []int{0}, unpop: []int{1, 2}, want: true, wantNext: []int{1, 2}},
		{name: "all", pop: 2, unpop: []int{0, 1}, want: true, wantNext: []int{0, 1}},
		{name: "out of order", pop: 2, push: []int{1}, unpop: []int{0}, want: false},
		{name: "not every chain", pop: 2, unpop: []int{1}, want: false},
		{name: "wrong order", pop: 2, unpop: []int{1, 0}, want: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem, d, q := setup(t, 8, true)
			var heads []uint16
			for range tc.pop {
				h, err := d.Add(nil, []queue.Buffer{d.Buf(64, nil)})
				if err != nil {
					t.Fatal(err)
				}
				heads = append(heads, h)
			}
			for range tc.pop {
				mustPop(t, mem, q)
			}
			for _, i := range tc.push {
				if err := q.Push(mem, heads[i], 0); err != nil {
					t.Fatal(err)
				}
			}
			var un []uint16
			for _, i := range tc.unpop {
				un = append(un, heads[i])
			}
			before := q.State()
			ok, err := q.Unpop(mem, un)
			if err != nil {
				t.Fatal(err)
			}
			if ok != tc.want {
				t.Fatalf("Unpop = %v, want %v", ok, tc.want)
			}
			if !ok {
				if q.State() != before {
					t.Errorf("refused Unpop changed the state: %+v -> %+v", before, q.State())
				}
				return
			}
			for _, i := range tc.wantNext {
				if c := mustPop(t, mem, q); c.Head != heads[i] {
					t.Errorf("popped head %d after Unpop, want %d", c.Head, heads[i])
				}
			}
			if c, err := q.Pop(mem); c != nil || err != nil {
				t.Errorf("extra Pop after Unpop = %v, %v; want empty", c, err)
			}
		})
	}
}
