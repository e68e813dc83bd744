package queue_test

import (
	"testing"

	"github.com/boxd-dev/boxd/virtio/queue"
)

// WatchAvail reports an available index that moved, and with EVENT_IDX asks
// the driver for a notification when it does.
func TestWatchAvail(t *testing.T) {
	for _, eventIdx := range []bool{false, true} {
		mem, d, q := setup(t, 8, eventIdx)
		for range 3 {
			if _, err := d.Add(nil, []queue.Buffer{d.Buf(64, nil)}); err != nil {
				t.Fatal(err)
			}
		}
		mustPop(t, mem, q) // two chains stay available: not "moved"
		idx, err := q.AvailIdx(mem)
		if err != nil || idx != 3 {
			t.Fatalf("AvailIdx = %d, %v; want 3", idx, err)
		}
		moved, err := q.WatchAvail(mem, idx)
		if err != nil || moved {
			t.Fatalf("WatchAvail(%d) before any new chain = %v, %v", idx, moved, err)
		}
		if eventIdx && d.AvailEvent() != idx {
			t.Errorf("avail_event = %d, want %d", d.AvailEvent(), idx)
		}
		if _, err := d.Add(nil, []queue.Buffer{d.Buf(64, nil)}); err != nil {
			t.Fatal(err)
		}
		if eventIdx && !d.Kick() {
			t.Error("the driver was not asked to notify for the chain the device watches")
		}
		if moved, err := q.WatchAvail(mem, idx); err != nil || !moved {
			t.Errorf("WatchAvail(%d) after a new chain = %v, %v; want moved", idx, moved, err)
		}
		// The watch consumed nothing.
		for range 3 {
			mustPop(t, mem, q)
		}
	}
}
