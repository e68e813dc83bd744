//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/boxd-dev/boxd/agent"
	guestrd "github.com/boxd-dev/boxd/guest-init/initramfs"
)

// agentVM is a "boxd vmm" booted from the Debian image with boxd's initramfs,
// its agent connected.
type agentVM struct {
	c       *agent.Client
	cmd     *exec.Cmd
	exited  chan error
	console string
	result  string
	stderr  bytes.Buffer
}

// bootAgentVM boots kernel + guest initramfs + disk (as TestAgentInVM does)
// and connects to the agent.
func bootAgentVM(tb testing.TB, ctx context.Context, initrd, disk, cmdline string) *agentVM {
	tb.Helper()
	dir := tb.TempDir()
	sock := filepath.Join(dir, "vsock.sock")
	v := &agentVM{console: filepath.Join(dir, "console.log"), result: filepath.Join(dir, "result.json"), exited: make(chan error, 1)}
	v.cmd = exec.CommandContext(ctx, boxdBin(tb), "vmm", "--kernel", guestKernel(tb), "--initrd", initrd,
		"--mem-mib", "1024", "--cpus", "2", "--console", v.console, "--result-json", v.result,
		"--vsock", "cid=3,path="+sock, "--disk", disk, "--cmdline", "boxd.root=/dev/vda "+cmdline)
	v.cmd.Stderr = &v.stderr
	if err := v.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() { v.exited <- v.cmd.Wait() }()
	v.c = dialAgent(tb, ctx, sock, v.exited, v.dump(tb))
	return v
}

func (v *agentVM) dump(tb testing.TB) func() {
	return func() {
		c, _ := os.ReadFile(v.console)
		tb.Logf("stderr:\n%s\nconsole:\n%s", v.stderr.String(), c)
	}
}

// poweroff powers the guest off from inside and returns its boot-timer marks
// (ms after the vCPUs started), by id.
func (v *agentVM) poweroff(tb testing.TB, ctx context.Context) map[uint64]float64 {
	tb.Helper()
	if p, err := v.c.Exec(ctx, agent.ExecRequest{Argv: []string{"poweroff"}}); err == nil {
		p.Wait()
	}
	v.c.Close()
	select {
	case <-v.exited:
	case <-ctx.Done():
		v.dump(tb)()
		tb.Fatal("VM still running after poweroff")
	}
	var r struct {
		BootMarks []struct {
			ID uint64  `json:"id"`
			Ms float64 `json:"ms"`
		} `json:"boot_marks"`
	}
	b, err := os.ReadFile(v.result)
	if err == nil {
		err = json.Unmarshal(b, &r)
	}
	if err != nil {
		tb.Fatalf("result json: %v", err)
	}
	m := map[uint64]float64{}
	for _, mk := range r.BootMarks {
		m[mk.ID] = mk.Ms
	}
	return m
}

// spawnFloor is run by python3 in the guest: n posix_spawn+waitpid of true,
// each timed in the guest and preceded by an untimed sleep, printed in ns. glibc's posix_spawn is a
// CLONE_VM|CLONE_VFORK clone, as Go's os/exec is: the guest's own floor for
// running a process, with no agent and no vsock in it.
const spawnFloor = `
import os, sys, time
env = {"PATH": "/usr/bin:/bin"}
out = []
for _ in range(int(sys.argv[1])):
    time.sleep(float(sys.argv[2]))
    t0 = time.perf_counter_ns()
    pid = os.posix_spawn("/bin/true", ["true"], env)
    os.waitpid(pid, 0)
    out.append(time.perf_counter_ns() - t0)
print(" ".join(map(str, out)))
`

// BenchmarkExecRoundTrip measures, in one VM and alternating in one run: the
// bare agent round trip (ping), the round trip of exec of `true` through the
// agent, and the guest's own cost of spawning and reaping `true` (the floor no
// agent can beat). It prints medians, p99 and exec/ping, and from separate
// boots of the same VM boot-to-init and the share init + agent add to it.
// It asserts nothing about time. Run it with -test.bench ExecRoundTrip
// -test.benchtime 1x in the nested harness.
func BenchmarkExecRoundTrip(b *testing.B) {
	const (
		boots  = 5   // boots for the boot-timer marks (per initramfs)
		rounds = 200 // ping / exec pairs
		blocks = 4   // floor blocks interleaved with the pairs
	)
	needKVM(b)
	disk, why := rootDisk(b)
	if disk == "" {
		b.Fatalf("root image: %s (make image builds it)", why)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()

	// Boot-to-init and init + agent, quiet boots (the default command line's
	// "quiet"): mark 1 when init starts, mark 2 when the agent serves. With
	// BOXD_BENCH_BASE_INITRAMFS (say, the previous build's), boots alternate
	// between it and this one: an A/B in one run, on one noisy machine.
	type variant struct {
		name, initrd            string
		initMs, agentMs, shares []float64
	}
	variants := []*variant{{name: "this initramfs", initrd: guestInitramfs(b, guestrd.None)}}
	if base := os.Getenv("BOXD_BENCH_BASE_INITRAMFS"); base != "" {
		variants = append(variants, &variant{name: "base initramfs", initrd: base})
	}
	for range boots {
		for _, vr := range variants {
			v := bootAgentVM(b, ctx, vr.initrd, disk, "")
			m := v.poweroff(b, ctx)
			i, ok1 := m[1]
			a, ok2 := m[2]
			if !ok1 || !ok2 {
				b.Fatalf("%s: boot-timer marks %v, want 1 and 2", vr.name, m)
			}
			vr.initMs, vr.agentMs, vr.shares = append(vr.initMs, i), append(vr.agentMs, a-i), append(vr.shares, (a-i)/i)
		}
	}

	// One verbose boot: init's steps with their times, then the round trips.
	v := bootAgentVM(b, ctx, variants[0].initrd, disk, "boxd.verbose=1")
	c := v.c
	var ping, execRT, execStart, execEnd []float64
	execTrue := func() {
		t0 := time.Now()
		p, err := c.Exec(ctx, agent.ExecRequest{Argv: []string{"true"}})
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if st, err := p.Wait(); err != nil || st.Code != 0 {
			b.Fatalf("true: %+v, %v", st, err)
		}
		t2 := time.Now()
		execRT = append(execRT, ms(t2.Sub(t0)))
		execStart, execEnd = append(execStart, ms(t1.Sub(t0))), append(execEnd, ms(t2.Sub(t1)))
	}
	// The floor, back to back (caches warm, vCPUs busy) and with the guest
	// idle 20 ms between spawns, as it is between the agent's requests.
	var floor, idleFloor []float64
	spawns := func(n int, gap string) []float64 {
		// Separate buffers: two copies into one bytes.Buffer race.
		var out, errOut bytes.Buffer
		p, err := c.Exec(ctx, agent.ExecRequest{Argv: []string{"python3", "-c", spawnFloor, strconv.Itoa(n), gap}, Stdout: &out, Stderr: &errOut})
		if err != nil {
			b.Fatal(err)
		}
		if st, err := p.Wait(); err != nil || st.Code != 0 {
			b.Fatalf("spawn floor: %+v, %v: %s", st, err, errOut.String())
		}
		var ms []float64
		for _, f := range strings.Fields(out.String()) {
			ns, err := strconv.ParseInt(f, 10, 64)
			if err != nil {
				b.Fatalf("spawn floor output %q", out.String())
			}
			ms = append(ms, float64(ns)/1e6)
		}
		return ms
	}
	runFloor := func(n int) {
		floor = append(floor, spawns(n, "0")...)
		idleFloor = append(idleFloor, spawns(n, "0.02")...)
	}
	// Warm up: first exec pages in true, libc and the agent's exec path.
	for range 5 {
		execTrue()
		if err := c.Ping(ctx); err != nil {
			b.Fatal(err)
		}
	}
	execRT, execStart, execEnd = nil, nil, nil
	b.ResetTimer()
	for i := range rounds {
		if i%(rounds/blocks) == 0 {
			runFloor(rounds / blocks)
		}
		t0 := time.Now()
		if err := c.Ping(ctx); err != nil {
			b.Fatal(err)
		}
		ping = append(ping, msSince(t0))
		execTrue()
	}
	b.StopTimer()
	cons, _ := os.ReadFile(v.console)
	v.poweroff(b, ctx)

	for _, l := range marks(string(cons), "boxd-init: ") {
		b.Logf("  init (verbose boot): %s", l)
	}
	for _, st := range variants {
		b.Logf("boot timer, %s, %d quiet boots: init started at median %.1f ms; init + agent median %.1f ms (min %.1f); share of boot-to-init median %.1f%% (%s) (target <= 30%%)",
			st.name, boots, median(st.initMs), median(st.agentMs), slices.Min(st.agentMs), 100*median(st.shares), pcts(st.shares))
	}
	b.Logf("round trips over vsock, alternating, n=%d: ping %s; exec true %s (to Reply %s, Reply to Close %s)",
		rounds, stats(ping), stats(execRT), stats(execStart), stats(execEnd))
	b.Logf("guest spawn+wait of true (posix_spawn, timed in the guest), n=%d: back to back %s; 20 ms idle between spawns %s",
		len(floor), stats(floor), stats(idleFloor))
	b.Logf("ratios of medians: exec/ping %.2f (target <= 2); floor/ping %.2f; (exec - ping - floor) %.2f ms",
		median(execRT)/median(ping), median(floor)/median(ping), median(execRT)-median(ping)-median(floor))
	b.ReportMetric(median(ping), "ping-ms")
	b.ReportMetric(median(execRT), "exec-ms")
	b.ReportMetric(median(floor), "floor-ms")
	b.ReportMetric(median(execRT)/median(ping), "exec/ping")
	b.ReportMetric(100*median(variants[0].shares), "init+agent-%")
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// p99 returns the 99th percentile (nearest rank).
func p99(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[min(len(s)-1, (99*len(s)+99)/100-1)]
}

func stats(xs []float64) string {
	return fmt.Sprintf("median %.2f ms, p99 %.2f ms", median(xs), p99(xs))
}

func pcts(xs []float64) string {
	var s []string
	for _, x := range xs {
		s = append(s, fmt.Sprintf("%.1f%%", 100*x))
	}
	return strings.Join(s, " ")
}
