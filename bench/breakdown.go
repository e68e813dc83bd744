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

// clockMarker starts the guest kernel's kvmclock line, which BootInit copies
// to the console: "kvm-clock: using sched offset of N cycles", N being the
// kvmclock reading (ns since KVM_CREATE_VM: KVM starts a VM's kvmclock at
// zero) when the guest started its own clock.
const clockMarker = "kvm-clock: using sched offset of "

// parseClockLine returns the sched offset in ms from a console line holding
// the kernel's kvmclock message.
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

// The instants, in ms after the exec of the monitor on the host clock:
//
//	exec (0)
//	main        boxd's package init: vCPUs start - setup_ms
//	vm          KVM_CREATE_VM: clock - the guest's kvmclock reading at its clock start
//	vcpus       vCPUs start: init - the boot-timer mark (the mark is stored just
//	            before the uptime is read and the init line printed)
//	clock       the guest's clock starts: init - uptime
//	init        the init's line reaches the host
func (s bootSample) clock() float64 { return s.initMs - s.uptimeMs }

func (s bootSample) vm() (float64, bool) { return s.clock() - s.clockMs, s.clockMs > 0 }

func (s bootSample) vcpus() (float64, bool) { return s.initMs - s.markMs, s.markMs > 0 }

var phases = []phase{
	{"exec -> monitor main (exec, runtime start)", func(s bootSample) (float64, bool) {
		v, ok := s.vcpus()
		return v - s.setupMs, ok && s.setupMs > 0
	}},
	{"exec -> KVM_CREATE_VM", func(s bootSample) (float64, bool) { return s.vm() }},
	{"monitor main -> vCPUs start (setup_ms)", func(s bootSample) (float64, bool) { return s.setupMs, s.setupMs > 0 }},
	{"KVM_CREATE_VM -> vCPUs start (VM, kernel load)", func(s bootSample) (float64, bool) {
		vm, ok1 := s.vm()
		v, ok2 := s.vcpus()
		return v - vm, ok1 && ok2
	}},
	{"vCPUs start -> guest clock (early boot)", func(s bootSample) (float64, bool) {
		v, ok := s.vcpus()
		return s.clock() - v, ok
	}},
	{"KVM_CREATE_VM -> guest clock (kvmclock)", func(s bootSample) (float64, bool) { return s.clockMs, s.clockMs > 0 }},
	{"exec -> guest clock", func(s bootSample) (float64, bool) { return s.clock(), true }},
	{"guest clock -> init (guest's uptime)", func(s bootSample) (float64, bool) { return s.uptimeMs, true }},
	{"exec -> init (total)", func(s bootSample) (float64, bool) { return s.initMs, true }},
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
