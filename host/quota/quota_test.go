package quota

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr string
	}{
		{in: "512M", want: 512 * MiB},
		{in: "8G", want: 8 * GiB},
		{in: "8g", want: 8 * GiB},
		{in: "8GiB", want: 8 * GiB},
		{in: "8GB", want: 8 * GiB},
		{in: " 2T ", want: 2 * TiB},
		{in: "4096K", want: 4 * MiB},
		{in: "1.5G", want: 1536 * MiB},
		{in: "0M", want: 0},
		{in: "512", wantErr: "a unit is required"},
		{in: "", wantErr: "want a number and a unit"},
		{in: "G", wantErr: "plain number"},
		{in: "-1G", wantErr: "plain number"},
		{in: "1e3M", wantErr: "plain number"},
		{in: "0x10M", wantErr: "plain number"},
		{in: "1.0000000001K", wantErr: "whole number of bytes"},
		{in: "9999999999T", wantErr: "too large"},
		{in: "1.2.3G", wantErr: "plain number"},
		{in: "12Q", wantErr: "a unit is required"},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrSize) {
				t.Errorf("ParseSize(%q) = %d, %v; want an ErrSize containing %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestParseMemDisk(t *testing.T) {
	if got, err := ParseMemMiB("2G"); err != nil || got != 2048 {
		t.Errorf("ParseMemMiB(2G) = %d, %v", got, err)
	}
	if _, err := ParseMemMiB("1536K"); err == nil || !strings.Contains(err.Error(), "whole MiB") {
		t.Errorf("ParseMemMiB(1536K) = %v, want a whole-MiB error", err)
	}
	if got, err := ParseDiskGiB("1T"); err != nil || got != 1024 {
		t.Errorf("ParseDiskGiB(1T) = %d, %v", got, err)
	}
	if _, err := ParseDiskGiB("1500M"); err == nil || !strings.Contains(err.Error(), "whole GiB") {
		t.Errorf("ParseDiskGiB(1500M) = %v, want a whole-GiB error", err)
	}
	for _, mib := range []int{64, 512, 1024, 8192, 1536} {
		if got, err := ParseMemMiB(FormatMiB(mib)); err != nil || got != mib {
			t.Errorf("ParseMemMiB(FormatMiB(%d)=%q) = %d, %v", mib, FormatMiB(mib), got, err)
		}
	}
	for _, gib := range []int{1, 100, 1024, 3000} {
		if got, err := ParseDiskGiB(FormatGiB(gib)); err != nil || got != gib {
			t.Errorf("ParseDiskGiB(FormatGiB(%d)=%q) = %d, %v", gib, FormatGiB(gib), got, err)
		}
	}
}

func TestResolve(t *testing.T) {
	l := Defaults()
	tests := []struct {
		name     string
		in       Size
		want     Size
		wantErr  string
		wantFlag string // set when the error is a quota *Error
	}{
		{name: "defaults", in: Size{}, want: Size{CPUs: 2, MemMiB: 8192, DiskGiB: 100}},
		{name: "explicit", in: Size{CPUs: 1, MemMiB: 512, DiskGiB: 10}, want: Size{CPUs: 1, MemMiB: 512, DiskGiB: 10}},
		{name: "at the limits", in: Size{CPUs: 2, MemMiB: 8192, DiskGiB: 100}, want: Size{CPUs: 2, MemMiB: 8192, DiskGiB: 100}},
		{name: "cpus", in: Size{CPUs: 3}, wantErr: "3 vCPUs asked for, the per-VM limit is 2", wantFlag: "--max-cpus"},
		{name: "mem", in: Size{MemMiB: 16384}, wantErr: "16G of memory asked for, the per-VM limit is 8G", wantFlag: "--max-mem"},
		{name: "disk", in: Size{DiskGiB: 101}, wantErr: "a 101G disk asked for, the per-VM limit is 100G", wantFlag: "--max-disk"},
		{name: "negative cpus", in: Size{CPUs: -1}, wantErr: "want at least 1"},
		{name: "tiny mem", in: Size{MemMiB: 16}, wantErr: "want at least 64M"},
		{name: "negative disk", in: Size{DiskGiB: -5}, wantErr: "want at least 1G"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := l.Resolve(tt.in)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("Resolve (-want +got):\n%s", diff)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Resolve = %v, want an error containing %q", err, tt.wantErr)
			}
			var qe *Error
			if isQuota := errors.As(err, &qe); isQuota != (tt.wantFlag != "") {
				t.Fatalf("quota error = %v, want %v", isQuota, tt.wantFlag != "")
			}
			if qe != nil && (qe.Flag != tt.wantFlag || !strings.Contains(qe.Hint(), tt.wantFlag)) {
				t.Errorf("flag %q hint %q, want %q", qe.Flag, qe.Hint(), tt.wantFlag)
			}
		})
	}
}

func TestCheckCount(t *testing.T) {
	l := Defaults()
	if err := l.CheckCount(9); err != nil {
		t.Errorf("CheckCount(9) = %v", err)
	}
	err := l.CheckCount(10)
	var qe *Error
	if !errors.As(err, &qe) || qe.Limit != "vms" || qe.Max != 10 || qe.Asked != 11 {
		t.Fatalf("CheckCount(10) = %#v", err)
	}
	if want := "quota exceeded: 10 VMs exist, the limit is 10"; err.Error() != want {
		t.Errorf("message %q, want %q", err, want)
	}
	if !strings.Contains(qe.Hint(), "boxd daemon --max-vms N") {
		t.Errorf("hint %q does not name the flag", qe.Hint())
	}
}

func TestValidate(t *testing.T) {
	if err := Defaults().Validate(); err != nil {
		t.Errorf("Defaults().Validate() = %v", err)
	}
	bad := Defaults()
	bad.MaxVMs = 0
	bad.DefaultCPUs = 3
	err := bad.Validate()
	if err == nil || !strings.Contains(err.Error(), "max VMs 0") || !strings.Contains(err.Error(), "default vCPUs 3") {
		t.Errorf("Validate = %v, want both problems named", err)
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"512M", "8G", "1.5G", "100GiB", "-1G", "1e9G", "9223372036854775807K", "0.1K", "NaNG", "InfG"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			if !errors.Is(err, ErrSize) {
				t.Fatalf("ParseSize(%q): error %v does not wrap ErrSize", s, err)
			}
			return
		}
		if n < 0 {
			t.Fatalf("ParseSize(%q) = %d, negative", s, n)
		}
	})
}
