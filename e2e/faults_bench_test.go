//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// faultGuest is a 2-vCPU guest that starts processes as fast as three
// shells can (each a new address space, so a stream of page-table switches
// and page walks), then powers off. Under the nested harness it meets the
// harness's faults (docs/iobench.md, "Stalls and resets") within a few runs.
var faultGuest = guestScript(`work() { i=0; while [ $i -lt 1500 ]; do /bin/busybox true; i=$((i+1)); done; }
work & work & work & wait`)

// BenchmarkNestedFaults counts how often the nested harness breaks a guest
// that boxd runs correctly: BOXD_FAULTS_RUNS (default 12) runs of
// faultGuest, each a poweroff, a "triple fault at rip 0xfff0" reset, a
// livelock (no poweroff within 90 s; the stall report's diagnosis is
// printed) or anything else, which fails the benchmark. It measures the
// harness, not boxd: run it before and after a change to the harness (its
// QEMU, L1's kernel or settings) to see whether the change helps. On a
// host with VT-x/AMD-V every run should power off.
func BenchmarkNestedFaults(b *testing.B) {
	needKVM(b)
	runs := 12
	if v := os.Getenv("BOXD_FAULTS_RUNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("BOXD_FAULTS_RUNS=%q: want a positive count", v)
		}
		runs = n
	}
	rd := initramfs(b, faultGuest)
	kern := guestKernel(b)
	// b.Loop here makes go1.26.8's compiler crash (an internal compiler
	// error); b.N does the same with -benchtime 1x.
	for range b.N {
		var ok, reset, stalled int
		for i := range runs {
			start := time.Now()
			r, err := tryVMM(b, 90*time.Second, "--kernel", kern, "--initrd", rd, "--mem-mib", "512", "--cpus", "2")
			took := time.Since(start).Round(time.Millisecond)
			switch {
			case err != nil && strings.Contains(err.Error(), "signal: killed"):
				stalled++
				b.Logf("run %d: no poweroff within 90 s; %s", i, diagnosis(err.Error()))
			case err != nil:
				b.Fatalf("run %d: %v", i, err)
			case r.Status == 0 && slices.Equal(marks(r.Console, "E2E-STATUS"), []string{"0"}):
				ok++
				b.Logf("run %d: poweroff in %v", i, took)
			case strings.Contains(r.Result.Detail, "triple fault at rip 0xfff0"):
				reset++
				b.Logf("run %d: %s after %v", i, r.Result.Detail, took)
			default:
				b.Fatalf("run %d: exit status %d, result %+v: not a harness fault\nstderr:\n%s\nconsole:\n%s", i, r.Status, r.Result, r.Stderr, tail(r.Console, 20))
			}
		}
		fmt.Printf("NESTED-FAULTS runs %d poweroff %d reset %d livelock %d (%.0f%% faulted)\n",
			runs, ok, reset, stalled, 100*float64(reset+stalled)/float64(runs))
	}
}

// diagnosis is the stall report's diagnosis line, if it has one.
func diagnosis(report string) string {
	for _, l := range strings.Split(report, "\n") {
		if strings.Contains(l, "diagnosis:") {
			return strings.TrimSpace(l)
		}
	}
	return "no diagnosis in the stall report"
}
