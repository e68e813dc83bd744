package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
)

// Kernel log lines BootInit copies to the console, each prefixed with
// klogPrefix and starting with the kernel's "[seconds.micros]" time:
//   - clockMarker: "kvm-clock: using sched offset of N cycles", N being the
//     kvmclock reading in ns (KVM starts a VM's kvmclock at zero at
//     KVM_CREATE_VM) when the guest started its clock, printk time zero;
//   - runMarker: init started;
//   - markMarker: BootInit's boot-timer mark.
const (
	klogPrefix  = "BENCH-KLOG "
	clockMarker = "kvm-clock: using sched offset of "
	runMarker   = "Run /init as init process"
	markMarker  = "BENCH-MARK"
)

// parseKernelLine records what a BENCH-KLOG console line says.
func (s *bootSample) parseKernelLine(line string) {
	i := strings.Index(line, klogPrefix)
	if i < 0 {
		return
	}
	line = line[i+len(klogPrefix):]
	if ms, ok := parseClockLine(line); ok {
		s.clockMs = ms
		return
	}
	t, ok := printkMs(line)
	if !ok {
		return
	}
	switch {
	case strings.Contains(line, runMarker):
		s.runMs = t
	case strings.Contains(line, markMarker):
		s.kmarkMs = t
	}
}

// printkMs reads the "[    0.445610] " time of a kernel log line in ms.
func printkMs(line string) (float64, bool) {
	line = strings.TrimSpace(line)
	if !strings.HasPrefix(line, "[") {
		return 0, false
	}
	end := strings.IndexByte(line, ']')
	if end < 0 {
		return 0, false
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(line[1:end]), 64)
	if err != nil || v < 0 {
		return 0, false
	}
	return v * 1000, true
}

// parseClockLine returns the sched offset in ms from a kernel log line
// holding the kvmclock message.
func parseClockLine(line string) (float64, bool) {
	i := strings.Index(line, clockMarker)
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(line[i+len(clockMarker):])
	if len(f) == 0 {
		return 0, false
	}
	ns, err := strconv.ParseUint(f[0], 10, 64)
	if err != nil {
		return 0, false
	}
	return float64(ns) / 1e6, true
}

// vmmResult is the part of "boxd vmm --result-json" the benchmark reads.
type vmmResult struct {
	SetupMs   float64 `json:"setup_ms"`
	BootMarks []struct {
		ID uint64  `json:"id"`
		Ms float64 `json:"ms"`
	} `json:"boot_marks"`
}

// markInit is the boot-timer id BootInit writes (boottimer.MarkInit).
const markInit = 1

// readResult returns the monitor's setup time and the init's boot-timer mark
// (ms after the vCPUs started; 0 when the guest wrote none).
func readResult(path string) (setupMs, markMs float64, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, fmt.Errorf("bench: result: %w", err)
	}
	return decodeResult(b)
}

func decodeResult(b []byte) (setupMs, markMs float64, err error) {
	var r vmmResult
	if err := json.Unmarshal(b, &r); err != nil {
		return 0, 0, fmt.Errorf("bench: result: %w", err)
	}
	for _, m := range r.BootMarks {
		if m.ID == markInit {
			return r.SetupMs, m.Ms, nil
		}
	}
	return r.SetupMs, 0, nil
}

// phase is one row of the breakdown: a span between two instants of a boot,
// computed from a sample; ok is false when the sample lacks what it needs.
type phase struct {
	name string
	span func(s bootSample) (float64, bool)
}

// Instants on the host clock, in ms after the exec of the monitor. The
// guest kernel's printk clock runs on kvmclock, which runs with the host's,
// so spans between kernel-logged instants are host times too.
//
//	exec   0
//	main   boxd's package init: vcpus - setup_ms
//	vm     KVM_CREATE_VM: clock - the kvmclock reading at the guest's clock start
//	vcpus  boxd's vCPUs start: mark - the boot-timer mark
//	clock  the guest kernel starts its clock (printk time 0)
//	run    the kernel starts init
//	mark   BootInit's mark, which it prints its line right after: taken as
//	       the moment the host reads that line
//
// Spans that need only guest and monitor clocks (vm -> vcpus -> clock ->
// run -> mark) are exact; those from exec carry the console's latency.
func (s bootSample) clock() (float64, bool) { return s.initMs - s.kmarkMs, s.kmarkMs > 0 }

func (s bootSample) vm() (float64, bool) {
	c, ok := s.clock()
	return c - s.clockMs, ok && s.clockMs > 0
}

// vcpusToClock is vcpus -> clock, from the boot-timer mark and the same
// moment on the guest's clock.
func (s bootSample) vcpusToClock() (float64, bool) {
	return s.markMs - s.kmarkMs, s.markMs > 0 && s.kmarkMs > 0
}

var phases = []phase{
	{"exec -> monitor main (exec, runtime start)", func(s bootSample) (float64, bool) {
		return s.initMs - s.markMs - s.setupMs, s.markMs > 0 && s.setupMs > 0
	}},
	{"monitor main -> vCPUs start (setup_ms)", func(s bootSample) (float64, bool) { return s.setupMs, s.setupMs > 0 }},
	{"exec -> KVM_CREATE_VM", func(s bootSample) (float64, bool) { return s.vm() }},
	{"KVM_CREATE_VM -> vCPUs start (VM, kernel load)", func(s bootSample) (float64, bool) {
		v, ok := s.vcpusToClock()
		return s.clockMs - v, ok && s.clockMs > 0
	}},
	{"vCPUs start -> guest clock (early boot)", func(s bootSample) (float64, bool) { return s.vcpusToClock() }},
	{"KVM_CREATE_VM -> guest clock (kvmclock)", func(s bootSample) (float64, bool) { return s.clockMs, s.clockMs > 0 }},
	{"exec -> guest clock", func(s bootSample) (float64, bool) { return s.clock() }},
	{"guest clock -> init starts (kernel boot)", func(s bootSample) (float64, bool) { return s.runMs, s.runMs > 0 }},
	{"init starts -> init line (mounts, mark)", func(s bootSample) (float64, bool) {
		return s.kmarkMs - s.runMs, s.runMs > 0 && s.kmarkMs > 0
	}},
	{"exec -> init line (total)", func(s bootSample) (float64, bool) { return s.initMs, true }},
}

// phaseMedian is the median of a phase over the samples that have it; NaN
// when none does.
func phaseMedian(p phase, ss []bootSample) float64 {
	var xs []float64
	for _, s := range ss {
		if v, ok := p.span(s); ok {
			xs = append(xs, v)
		}
	}
	if len(xs) == 0 {
		return math.NaN()
	}
	return Summarize(xs).Median
}

// writeBreakdown prints where each monitor's boot time goes, as medians of
// each phase (medians of parts do not add up exactly to the median total).
func writeBreakdown(w io.Writer, boxd, qemu []bootSample) {
	fmt.Fprintln(w, "breakdown, medians in ms after the monitor's exec (host clock):")
	fmt.Fprintf(w, "  %-48s %9s %9s\n", "phase", "boxd", "qemu")
	cell := func(v float64) string {
		if math.IsNaN(v) {
			return "-"
		}
		return fmt.Sprintf("%.1f", v)
	}
	for _, p := range phases {
		q := math.NaN()
		if len(qemu) > 0 {
			q = phaseMedian(p, qemu)
		}
		fmt.Fprintf(w, "  %-48s %9s %9s\n", p.name, cell(phaseMedian(p, boxd)), cell(q))
	}
}
