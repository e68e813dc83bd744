//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// stallReport describes what the threads of process pid are doing, for a
// test that found a guest making no progress: per thread its state, the
// CPU time it used over one second, the system call it is in and its kernel
// stack (empty for a thread on a CPU), then which KVM events L1's kernel
// traced for those threads over a short window: exit reasons with the
// guest RIPs they came from, injected interrupts and IPIs, halts. That is
// what tells a vCPU spinning through exits (and where) from one halted
// with an interrupt that never came. It costs about 1.5 s and needs root;
// what it cannot read it says it could not.
func stallReport(pid int) string {
	var b strings.Builder
	before := threadTimes(pid)
	// A diagnostic window, not a wait for readiness: the CPU each thread
	// burns in it tells a spinning vCPU from a sleeping one.
	time.Sleep(time.Second)
	after := threadTimes(pid)
	tids := make([]int, 0, len(after))
	for tid := range after {
		tids = append(tids, tid)
	}
	sort.Ints(tids)
	fmt.Fprintf(&b, "threads of pid %d (state, CPU used in the last second, syscall):\n", pid)
	for _, tid := range tids {
		a := after[tid]
		used := "?"
		if p, ok := before[tid]; ok {
			used = (a.cpu - p.cpu).String()
		}
		task := fmt.Sprintf("/proc/%d/task/%d", pid, tid)
		fmt.Fprintf(&b, "  %d %-15s %s cpu %-6s syscall %s\n", tid, a.comm, a.state, used, firstLine(task+"/syscall"))
		if st, err := os.ReadFile(task + "/stack"); err == nil && len(st) > 0 {
			for _, l := range strings.Split(strings.TrimSpace(string(st)), "\n") {
				fmt.Fprintf(&b, "      %s\n", l)
			}
		}
	}
	b.WriteString(kvmTrace(tids, 300*time.Millisecond))
	return b.String()
}

type threadTime struct {
	comm, state string
	cpu         time.Duration
}

// threadTimes reads each thread's name, state and user+system time.
func threadTimes(pid int) map[int]threadTime {
	out := map[int]threadTime{}
	stats, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	for _, p := range stats {
		tid, err := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if err != nil {
			continue
		}
		s, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// pid (comm) state ... utime(14) stime(15); comm may hold spaces.
		open, close := strings.IndexByte(string(s), '('), strings.LastIndexByte(string(s), ')')
		if open < 0 || close < open {
			continue
		}
		f := strings.Fields(string(s[close+1:]))
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		out[tid] = threadTime{comm: string(s[open+1 : close]), state: f[0], cpu: time.Duration(ut+st) * time.Second / 100}
	}
	return out
}

func firstLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "?"
	}
	l, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return l
}

// kvmTrace records L1's kvm trace events of threads tids for window and
// summarises them.
func kvmTrace(tids []int, window time.Duration) string {
	const dir = "/sys/kernel/tracing"
	if _, err := os.Stat(dir + "/events/kvm"); err != nil {
		if err := unix.Mount("nodev", dir, "tracefs", 0, ""); err != nil {
			return fmt.Sprintf("kvm trace: no tracefs at %s (mount: %v)\n", dir, err)
		}
		if _, err := os.Stat(dir + "/events/kvm"); err != nil {
			return fmt.Sprintf("kvm trace: no kvm events in %s: %v\n", dir, err)
		}
	}
	write := func(name, v string) error { return os.WriteFile(filepath.Join(dir, name), []byte(v), 0) }
	var pids []string
	for _, t := range tids {
		pids = append(pids, strconv.Itoa(t))
	}
	for _, step := range []struct{ name, v string }{
		{"tracing_on", "0"}, {"trace", ""}, {"set_event_pid", strings.Join(pids, " ")},
		{"events/kvm/enable", "1"}, {"tracing_on", "1"},
	} {
		if err := write(step.name, step.v); err != nil {
			return fmt.Sprintf("kvm trace: write %s: %v\n", step.name, err)
		}
	}
	time.Sleep(window) // the recording window
	_ = write("tracing_on", "0")
	_ = write("events/kvm/enable", "0")
	_ = write("set_event_pid", "")
	raw, err := os.ReadFile(filepath.Join(dir, "trace"))
	if err != nil {
		return fmt.Sprintf("kvm trace: read: %v\n", err)
	}
	return summariseKVMTrace(string(raw), window)
}

// traceLine matches "comm-tid [cpu] flags ts: event: details".
var traceLine = regexp.MustCompile(`^\s*(.+?)-(\d+)\s+\[\d+\].*?\s[\d.]+: (\w+): (.*)$`)

// summariseKVMTrace counts a trace's kvm events per thread, exits by
// reason and RIP, and keeps its last lines.
func summariseKVMTrace(raw string, window time.Duration) string {
	type key struct{ tid, what string }
	counts := map[key]int{}
	exits := map[string]int{}      // kvm_exit events per thread
	reasons := map[key]int{}       // kvm_exit events per thread and reason
	npfGPA := map[key]string{}     // the GPA of the last NPF exit per thread and RIP
	injectedPF := map[string]int{} // #PF injections per thread
	var lines []string
	for _, l := range strings.Split(raw, "\n") {
		m := traceLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		lines = append(lines, l)
		what := m[3]
		var gpa string
		switch m[3] {
		case "kvm_exit":
			// "vcpu 1 reason npf rip 0xffffffff81000000 info1 0x... info2 0x... ..."
			exits[m[2]]++
			f := strings.Fields(m[4])
			for i := 0; i+1 < len(f); i++ {
				switch f[i] {
				case "reason", "rip":
					what += " " + f[i] + " " + f[i+1]
					if f[i] == "reason" {
						reasons[key{m[2], f[i+1]}]++
					}
				case "info2":
					gpa = f[i+1]
				}
			}
			if strings.Contains(what, "reason npf ") {
				npfGPA[key{m[2], what}] = gpa
			}
		case "kvm_inj_exception":
			if strings.HasPrefix(m[4], "#PF") {
				injectedPF[m[2]]++
			}
		}
		counts[key{m[2], what}]++
	}
	var b strings.Builder
	fmt.Fprintf(&b, "kvm trace over %v: %d events\n", window, len(lines))
	keys := make([]key, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].tid != keys[j].tid {
			return keys[i].tid < keys[j].tid
		}
		return counts[keys[i]] > counts[keys[j]]
	})
	var tids []string
	for t := range exits {
		tids = append(tids, t)
	}
	sort.Strings(tids)
	for _, t := range tids {
		var rs []key
		for k := range reasons {
			if k.tid == t {
				rs = append(rs, k)
			}
		}
		sort.Slice(rs, func(i, j int) bool { return reasons[rs[i]] > reasons[rs[j]] })
		var parts []string
		for _, k := range rs {
			parts = append(parts, fmt.Sprintf("%s %d", k.what, reasons[k]))
		}
		fmt.Fprintf(&b, "  tid %s exits %d: %s\n", t, exits[t], strings.Join(parts, ", "))
	}
	shown := map[string]int{}
	for _, k := range keys {
		if shown[k.tid]++; shown[k.tid] > 12 {
			continue
		}
		fmt.Fprintf(&b, "  tid %s %6d × %s\n", k.tid, counts[k], k.what)
	}
	// A vCPU whose every exit is a nested page fault at one RIP, each
	// answered by injecting a #PF, is livelocked in L1's KVM: its page walk
	// reads a guest-physical address outside RAM, KVM takes it for MMIO,
	// cannot emulate the access and injects a #PF, whose own delivery
	// walks the same tables. A real CPU would triple-fault instead.
	for k, gpa := range npfGPA {
		if n := counts[k]; n >= 100 && 10*n >= 9*exits[k.tid] && 10*injectedPF[k.tid] >= 9*n {
			fmt.Fprintf(&b, "diagnosis: tid %s livelocked in L1's KVM: %d nested page faults (%s) on guest-physical %s, outside guest RAM, each injected back as a #PF that faults again\n",
				k.tid, n, strings.TrimPrefix(k.what, "kvm_exit "), gpa)
		}
	}
	if n := len(lines); n > 40 {
		lines = lines[n-40:]
	}
	b.WriteString("last events:\n")
	for _, l := range lines {
		b.WriteString("  " + strings.TrimSpace(l) + "\n")
	}
	return b.String()
}

// monitorsStallReport is stallReport for every boxd monitor ("boxd vmm")
// running now, for a test that timed out waiting on a guest: in the nested
// harness the guests run one test at a time, so these are the test's own.
func monitorsStallReport() string {
	var b strings.Builder
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		raw, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		argv := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if len(argv) < 2 || filepath.Base(argv[0]) != "boxd" || argv[1] != "vmm" {
			continue
		}
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if err != nil {
			continue
		}
		fmt.Fprintf(&b, "--- monitor %d: %s\n%s", pid, strings.Join(argv, " "), stallReport(pid))
	}
	if b.Len() == 0 {
		return "no boxd monitor is running\n"
	}
	return b.String()
}

// syscallSamples samples, n times at the given interval, which system call
// each thread of process pid is in (/proc/PID/task/TID/syscall: its number,
// or "running" in user space), and summarises per thread: a thread that
// burns CPU shows where (nanosleep for the Go runtime's sysmon, futex for
// its scheduler, epoll_wait or ioctl for a device or vCPU).
func syscallSamples(pid, n int, interval time.Duration) string {
	counts := map[string]map[string]int{}
	for range n {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
		for _, t := range tasks {
			comm, _ := os.ReadFile(filepath.Join(t, "comm"))
			name := strings.TrimSpace(string(comm)) + "/" + filepath.Base(t)
			nr, _, _ := strings.Cut(firstLine(filepath.Join(t, "syscall")), " ")
			if counts[name] == nil {
				counts[name] = map[string]int{}
			}
			counts[name][nr]++
		}
		time.Sleep(interval) // the sampling period
	}
	names := make([]string, 0, len(counts))
	for k := range counts {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	fmt.Fprintf(&b, "syscall samples (%d × %v; number or running):\n", n, interval)
	for _, k := range names {
		var parts []string
		for nr, c := range counts[k] {
			parts = append(parts, fmt.Sprintf("%s×%d", nr, c))
		}
		sort.Strings(parts)
		fmt.Fprintf(&b, "  %-18s %s\n", k, strings.Join(parts, " "))
	}
	return b.String()
}

// perfProfile samples process pid's threads with perf (software cpu-clock:
// L1 has no PMU) for window and returns the hottest thread/symbol pairs,
// user and kernel alike; "" with a reason when perf is missing or fails.
func perfProfile(pid int, window time.Duration) string {
	if _, err := exec.LookPath("perf"); err != nil {
		return "perf: not installed\n"
	}
	dir, err := os.MkdirTemp("", "perf")
	if err != nil {
		return fmt.Sprintf("perf: %v\n", err)
	}
	defer os.RemoveAll(dir)
	data := filepath.Join(dir, "perf.data")
	rec := exec.Command("perf", "record", "-q", "-e", "cpu-clock", "-F", "2000", "-p", strconv.Itoa(pid), "-o", data,
		"--", "sleep", fmt.Sprint(window.Seconds()))
	if out, err := rec.CombinedOutput(); err != nil {
		return fmt.Sprintf("perf record: %v: %s\n", err, out)
	}
	out, err := exec.Command("perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "pid,sym",
		"--percent-limit", "1").CombinedOutput()
	if err != nil {
		return fmt.Sprintf("perf report: %v: %s\n", err, out)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "perf over %v (thread, symbol, share of samples ≥ 1%%):\n", window)
	for _, l := range strings.Split(string(out), "\n") {
		if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "#") {
			b.WriteString("  " + t + "\n")
		}
	}
	return b.String()
}
