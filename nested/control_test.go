package nested

import (
	"testing"
	"time"
)

func TestParseReady(t *testing.T) {
	tests := []struct {
		in      string
		want    float64
		wantErr bool
	}{
		{in: "3.52\n", want: 3.52},
		{in: "0.00\n", want: 0},
		{in: "3.52", wantErr: true}, // not complete yet
		{in: "", wantErr: true},
		{in: "NaN\n", wantErr: true},
		{in: "-1\n", wantErr: true},
		{in: "1e308\n", wantErr: true},
		{in: "3.52 1.00\n", wantErr: true},
	}
	for _, tc := range tests {
		got, err := parseReady([]byte(tc.in))
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("parseReady(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestParseStatus(t *testing.T) {
	tests := []struct {
		in      string
		want    int
		wantErr bool
	}{
		{in: "0\n", want: 0},
		{in: "7\n", want: 7},
		{in: "255\n", want: 255},
		{in: "256\n", wantErr: true},
		{in: "-1\n", wantErr: true},
		{in: "7", wantErr: true},
		{in: "\n", wantErr: true},
		{in: "seven\n", wantErr: true},
	}
	for _, tc := range tests {
		got, err := parseStatus([]byte(tc.in))
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("parseStatus(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestTail(t *testing.T) {
	var tl tail
	for i := range tailLines + 5 {
		tl.add(string(rune('a' + i%26)))
	}
	if len(tl.lines) != tailLines || tl.lines[0] != "f" {
		t.Errorf("tail keeps %d lines starting %q; want %d starting \"f\"", len(tl.lines), tl.lines[0], tailLines)
	}
}

// The ready and status files are written by the L1 guest.
func FuzzParseReady(f *testing.F) {
	for _, s := range []string{"3.52\n", "0\n", "1e308\n", "NaN\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if up, err := parseReady(b); err == nil && !(up >= 0 && up <= 1e9) {
			t.Fatalf("uptime %v accepted", up)
		}
	})
}

func FuzzParseStatus(f *testing.F) {
	for _, s := range []string{"0\n", "255\n", "99999999999999999999\n", "-0\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if st, err := parseStatus(b); err == nil && (st < 0 || st > 255) {
			t.Fatalf("status %d accepted", st)
		}
	})
}

// TestWatchdog: no hang before L1 is ready or while it beats; one, once,
// when the beats stop for the limit.
func TestWatchdog(t *testing.T) {
	t0 := time.Now()
	w := &watchdog{after: time.Minute}
	w.beat(t0) // before ready: ignored
	if _, fire := w.check(t0.Add(time.Hour)); fire {
		t.Fatal("fired before it was armed")
	}
	w.arm(t0)
	for i := 1; i <= 3; i++ {
		now := t0.Add(time.Duration(i) * 50 * time.Second)
		if _, fire := w.check(now); fire {
			t.Fatalf("fired after beats every 50 s (beat %d)", i)
		}
		w.beat(now)
	}
	last := t0.Add(150 * time.Second)
	if silent, fire := w.check(last.Add(59 * time.Second)); fire || silent != 59*time.Second {
		t.Fatalf("check after 59 s = %v, %v; want 59s, false", silent, fire)
	}
	if silent, fire := w.check(last.Add(61 * time.Second)); !fire || silent != 61*time.Second {
		t.Fatalf("check after 61 s = %v, %v; want 61s, true", silent, fire)
	}
	if _, fire := w.check(last.Add(time.Hour)); fire {
		t.Fatal("fired twice")
	}
	if _, fire := (&watchdog{}).check(t0.Add(time.Hour)); fire {
		t.Fatal("a watchdog with no limit fired")
	}
}
