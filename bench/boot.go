package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/boxd-dev/boxd/internal/initrd"
	"github.com/boxd-dev/boxd/vmm/machine"
)

// BootInit is PID 1 of the boot benchmark. It marks the boot timer (boxd's
// monitor records the host time; under QEMU the store hits an unassigned
// address and is dropped) and logs a kernel message at the same moment, so
// the mark has a time on the guest kernel's clock too; it prints its init
// line, then the kernel's lines the breakdown needs, and reboots (boxd's
// monitor exits on the reset, QEMU on -no-reboot).
//
// Guest times come from the kernel's printk clock (kvmclock-based sched_clock,
// zero when the kernel started kvmclock), not /proc/uptime: until the kernel
// switches its clocksource to kvm-clock, uptime advances by jiffies, and
// nested under TCG the timer ticks come late, so uptime at init reads
// 0.62 s where the host saw 0.85 s (measured).
const BootInit = `#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t devtmpfs dev /dev
$B devmem 0xc0000000 32 1
echo BENCH-MARK >/dev/kmsg
read up idle </proc/uptime
echo "BENCH-INIT uptime=$up"
$B dmesg | $B grep -e 'kvm-clock: using sched offset' -e 'Run /init as init process' -e BENCH-MARK | $B sed 's/^/BENCH-KLOG /'
$B reboot -f
`

// qemuCmdline is boxd's default command line, except that the guest reboots
// by triple fault: microvm has no i8042, so "reboot=k" would fall through to a
// BIOS restart that -no-reboot does not catch.
var qemuCmdline = strings.Replace(machine.DefaultCmdline, "reboot=k", "reboot=t", 1)

// BootConfig describes a boot benchmark.
type BootConfig struct {
	Boxd   string // path of the boxd binary
	QEMU   string // path of qemu-system-x86_64; "" skips the QEMU side
	Kernel string // vmlinux (PVH)
	Initrd string // "" writes a busybox initramfs running BootInit
	CPUs   int
	MemMiB int
	Runs   int
	Out    io.Writer
}

// bootSample is one boot. Times are in ms on the host clock from the exec of
// the monitor, unless said otherwise.
type bootSample struct {
	initMs   float64 // exec of the monitor to the init's first console line
	exitMs   float64 // exec to the monitor's exit
	uptimeMs float64 // the guest's /proc/uptime at init (runs slow before kvm-clock; see BootInit)
	// From the guest kernel's log, on its printk clock (ms since it started
	// kvmclock), 0 when missing: init started (runMs) and BootInit's mark
	// (kmarkMs); and the kvmclock reading when the guest started its clock
	// (clockMs: KVM starts a VM's kvmclock at zero at KVM_CREATE_VM).
	runMs, kmarkMs, clockMs float64
	// boxd only, from --result-json: process start (package init) to the
	// vCPUs starting, and the init's boot-timer mark after the vCPUs started.
	setupMs, markMs float64
	anonKiB         float64 // boxd only: the monitor's private memory (RssAnon), sampled at init
	fileKiB         float64 // boxd only: file pages mapped (RssFile: mostly boxd's text, shared by every monitor)
}

// Boot boots the kernel Runs times under each monitor, alternating, and prints
// a report.
func Boot(ctx context.Context, cfg BootConfig) error {
	if cfg.Runs < 1 {
		return errors.New("bench: runs must be at least 1")
	}
	if cfg.Initrd == "" {
		dir, err := os.MkdirTemp("", "boxd-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		cfg.Initrd = filepath.Join(dir, "initramfs.cpio")
		if err := initrd.Write(cfg.Initrd, BootInit); err != nil {
			return err
		}
	}
	boxdArgs := []string{cfg.Boxd, "vmm", "--kernel", cfg.Kernel, "--initrd", cfg.Initrd,
		"--cpus", strconv.Itoa(cfg.CPUs), "--mem-mib", strconv.Itoa(cfg.MemMiB), "--console", "-"}
	qemuArgs := []string{cfg.QEMU, "-M", "microvm,x-option-roms=off,rtc=off,acpi=off", "-accel", "kvm", "-cpu", "host",
		"-m", strconv.Itoa(cfg.MemMiB), "-smp", strconv.Itoa(cfg.CPUs), "-nodefaults", "-no-user-config",
		"-display", "none", "-no-reboot", "-serial", "stdio",
		"-kernel", cfg.Kernel, "-initrd", cfg.Initrd, "-append", qemuCmdline}

	resultDir, err := os.MkdirTemp("", "boxd-bench-result-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(resultDir)
	resultJSON := filepath.Join(resultDir, "result.json")
	boxdArgs = append(boxdArgs, "--result-json", resultJSON)

	var boxd, qemu []bootSample
	for i := range cfg.Runs {
		s, err := bootOnce(ctx, boxdArgs, resultJSON)
		if err != nil {
			return fmt.Errorf("bench: boxd run %d: %w", i, err)
		}
		boxd = append(boxd, s)
		if cfg.QEMU != "" {
			s, err := bootOnce(ctx, qemuArgs, "")
			if err != nil {
				return fmt.Errorf("bench: qemu run %d: %w", i, err)
			}
			qemu = append(qemu, s)
		}
		fmt.Fprintf(os.Stderr, "\rbench: boot %d/%d", i+1, cfg.Runs)
	}
	fmt.Fprintln(os.Stderr)
	reportBoot(cfg, boxd, qemu)
	return nil
}

// bootOnce runs one boot. resultJSON, for boxd, is the file its --result-json
// names; the monitor's RSS is sampled only then.
func bootOnce(ctx context.Context, argv []string, resultJSON string) (bootSample, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return bootSample{}, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return bootSample{}, err
	}
	var s bootSample
	seen := false
	var console strings.Builder
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		console.WriteString(line + "\n")
		if i := strings.Index(line, "BENCH-INIT uptime="); i >= 0 && !seen {
			seen = true
			s.initMs = msSince(start)
			if up, err := strconv.ParseFloat(strings.TrimSpace(line[i+len("BENCH-INIT uptime="):]), 64); err == nil {
				s.uptimeMs = up * 1000
			}
			if resultJSON != "" {
				s.anonKiB, s.fileKiB = monitorRSS(cmd.Process.Pid)
			}
		}
		s.parseKernelLine(line)
	}
	err = cmd.Wait()
	s.exitMs = msSince(start)
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ctx.Err() == nil) {
		return s, fmt.Errorf("%v\n%s", err, stderr.String())
	}
	if !seen {
		return s, fmt.Errorf("guest never reached init\nstderr:\n%s\nconsole:\n%s", stderr.String(), console.String())
	}
	if resultJSON != "" {
		if s.setupMs, s.markMs, err = readResult(resultJSON); err != nil {
			return s, err
		}
	}
	return s, nil
}

func msSince(t time.Time) float64 { return float64(time.Since(t).Microseconds()) / 1000 }

// monitorRSS reads the monitor's resident memory that is not guest RAM (guest
// RAM is a shared memfd mapping, RssShmem): its private memory and its mapped
// file pages, in KiB.
func monitorRSS(pid int) (anon, file float64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "RssAnon:":
			anon = v
		case "RssFile:":
			file = v
		}
	}
	return anon, file
}

func column(ss []bootSample, f func(bootSample) float64) []float64 {
	out := make([]float64, len(ss))
	for i, s := range ss {
		out[i] = f(s)
	}
	return out
}

func reportBoot(cfg BootConfig, boxd, qemu []bootSample) {
	w := cfg.Out
	fmt.Fprintf(w, "boot benchmark: %s\n", Environment())
	fmt.Fprintf(w, "kernel %s, %d vCPU, %d MiB, %d runs each, alternating\n", cfg.Kernel, cfg.CPUs, cfg.MemMiB, cfg.Runs)
	fmt.Fprintln(w, "times in ms; init = monitor exec to the init's first console line (host clock);")
	fmt.Fprintln(w, "guest = the guest kernel's clock start (kvmclock) to init, on its printk clock; exit = exec to monitor exit")
	row := func(name string, ss []bootSample) (Summary, Summary) {
		ini := Summarize(column(ss, func(s bootSample) float64 { return s.initMs }))
		up := Summarize(column(ss, func(s bootSample) float64 { return s.runMs }))
		ex := Summarize(column(ss, func(s bootSample) float64 { return s.exitMs }))
		fmt.Fprintf(w, "  %-5s init   %s\n", name, ini)
		fmt.Fprintf(w, "  %-5s guest  %s\n", name, up)
		fmt.Fprintf(w, "  %-5s exit   %s\n", name, ex)
		return ini, up
	}
	bi, bu := row("boxd", boxd)
	anon := Summarize(column(boxd, func(s bootSample) float64 { return s.anonKiB / 1024 }))
	file := Summarize(column(boxd, func(s bootSample) float64 { return s.fileKiB / 1024 }))
	fmt.Fprintf(w, "  boxd monitor private RSS beyond guest RAM (MiB): %s  (target: <= 10)\n", anon)
	fmt.Fprintf(w, "  boxd monitor file RSS, shared text (MiB):        %s\n", file)
	if len(qemu) > 0 {
		qi, qu := row("qemu", qemu)
		fmt.Fprintf(w, "ratio boxd/qemu (medians): init %.2f, guest %.2f  (target: init <= 0.5)\n", bi.Median/qi.Median, bu.Median/qu.Median)
	}
	writeBreakdown(w, boxd, qemu)
}

// Environment says where the numbers come from: absolute latency only means
// something on a host with hardware virtualization.
func Environment() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "model name") {
				cpu = strings.TrimSpace(line[strings.Index(line, ":")+1:])
				break
			}
		}
	}
	where := "host"
	if os.Getenv("BOXD_NESTED") == "1" {
		where = "nested harness L1 (QEMU TCG, emulated SVM): absolute numbers are slow; compare ratios"
	}
	return fmt.Sprintf("%s, %s", where, cpu)
}
