package nested

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseControl(t *testing.T) {
	tests := []struct {
		line    string
		want    control
		wantErr bool
	}{
		{line: "ready 3.52", want: control{kind: "ready", uptime: 3.52}},
		{line: "ready 3.52\r", want: control{kind: "ready", uptime: 3.52}},
		{line: "exit 0", want: control{kind: "exit"}},
		{line: "exit 255", want: control{kind: "exit", status: 255}},
		{line: "error insmod 16-kvm_amd.ko", want: control{kind: "error", text: "insmod 16-kvm_amd.ko"}},
		{line: "exit 256", wantErr: true},
		{line: "exit -1", wantErr: true},
		{line: "exit", wantErr: true},
		{line: "ready NaN", wantErr: true},
		{line: "ready -1", wantErr: true},
		{line: "ready", wantErr: true},
		{line: "hello", wantErr: true},
		{line: "", wantErr: true},
	}
	for _, tc := range tests {
		got, err := parseControl(tc.line)
		if (err != nil) != tc.wantErr {
			t.Errorf("parseControl(%q) err = %v; want error %v", tc.line, err, tc.wantErr)
			continue
		}
		if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(control{})); diff != "" {
			t.Errorf("parseControl(%q) (-want +got):\n%s", tc.line, diff)
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

func FuzzParseControl(f *testing.F) {
	for _, s := range []string{"ready 3.52", "exit 7", "error x y", "exit 99999999999999999999", "ready 1e308"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		c, err := parseControl(line)
		if err != nil {
			return
		}
		if c.kind == "exit" && (c.status < 0 || c.status > 255) {
			t.Fatalf("status %d out of range", c.status)
		}
		if c.kind == "ready" && !(c.uptime >= 0) {
			t.Fatalf("uptime %v", c.uptime)
		}
	})
}
