package bench

import (
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestParseClockLine(t *testing.T) {
	for _, tc := range []struct {
		line string
		want float64
		ok   bool
	}{
		{"BENCH-CLOCK [    0.000203] kvm-clock: using sched offset of 343563813 cycles", 343.563813, true},
		{"kvm-clock: using sched offset of 1000000 cycles", 1, true},
		{"BENCH-CLOCK ", 0, false},
		{"kvm-clock: using sched offset of ", 0, false},
		{"kvm-clock: using sched offset of -5 cycles", 0, false},
		{"kvm-clock: using sched offset of 99999999999999999999999 cycles", 0, false},
		{"[    0.001330] clocksource: kvm-clock: mask: 0xffffffffffffffff", 0, false},
	} {
		got, ok := parseClockLine(tc.line)
		if ok != tc.ok || math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("parseClockLine(%q) = %v, %v; want %v, %v", tc.line, got, ok, tc.want, tc.ok)
		}
	}
}

func TestDecodeResult(t *testing.T) {
	type out struct {
		Setup, Mark float64
		Err         bool
	}
	for _, tc := range []struct {
		json string
		want out
	}{
		{`{"setup_ms":31.5,"boot_marks":[{"id":2,"ms":900},{"id":1,"ms":812.25}]}`, out{31.5, 812.25, false}},
		{`{"setup_ms":31.5,"boot_marks":[]}`, out{31.5, 0, false}},
		{`{"result":"reboot"}`, out{0, 0, false}},
		{`{"setup_ms":`, out{0, 0, true}},
	} {
		s, m, err := decodeResult([]byte(tc.json))
		if d := cmp.Diff(tc.want, out{s, m, err != nil}); d != "" {
			t.Errorf("decodeResult(%s) (-want +got):\n%s", tc.json, d)
		}
	}
}

func TestParseKernelLine(t *testing.T) {
	var s bootSample
	for _, line := range []string{
		"BENCH-INIT uptime=0.62",
		"BENCH-KLOG [    0.000249] kvm-clock: using sched offset of 423295704 cycles",
		"BENCH-KLOG [    0.445610] Run /init as init process",
		"BENCH-KLOG [    0.851200] BENCH-MARK",
		"[    0.948580] reboot: Restarting system",
		"BENCH-KLOG [ garbage] BENCH-MARK",
		"BENCH-KLOG no time",
	} {
		s.parseKernelLine(line)
	}
	want := bootSample{clockMs: 423.295704, runMs: 445.61, kmarkMs: 851.2}
	if d := cmp.Diff(want, s, cmp.AllowUnexported(bootSample{}), cmpopts.EquateApprox(0, 1e-9)); d != "" {
		t.Errorf("parsed (-want +got):\n%s", d)
	}
}

func TestWriteBreakdown(t *testing.T) {
	// One boxd boot: exec at 0, package init at 100, KVM_CREATE_VM at 120,
	// vCPUs at 200, guest clock at 500, init at 800, the mark and its line
	// at 850.
	boxd := []bootSample{{initMs: 850, setupMs: 100, markMs: 650, clockMs: 380, runMs: 300, kmarkMs: 350}}
	// One QEMU boot: KVM_CREATE_VM at 400, guest clock at 650, init at 950,
	// the mark at 1000.
	qemu := []bootSample{{initMs: 1000, clockMs: 250, runMs: 300, kmarkMs: 350}}
	var b strings.Builder
	writeBreakdown(&b, boxd, qemu)
	got := map[string][2]string{}
	for _, line := range strings.Split(b.String(), "\n")[2:] {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		got[strings.Join(f[:len(f)-2], " ")] = [2]string{f[len(f)-2], f[len(f)-1]}
	}
	want := map[string][2]string{
		"exec -> monitor main (exec, runtime start)":     {"100.0", "-"},
		"monitor main -> vCPUs start (setup_ms)":         {"100.0", "-"},
		"exec -> KVM_CREATE_VM":                          {"120.0", "400.0"},
		"KVM_CREATE_VM -> vCPUs start (VM, kernel load)": {"80.0", "-"},
		"vCPUs start -> guest clock (early boot)":        {"300.0", "-"},
		"KVM_CREATE_VM -> guest clock (kvmclock)":        {"380.0", "250.0"},
		"exec -> guest clock":                            {"500.0", "650.0"},
		"guest clock -> init starts (kernel boot)":       {"300.0", "300.0"},
		"init starts -> init line (mounts, mark)":        {"50.0", "50.0"},
		"exec -> init line (total)":                      {"850.0", "1000.0"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("breakdown (-want +got):\n%s\n%s", d, b.String())
	}
}
