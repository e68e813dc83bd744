package agent

import (
	"bytes"
	"testing"

	"github.com/boxd-dev/boxd/agent/wire"
)

func TestRing(t *testing.T) {
	tests := []struct {
		name        string
		max         int
		adds        []int
		from        int64
		wantLen     int
		wantDropped int64
	}{
		{"fits", 100, []int{10, 20, 30}, 0, 60, 0},
		{"drops whole chunks", 100, []int{60, 60, 30}, 0, 90, 60},
		{"keeps one oversize chunk", 10, []int{5, 50}, 0, 50, 5},
		{"from the middle of a chunk", 100, []int{10, 20}, 15, 15, 0},
		{"reader behind the ring", 100, []int{60, 60, 60}, 30, 60, 90},
		{"at the end", 100, []int{10}, 10, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ring{max: tt.max}
			var all []byte
			for i, n := range tt.adds {
				b := bytes.Repeat([]byte{byte('a' + i)}, n)
				all = append(all, b...)
				r.add(wire.StreamStdout, b)
			}
			chunks, dropped, next := r.since(tt.from)
			var got []byte
			for _, c := range chunks {
				got = append(got, c.b...)
			}
			if len(got) != tt.wantLen || dropped != tt.wantDropped || next != int64(len(all)) {
				t.Fatalf("since(%d): %d bytes, dropped %d, next %d; want %d, %d, %d",
					tt.from, len(got), dropped, next, tt.wantLen, tt.wantDropped, len(all))
			}
			if !bytes.Equal(got, all[len(all)-len(got):]) {
				t.Error("replayed bytes are not the newest")
			}
			if r.size > max(tt.max, tt.adds[len(tt.adds)-1]) {
				t.Errorf("ring holds %d bytes, max %d", r.size, tt.max)
			}
		})
	}
}
