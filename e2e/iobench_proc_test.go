//go:build e2e

package e2e

// The processes BenchmarkIOvsQEMU runs (monitors, network peers) and what
// it reads of them from /proc.

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ioProc is a process whose stdout is read line by line, with readiness
// checks that have deadlines.
type ioProc struct {
	cmd  *exec.Cmd
	ch   chan string   // stdout lines; closed at EOF
	done chan struct{} // closed when the process has exited

	mu     sync.Mutex
	all    strings.Builder
	stderr strings.Builder
}

func startIOProc(ctx context.Context, env []string, argv ...string) (*ioProc, error) {
	l := &ioProc{ch: make(chan string, 4096), done: make(chan struct{})}
	l.cmd = exec.CommandContext(ctx, argv[0], argv[1:]...)
	// Go's runtime prints every goroutine on SIGQUIT (see dump).
	l.cmd.Env = append(append(os.Environ(), "GOTRACEBACK=all"), env...)
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	l.cmd.Stdout = pw
	l.cmd.Stderr = &ioLockedWriter{mu: &l.mu, b: &l.stderr}
	if err := l.cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		return nil, err
	}
	pw.Close()
	go func() {
		defer close(l.ch)
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			l.mu.Lock()
			l.all.WriteString(sc.Text() + "\n")
			l.mu.Unlock()
			select {
			case l.ch <- sc.Text():
			default: // nobody reads this many lines; the transcript has them
			}
		}
	}()
	go func() { l.cmd.Wait(); close(l.done) }()
	return l, nil
}

// waitFor returns the next line containing s; it fails if the output ends or
// the deadline passes first.
func (l *ioProc) waitFor(s string, timeout time.Duration) (string, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		select {
		case line, ok := <-l.ch:
			if !ok {
				<-l.done
				return "", fmt.Errorf("output ended (%v) before %q", l.cmd.ProcessState, s)
			}
			if strings.Contains(line, s) {
				return line, nil
			}
		case <-deadline.C:
			return "", fmt.Errorf("no %q within %v", s, timeout)
		}
	}
}

// waitExit waits for the process to exit by itself.
func (l *ioProc) waitExit(timeout time.Duration) error {
	select {
	case <-l.done:
		if !l.cmd.ProcessState.Success() {
			return fmt.Errorf("exited: %v", l.cmd.ProcessState)
		}
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("still running %v after its last line", timeout)
	}
}

// dump asks a Go process for its goroutines (SIGQUIT; they go to stderr)
// and waits a bounded time for it to exit.
func (l *ioProc) dump() {
	if l.cmd.Process.Signal(syscall.SIGQUIT) == nil {
		select {
		case <-l.done:
		case <-time.After(10 * time.Second):
		}
	}
}

// stop kills the process (if still running) and waits for it.
func (l *ioProc) stop() {
	select {
	case <-l.done:
		return
	default:
	}
	l.cmd.Process.Kill()
	<-l.done
}

func (l *ioProc) transcript() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.all.String()
}

func (l *ioProc) stderrText() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stderr.String()
}

type ioLockedWriter struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w *ioLockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// ioCPUTime returns the user plus system time of process pid so far (0 if
// it cannot be read).
func ioCPUTime(pid int) time.Duration {
	return ioCPUTimeOf(fmt.Sprintf("/proc/%d/stat", pid))
}

// ioCPUTimeOf reads user plus system time from a /proc stat file.
func ioCPUTimeOf(path string) time.Duration {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, utime 14, stime 15 (clock ticks, 100 Hz).
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+st) * 10 * time.Millisecond
}

// ioThread is what one thread had used at a moment: CPU time and context
// switches (voluntary and not). A thread that switches far more often than
// its CPU time suggests is being woken for little work: the cost of that in
// L1 is the interrupts and IPIs, not the CPU it shows.
type ioThread struct {
	cpu      time.Duration
	switches int64
}

// ioThreadTimes returns what each thread of pid has used, by "comm/tid".
func ioThreadTimes(pid int) map[string]ioThread {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	m := map[string]ioThread{}
	for _, t := range tasks {
		tid, _ := strconv.Atoi(filepath.Base(t))
		comm, _ := os.ReadFile(filepath.Join(t, "comm"))
		key := fmt.Sprintf("%s/%d", strings.TrimSpace(string(comm)), tid)
		m[key] = ioThread{
			cpu:      ioCPUTimeOf(filepath.Join(t, "stat")),
			switches: ioSwitchesOf(filepath.Join(t, "status")),
		}
	}
	return m
}

// ioSwitchesOf sums voluntary_ctxt_switches and nonvoluntary_ctxt_switches
// from a /proc status file (0 if it cannot be read).
func ioSwitchesOf(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	var n int64
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if ok && strings.HasSuffix(k, "voluntary_ctxt_switches") {
			c, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			n += c
		}
	}
	return n
}

// ioBusiest formats the n threads that used the most CPU between two
// ioThreadTimes, as "comm/tid=time/switches": it tells vCPU threads (which
// carry the guest's own time) from the monitor's device and runtime
// threads, and shows which of them are woken most.
func ioBusiest(before, after map[string]ioThread, n int) string {
	type tc struct {
		tid string
		d   ioThread
	}
	var ts []tc
	for tid, a := range after {
		b := before[tid]
		ts = append(ts, tc{tid, ioThread{a.cpu - b.cpu, a.switches - b.switches}})
	}
	slices.SortFunc(ts, func(a, b tc) int { return cmp.Or(int(b.d.cpu-a.d.cpu), int(b.d.switches-a.d.switches)) })
	var parts []string
	for _, t := range ts[:min(n, len(ts))] {
		parts = append(parts, fmt.Sprintf("%s=%v/%dsw", t.tid, t.d.cpu, t.d.switches))
	}
	return fmt.Sprintf("%s of %d", strings.Join(parts, " "), len(ts))
}

// ioSystem returns L1-wide counters from /proc/stat and /proc/interrupts:
// context switches (ctxt), local timer interrupts (LOC), rescheduling
// IPIs (RES) and function-call IPIs (CAL, TLB shootdowns among them),
// summed over CPUs. Their change over a workload says how
// much waking a monitor causes beyond its own threads.
func ioSystem() map[string]int64 {
	m := map[string]int64{}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) == 2 && f[0] == "ctxt" {
				m["ctxt"], _ = strconv.ParseInt(f[1], 10, 64)
			}
		}
	}
	if b, err := os.ReadFile("/proc/interrupts"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) < 2 || (f[0] != "LOC:" && f[0] != "RES:" && f[0] != "CAL:") {
				continue
			}
			for _, c := range f[1:] {
				v, err := strconv.ParseInt(c, 10, 64)
				if err != nil {
					break
				}
				m[strings.TrimSuffix(f[0], ":")] += v
			}
		}
	}
	return m
}

// ioSystemDelta formats the change of ioSystem's counters.
func ioSystemDelta(before, after map[string]int64) string {
	var parts []string
	for _, k := range []string{"ctxt", "LOC", "RES", "CAL"} {
		parts = append(parts, fmt.Sprintf("%s %d", k, after[k]-before[k]))
	}
	return strings.Join(parts, " ")
}

// ioHugePages reports how much of pid's memory L1 backs with 2 MiB pages
// (transparent huge pages: anonymous, shmem such as boxd's memfd, and file
// mappings such as a restored snapshot), against its resident size. Guest
// RAM in 4 KiB pages costs L2 a longer nested page walk on every TLB miss,
// which is one way two runs of the same monitor can differ.
func ioHugePages(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	return ioHugePagesOf(string(b))
}

// ioHugePagesOf summarises a smaps_rollup text.
func ioHugePagesOf(rollup string) string {
	kb := map[string]int64{}
	for _, l := range strings.Split(rollup, "\n") {
		f := strings.Fields(l)
		if len(f) == 3 && f[2] == "kB" {
			kb[strings.TrimSuffix(f[0], ":")], _ = strconv.ParseInt(f[1], 10, 64)
		}
	}
	huge := kb["AnonHugePages"] + kb["ShmemPmdMapped"] + kb["FilePmdMapped"]
	return fmt.Sprintf("rss %d MiB, in huge pages %d MiB (anon %d, shmem %d, file %d)",
		kb["Rss"]>>10, huge>>10, kb["AnonHugePages"]>>10, kb["ShmemPmdMapped"]>>10, kb["FilePmdMapped"]>>10)
}
