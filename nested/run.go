package nested

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrTimeout is wrapped by Run's error when the command did not finish within
// Config.Timeout.
var ErrTimeout = errors.New("nested: timed out")

// DefaultTimeout bounds a run when Config.Timeout is zero.
const DefaultTimeout = 30 * time.Minute

// DefaultCPUs is L1's vCPU count when Config.CPUs is zero. One, because with
// two QEMU's multi-threaded TCG breaks L1 now and then: a fork-heavy 2-vCPU
// L2 guest (BenchmarkNestedFaults) met a reset, a livelock or an L1 kernel
// panic within a minute or two in most invocations on a 2-vCPU L1, and none
// in 38 runs on a 1-vCPU L1, where L1 hung once, after 9 minutes
// (docs/iobench.md, "Stalls and resets"; HangAfter catches that). L2
// guests may still have several vCPUs; they share L1's one. The e2e suite
// takes about a third longer.
const DefaultCPUs = 1

// errHung ends a run whose L1 stopped its heartbeat (Config.HangAfter).
var errHung = errors.New("nested: L1 hung")

// DefaultHangAfter is Config.HangAfter's default. L1 prints its heartbeat
// every 2 s; a busy L1 still does (it is one process among many), so two
// minutes of silence is a hang, not load. L1 has hung busy and silent, no
// panic on its console, until the run's timeout (45 minutes in make e2e).
const DefaultHangAfter = 2 * time.Minute

// Config describes one command to run with a hardware-backed /dev/kvm.
type Config struct {
	Cmd     []string      // argv; Cmd[0] is looked up in Env's PATH. Required.
	Dir     string        // working directory; default the caller's
	Env     []string      // environment; default os.Environ()
	OutDir  string        // writable directory shared with L1 at the same path, created if missing; "" for none
	Timeout time.Duration // default DefaultTimeout
	Mem     int           // L1 memory in MiB; default half the host's RAM, at most 8 GiB
	CPUs    int           // L1 vCPUs; default DefaultCPUs
	// HangAfter: an L1 whose heartbeat stops this long after it became
	// ready is stopped as hung; default DefaultHangAfter.
	HangAfter time.Duration
	ForceL1   bool // boot L1 even when the host has hardware virtualization

	// Stdout and Stderr receive the command's output as it is produced; nil
	// discards it. Log receives the harness's own messages: L1's readiness
	// time, QEMU's warnings, and with Verbose L1's serial console.
	Stdout, Stderr, Log io.Writer
	Verbose             bool

	onStart func(pid int) // tests: called with the PID of QEMU (or of a direct command)
}

// Run runs cfg.Cmd and returns its exit status. When the host has hardware
// virtualization (HostHasHardwareKVM) and cfg.ForceL1 is false the command
// runs directly on the host; otherwise it runs inside an L1 VM (see the
// package comment). The command's stdin is /dev/null.
//
// A non-nil error means the command's status is unknown: the harness failed
// (a *MissingError names a missing package), the timeout passed (ErrTimeout)
// or ctx was cancelled. Run returns only after QEMU, or the command's process
// group in a direct run, is gone.
func Run(ctx context.Context, cfg Config) (int, error) {
	hw, reason := HostHasHardwareKVM()
	return run(ctx, cfg, hw && !cfg.ForceL1, reason)
}

// run runs cfg directly on the host or in L1; why says why, for direct runs.
func run(ctx context.Context, cfg Config, direct bool, why string) (int, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return -1, err
	}
	ctx, cancel := context.WithTimeoutCause(ctx, cfg.Timeout, ErrTimeout)
	defer cancel()
	if direct {
		fmt.Fprintf(cfg.Log, "nested: %s; running the command on the host\n", why)
		return runDirect(ctx, cfg)
	}
	return runL1(ctx, cfg)
}

func (cfg Config) withDefaults() (Config, error) {
	if len(cfg.Cmd) == 0 || cfg.Cmd[0] == "" {
		return cfg, errors.New("nested: no command")
	}
	var err error
	if cfg.Dir == "" {
		if cfg.Dir, err = os.Getwd(); err != nil {
			return cfg, fmt.Errorf("nested: %w", err)
		}
	}
	if cfg.Dir, err = filepath.Abs(cfg.Dir); err != nil {
		return cfg, fmt.Errorf("nested: %w", err)
	}
	if cfg.Env == nil {
		cfg.Env = os.Environ()
	}
	if cfg.OutDir != "" {
		if cfg.OutDir, err = filepath.Abs(cfg.OutDir); err != nil {
			return cfg, fmt.Errorf("nested: %w", err)
		}
		// The directory must exist on the host before L1 can mount over it.
		if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
			return cfg, fmt.Errorf("nested: output directory: %w", err)
		}
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Mem <= 0 {
		cfg.Mem = defaultMemMiB()
	}
	if cfg.CPUs <= 0 {
		cfg.CPUs = DefaultCPUs
	}
	if cfg.HangAfter <= 0 {
		cfg.HangAfter = DefaultHangAfter
	}
	// Every writer is used from several goroutines, and callers often pass
	// the same one twice (stderr as Stderr and Log), so one lock guards all.
	var mu sync.Mutex
	cfg.Stdout = lockedWriter(&mu, cfg.Stdout)
	cfg.Stderr = lockedWriter(&mu, cfg.Stderr)
	cfg.Log = lockedWriter(&mu, cfg.Log)
	return cfg, nil
}

// defaultMemMiB is half the host's RAM, at most 8 GiB and at least 1 GiB.
// TCG allocates guest memory lazily, so this is a ceiling, not a cost.
func defaultMemMiB() int {
	var si syscall.Sysinfo_t
	if err := syscall.Sysinfo(&si); err != nil {
		return 4096
	}
	half := int(uint64(si.Totalram) * uint64(si.Unit) / 2 >> 20)
	return max(1024, min(8192, half))
}

type syncWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (s syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func lockedWriter(mu *sync.Mutex, w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return syncWriter{mu: mu, w: w}
}

// runL1 boots L1 and runs the command in it.
func runL1(ctx context.Context, cfg Config) (int, error) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return -1, &MissingError{What: "qemu-system-x86_64 (package qemu-system-x86)"}
	}
	k, err := FindKernel("/boot", "/lib/modules")
	if err != nil {
		return -1, err
	}
	cache, err := CacheDir()
	if err != nil {
		return -1, fmt.Errorf("nested: %w", err)
	}
	initrd, err := l1Initramfs(cfg.Log, cache, k)
	if err != nil {
		return -1, err
	}
	kernel := l1Kernel(cfg.Log, cache, k)
	spec := runSpec{
		cmd:      cfg.Cmd,
		dir:      cfg.Dir,
		env:      l1Env(cfg.Env, cfg.OutDir),
		overlays: writableDirs(cfg.Env),
		outDir:   cfg.OutDir,
	}
	if err := spec.validate(); err != nil {
		return -1, fmt.Errorf("nested: %w", err)
	}
	runDir, err := os.MkdirTemp("", "boxd-nested-")
	if err != nil {
		return -1, fmt.Errorf("nested: %w", err)
	}
	defer os.RemoveAll(runDir)
	if err := spec.write(runDir); err != nil {
		return -1, fmt.Errorf("nested: %w", err)
	}
	args := qemuArgs(machine{
		kernel: kernel,
		initrd: initrd,
		memMiB: cfg.Mem,
		cpus:   cfg.CPUs,
		runDir: runDir,
		outDir: cfg.OutDir,
	})
	return boot(ctx, cfg, qemu, args, runDir)
}

// l1Initramfs returns the path of L1's initramfs for kernel k, from the cache
// or freshly built.
func l1Initramfs(log io.Writer, cache string, k Kernel) (string, error) {
	db, err := LoadModuleDB(k.ModulesDir)
	if err != nil {
		return "", fmt.Errorf("nested: %w", err)
	}
	mods, err := db.Resolve(initModules...)
	if err != nil {
		return "", fmt.Errorf("nested: kernel %s: %w", k.Version, err)
	}
	bb, err := findBusybox("/bin/busybox", "/usr/bin/busybox")
	if err != nil {
		return "", err
	}
	t0 := time.Now()
	path, built, err := ensureInitramfs(cache, k.Version, initramfs{busybox: bb, init: l1Init, modules: mods})
	if err != nil {
		return "", fmt.Errorf("nested: %w", err)
	}
	if built {
		fmt.Fprintf(log, "nested: built L1 initramfs for kernel %s in %.2fs: %s\n", k.Version, time.Since(t0).Seconds(), path)
	}
	return path, nil
}

// boot starts QEMU with args, streams the command's output from runDir, and
// returns the command's exit status once QEMU is gone.
func boot(ctx context.Context, cfg Config, qemu string, args []string, runDir string) (int, error) {
	st := &runState{}
	wd := &watchdog{after: cfg.HangAfter}
	var start time.Time
	fl, err := newFollower(runDir, cfg.Stdout, cfg.Stderr, func(uptime float64) {
		wd.arm(time.Now())
		st.mu.Lock()
		st.ready = time.Since(start)
		st.mu.Unlock()
		fmt.Fprintf(cfg.Log, "nested: L1 ready in %.2fs (QEMU start to CMD start; L1 kernel uptime %.2fs)\n",
			time.Since(start).Seconds(), uptime)
	})
	if err != nil {
		return -1, fmt.Errorf("nested: %w", err)
	}
	// The serial console (fdConsole), then QEMU's own stdout and stderr.
	var rs, ws [2]*os.File
	for i := range rs {
		r, w, err := os.Pipe()
		if err != nil {
			closeAll(rs[:i])
			closeAll(ws[:i])
			fl.close()
			return -1, fmt.Errorf("nested: %w", err)
		}
		rs[i], ws[i] = r, w
	}
	defer closeAll(rs[:])
	cmd := exec.Command(qemu, args...)
	cmd.ExtraFiles = ws[:1]
	cmd.Stdout, cmd.Stderr = ws[1], ws[1]
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid: true,
		// If boxd dies, the kernel kills QEMU. Pdeathsig follows the thread
		// that forked, and the Go runtime never ends a thread that no
		// goroutine has locked, so it lasts as long as this process.
		Pdeathsig: syscall.SIGKILL,
	}
	if ctx.Err() != nil {
		closeAll(ws[:])
		fl.close()
		return -1, stopErr(ctx, cfg.Timeout, true)
	}
	start = time.Now()
	err = cmd.Start()
	// Only QEMU holds the write ends now, so each reader sees EOF when it exits.
	closeAll(ws[:])
	if err != nil {
		fl.close()
		return -1, fmt.Errorf("nested: start %s: %w", qemu, err)
	}
	if cfg.onStart != nil {
		cfg.onStart(cmd.Process.Pid)
	}

	var wg sync.WaitGroup
	goRead := func(f func()) {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	var consoleLog io.Writer
	if cfg.Verbose {
		consoleLog = cfg.Log
	}
	goRead(func() {
		filterLines(rs[0], consoleLog, "l1: ", func(l string) bool {
			if strings.TrimSpace(l) == heartbeatLine {
				wd.beat(time.Now())
				return false
			}
			st.mu.Lock()
			st.console.add(l)
			st.mu.Unlock()
			return true
		})
	})
	goRead(func() {
		filterLines(rs[1], cfg.Log, "qemu: ", func(l string) bool { st.mu.Lock(); st.qemu.add(l); st.mu.Unlock(); return true })
	})
	stop := make(chan struct{})
	goRead(func() { fl.run(stop) })
	// A hung L1 is stopped like a timed-out one: by ending supervise's context.
	sctx, hung := context.WithCancelCause(ctx)
	defer hung(nil)
	goRead(func() { watchL1(wd, stop, cfg.Log, st, hung) })
	waitErr := supervise(sctx, cmd)
	close(stop)
	wg.Wait()

	st.mu.Lock()
	defer st.mu.Unlock()
	// L1 writes the status after the last byte of output, and 9p writes
	// are synchronous, so a status means the output above is complete.
	if b, err := os.ReadFile(filepath.Join(runDir, fileStatus)); err == nil {
		if status, err := parseStatus(b); err == nil {
			return status, nil
		}
	}
	if ctx.Err() != nil {
		return -1, stopErr(ctx, cfg.Timeout, st.ready == 0)
	}
	what := "L1 stopped before the command finished"
	if st.hung > 0 {
		what += fmt.Sprintf(": it hung (no heartbeat for %s) and was stopped", st.hung.Round(time.Second))
	}
	if b, err := os.ReadFile(filepath.Join(runDir, fileError)); err == nil && len(b) > 0 {
		what = "L1: " + strings.Join(strings.Fields(sanitize(strings.ReplaceAll(string(b), "\n", "; "))), " ")
	}
	return -1, fmt.Errorf("nested: %s (qemu: %v)%s", what, exitText(waitErr), st.details())
}

// watchL1 checks the watchdog every second until stop and, when L1's
// heartbeat has stopped for too long, records it and calls hung, which
// stops QEMU.
func watchL1(wd *watchdog, stop <-chan struct{}, log io.Writer, st *runState, hung context.CancelCauseFunc) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			silent, fire := wd.check(now)
			if !fire {
				continue
			}
			st.mu.Lock()
			st.hung = silent
			st.mu.Unlock()
			fmt.Fprintf(log, "nested: L1 hung: no heartbeat for %s; stopping it\n", silent.Round(time.Second))
			hung(errHung)
			return
		}
	}
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		if f != nil {
			f.Close()
		}
	}
}

// supervise waits for cmd, started as the leader of its own process group,
// and kills the whole group with SIGKILL if ctx ends first.
func supervise(ctx context.Context, cmd *exec.Cmd) error {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		// The group leader is not reaped yet, so its PID is still the group's.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		return <-done
	}
}

// stopErr explains why a run ended early through ctx.
func stopErr(ctx context.Context, timeout time.Duration, notReady bool) error {
	where := ""
	if notReady {
		where = " (L1 was not ready yet)"
	}
	if cause := context.Cause(ctx); errors.Is(cause, ErrTimeout) {
		return fmt.Errorf("%w after %s%s", ErrTimeout, timeout, where)
	}
	return fmt.Errorf("nested: stopped%s: %w", where, context.Cause(ctx))
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// details renders the console and QEMU tails for an error message.
// The caller holds st.mu.
func (st *runState) details() string {
	var b strings.Builder
	if len(st.console.lines) > 0 {
		b.WriteString("\nL1 console (last lines):")
		for _, l := range st.console.lines {
			b.WriteString("\n  " + l)
		}
	}
	if len(st.qemu.lines) > 0 {
		b.WriteString("\nQEMU said:")
		for _, l := range st.qemu.lines {
			b.WriteString("\n  " + l)
		}
	}
	return b.String()
}
