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

// BenchmarkForkE2E forks running guests of 256 MiB and 4 GiB (the same
// dirty set: a booted guest plus the same 64 MiB written in each),
// interleaved, and prints for each the median and p99 of: request to child
// running (the daemon's total_ms, checks included), the parent's pause,
// the monitor's own fork, and the CLI's wall time; then the 4 GiB/256 MiB
// ratio of medians. Never pass/fail on time. BOXD_FORK_RUNS sets the runs
// per size (default 15).
func BenchmarkForkE2E(b *testing.B) {
	needKVM(b)
	needRestore(b)
	runs := 15
	if v, err := strconv.Atoi(os.Getenv("BOXD_FORK_RUNS")); err == nil && v > 0 {
		runs = v
	}
	// XFS: disks clone by reflink, so both sizes fork their disk in O(1).
	d := startDaemonXFS(b, "--mem-dir", memTmpfs(b), "--max-mem", "4G")
	sizes := []string{"256M", "4G"}
	for _, s := range sizes {
		name := "p" + strings.ToLower(s)
		d.jsonCLI(new(vmDoc), "new", "--name="+name, "--cpus", "1", "--mem", s, "--disk", "4G")
		d.sh(name, "head -c 64M /dev/urandom > /dev/shm/dirty")
	}
	type sample struct{ total, paused, monitor, wall []float64 }
	samples := map[string]*sample{}
	for _, s := range sizes {
		samples[s] = &sample{}
	}
	for b.Loop() {
		for i := range runs {
			for _, s := range sizes {
				child := fmt.Sprintf("c%s-%d", strings.ToLower(s), i)
				var res forkDoc
				start := time.Now()
				d.jsonCLI(&res, "fork", "p"+strings.ToLower(s), "--name", child)
				wall := time.Since(start)
				if len(res.VMs) != 1 {
					b.Fatalf("fork %s: %+v", child, res)
				}
				sm := samples[s]
				sm.total = append(sm.total, res.VMs[0].Timing.TotalMs)
				sm.paused = append(sm.paused, res.Timing.ParentPausedMs)
				sm.monitor = append(sm.monitor, float64(res.Timing.MonitorForkUs)/1000)
				sm.wall = append(sm.wall, float64(wall.Microseconds())/1000)
				d.cli("destroy", child)
			}
		}
	}
	med := map[string]float64{}
	for _, s := range sizes {
		sm := samples[s]
		for _, m := range []struct {
			what string
			v    []float64
		}{{"request→child running", sm.total}, {"parent paused", sm.paused}, {"monitor fork", sm.monitor}, {"CLI wall", sm.wall}} {
			m50, p99 := quantiles(m.v)
			b.Logf("fork %5s guest: %-22s median %8.2f ms  p99 %8.2f ms  (n=%d)", s, m.what, m50, p99, len(m.v))
			if m.what == "request→child running" {
				med[s] = m50
			}
			if m.what == "monitor fork" {
				med[s+" monitor"] = m50
			}
		}
	}
	if med["256M"] > 0 && med["256M monitor"] > 0 {
		b.Logf("ratio 4G/256M: request→child running %.2f, monitor fork %.2f (environment: nested harness unless the host has VT-x/AMD-V)",
			med["4G"]/med["256M"], med["4G monitor"]/med["256M monitor"])
	}
}

func quantiles(v []float64) (median, p99 float64) {
	if len(v) == 0 {
		return 0, 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2], s[min(len(s)-1, (len(s)*99)/100)]
}
