package boottimer

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/boxd-dev/boxd/devices/devicestest"
	"github.com/google/go-cmp/cmp"
)

// clock is a fake time source that advances only when told.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func u32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
func u64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

func TestMarks(t *testing.T) {
	type store struct {
		after  time.Duration // clock advance before the store
		offset uint64
		data   []byte
	}
	tests := []struct {
		name    string
		stores  []store
		want    []Mark
		ignored uint64
	}{
		{
			name:   "boxd init and agent",
			stores: []store{{12345 * time.Microsecond, 0, u32(MarkInit)}, {30 * time.Millisecond, 0, u32(MarkAgentReady)}},
			want:   []Mark{{MarkInit, 12345 * time.Microsecond}, {MarkAgentReady, 42345 * time.Microsecond}},
		},
		{
			name:   "firecracker byte",
			stores: []store{{time.Millisecond, 0, []byte{FirecrackerInitByte}}},
			want:   []Mark{{MarkInit, time.Millisecond}},
		},
		{
			name:   "custom ids of every width",
			stores: []store{{0, 0, []byte{7}}, {0, 0, []byte{0x34, 0x12}}, {0, 0, u32(1000)}, {0, 0, u64(1 << 40)}},
			want:   []Mark{{7, 0}, {0x1234, 0}, {1000, 0}, {1 << 40, 0}},
		},
		{
			name:    "123 as a 32-bit store is a custom mark",
			stores:  []store{{0, 0, u32(123)}},
			want:    []Mark{{123, 0}},
			ignored: 0,
		},
		{
			name:    "not marks",
			stores:  []store{{0, 4, u32(1)}, {0, 0, u32(0)}, {0, 0, []byte{1, 2, 3}}, {0, 0, nil}, {0, Size - 1, []byte{1}}},
			want:    nil,
			ignored: 5,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &clock{t: epoch}
			var seen []Mark
			var timer *Timer
			timer = New(Config{Now: clk.now, OnMark: func(m Mark) {
				seen = append(seen, m)
				_ = timer.Marks() // the callback may look at the device
			}})
			for _, s := range tt.stores {
				clk.advance(s.after)
				timer.Write(s.offset, s.data)
			}
			if diff := cmp.Diff(tt.want, timer.Marks()); diff != "" {
				t.Errorf("Marks (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.want, seen); diff != "" {
				t.Errorf("OnMark calls (-want +got):\n%s", diff)
			}
			if got := timer.Ignored(); got != tt.ignored {
				t.Errorf("Ignored = %d, want %d", got, tt.ignored)
			}
		})
	}
}

func TestLog(t *testing.T) {
	clk := &clock{t: epoch}
	var log bytes.Buffer
	timer := New(Config{Now: clk.now, Log: &log})
	clk.advance(12345678 * time.Nanosecond)
	timer.Write(0, u32(MarkInit))
	clk.advance(time.Second)
	timer.Write(0, u32(99))
	want := "boot-timer: mark 1 at 12.346 ms\nboot-timer: mark 99 at 1012.346 ms\n"
	if diff := cmp.Diff(want, log.String()); diff != "" {
		t.Errorf("log (-want +got):\n%s", diff)
	}
}

func TestStart(t *testing.T) {
	clk := &clock{t: epoch}
	timer := New(Config{Now: clk.now, Start: epoch.Add(-time.Second)})
	timer.Write(0, u32(5))
	clk.advance(time.Hour)
	timer.SetStart(clk.now())
	clk.advance(3 * time.Millisecond)
	timer.Write(0, u32(6))
	want := []Mark{{5, time.Second}, {6, 3 * time.Millisecond}}
	if diff := cmp.Diff(want, timer.Marks()); diff != "" {
		t.Errorf("Marks (-want +got):\n%s", diff)
	}
}

func TestBounded(t *testing.T) {
	timer := New(Config{MaxMarks: 3})
	for i := range uint32(10) {
		timer.Write(0, u32(i+1))
	}
	if got := len(timer.Marks()); got != 3 {
		t.Errorf("kept %d marks, want 3", got)
	}
	if got := timer.Dropped(); got != 7 {
		t.Errorf("Dropped = %d, want 7", got)
	}
	// Marks returns a copy the caller may change.
	timer.Marks()[0].ID = 999
	if timer.Marks()[0].ID != 1 {
		t.Error("Marks aliases the device's slice")
	}
}

func TestReadsZero(t *testing.T) {
	timer := New(Config{})
	timer.Write(0, u32(MarkInit))
	data := []byte{1, 2, 3, 4}
	timer.Read(0, data)
	if diff := cmp.Diff([]byte{0, 0, 0, 0}, data); diff != "" {
		t.Errorf("read (-want +got):\n%s", diff)
	}
}

func FuzzBootTimer(f *testing.F) {
	f.Add([]byte{9, 0, 1, 0, 0, 0, 1, 0, 123, 3, 0, 2, 0})
	f.Add([]byte{15, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0})
	f.Fuzz(func(t *testing.T, script []byte) {
		clk := &clock{t: epoch}
		timer := New(Config{Now: clk.now, MaxMarks: 4, Log: new(bytes.Buffer)})
		for _, op := range devicestest.Ops(script, Size) {
			clk.advance(time.Microsecond)
			devicestest.Apply(timer, op)
		}
		marks := timer.Marks()
		if len(marks) > 4 {
			t.Fatalf("%d marks kept, bound is 4", len(marks))
		}
		for i, m := range marks {
			if m.ID == 0 {
				t.Fatalf("mark %d has id 0", i)
			}
			if i > 0 && m.At < marks[i-1].At {
				t.Fatalf("marks out of order: %v then %v", marks[i-1], m)
			}
		}
	})
}
