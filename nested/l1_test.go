package nested

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Tests in this file boot L1 (seconds each under TCG); they skip with -short
// and where QEMU, a kernel or a static busybox is missing.

func needL1(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots an L1 VM; skipped with -short")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 is not installed; " + InstallCommand)
	}
	if _, err := FindKernel("/boot", "/lib/modules"); err != nil {
		t.Skip(err)
	}
	if _, err := findBusybox("/bin/busybox", "/usr/bin/busybox"); err != nil {
		t.Skip(err)
	}
	// The tests share the user's cache (BOXD_CACHE or ~/.cache/boxd) like any
	// run: entries are keyed by content, and extracting the kernel takes seconds.
}

func TestL1ExitStatusAndStreams(t *testing.T) {
	needL1(t)
	var stdout, stderr, log syncBuffer
	code, err := Run(context.Background(), Config{
		// A burst at the very end must arrive whole, and reopening
		// /dev/stderr must append, not truncate.
		Cmd:     []string{"sh", "-c", "echo hi; echo oops >&2; echo again >/dev/stderr; head -c 3000000 /dev/zero; exit 7"},
		Timeout: 5 * time.Minute,
		ForceL1: true,
		Stdout:  &stdout,
		Stderr:  &stderr,
		Log:     &log,
	})
	if err != nil || code != 7 {
		t.Fatalf("Run = %d, %v; want 7, nil\nlog:\n%s", code, err, log.String())
	}
	if want := "hi\n" + strings.Repeat("\x00", 3000000); stdout.String() != want {
		t.Errorf("stdout has %d bytes starting %q; want %d starting \"hi\\n\"", stdout.Len(), stdout.String()[:min(3, stdout.Len())], len(want))
	}
	if stderr.String() != "oops\nagain\n" {
		t.Errorf("stderr %q; want \"oops\\nagain\\n\"", stderr.String())
	}
	if !strings.Contains(log.String(), "nested: L1 ready in ") {
		t.Errorf("log has no readiness line:\n%s", log.String())
	}
	t.Logf("log:\n%s", log.String())
}

const envWantDir = "BOXD_NESTED_TEST_DIR"

// TestL1RunsHostTestBinary runs this package's test binary, built on the
// host, inside L1: the flow `make e2e` uses.
func TestL1RunsHostTestBinary(t *testing.T) {
	needL1(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	var stdout, log syncBuffer
	code, err := Run(context.Background(), Config{
		Cmd:     []string{exe, "-test.run=^TestInsideL1$", "-test.v"},
		Env:     append(os.Environ(), envWantDir+"="+wd),
		OutDir:  out,
		Timeout: 5 * time.Minute,
		ForceL1: true,
		Stdout:  &stdout,
		Stderr:  &stdout,
		Log:     &log,
	})
	if err != nil || code != 0 {
		t.Fatalf("Run = %d, %v; want 0\noutput:\n%s\nlog:\n%s", code, err, stdout.String(), log.String())
	}
	if !strings.Contains(stdout.String(), "--- PASS: TestInsideL1") {
		t.Errorf("TestInsideL1 did not pass in L1:\n%s", stdout.String())
	}
	got, err := os.ReadFile(filepath.Join(out, "from-l1"))
	if err != nil || string(got) != "written in L1\n" {
		t.Errorf("output share: %q, %v", got, err)
	}
	t.Logf("output:\n%s\nlog:\n%s", stdout.String(), log.String())
}

// TestInsideL1 is run by TestL1RunsHostTestBinary inside L1.
func TestInsideL1(t *testing.T) {
	if !Inside() {
		t.Skip("runs only inside L1, started by TestL1RunsHostTestBinary")
	}
	if st, err := os.Stat("/dev/kvm"); err != nil || st.Mode()&os.ModeCharDevice == 0 {
		t.Errorf("/dev/kvm: %v", err)
	}
	if ok, reason := HostHasHardwareKVM(); !ok {
		t.Errorf("no hardware KVM in L1: %s", reason)
	}
	cpuinfo, err := os.ReadFile("/proc/cpuinfo")
	if err != nil || !strings.Contains(string(cpuinfo), " svm") {
		t.Errorf("/proc/cpuinfo has no svm flag (%v)", err)
	}
	if wd, _ := os.Getwd(); wd != os.Getenv(envWantDir) {
		t.Errorf("working directory %q; want %q", wd, os.Getenv(envWantDir))
	}
	// TMPDIR is writable (t.TempDir uses it), and so is $HOME.
	mustWrite(t, filepath.Join(t.TempDir(), "f"), "x")
	if home, err := os.UserHomeDir(); err == nil {
		mustWrite(t, filepath.Join(home, ".boxd-nested-test"), "x")
	}
	out := os.Getenv(EnvOut)
	if out == "" {
		t.Fatalf("%s is not set", EnvOut)
	}
	mustWrite(t, filepath.Join(out, "from-l1"), "written in L1\n")
	// Modules outside the initramfs load from the host's /lib/modules.
	if b, err := exec.Command("modprobe", "tun").CombinedOutput(); err != nil {
		t.Errorf("modprobe tun: %v: %s", err, b)
	} else if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Errorf("after modprobe tun: %v", err)
	}
	// The host root stays read-only.
	if err := os.WriteFile("/etc/boxd-nested-test", nil, 0o644); err == nil {
		t.Error("/etc is writable in L1")
	}
}

func TestL1TimeoutLeavesNoQEMU(t *testing.T) {
	needL1(t)
	var qemu proc
	code, err := Run(context.Background(), Config{
		Cmd:     []string{"sleep", "1000"},
		Timeout: 2 * time.Second,
		ForceL1: true,
		onStart: func(pid int) { qemu = newProc(t, pid) },
	})
	if !errors.Is(err, ErrTimeout) || code != -1 {
		t.Fatalf("Run = %d, %v; want -1 and ErrTimeout", code, err)
	}
	if qemu.pid == 0 || !qemu.gone() {
		t.Errorf("QEMU (pid %d) outlived the timeout", qemu.pid)
	}
}

// TestL1HangStopped: an L1 whose heartbeat stops (here the command stops
// the heartbeat loop, as a hung L1 would) is stopped after HangAfter, long
// before the run's timeout, with an error that says it hung, and its QEMU
// is gone. A live L1 whose command runs past HangAfter is not.
func TestL1HangStopped(t *testing.T) {
	needL1(t)
	var qemu proc
	var log syncBuffer
	code, err := Run(context.Background(), Config{
		// First outlive HangAfter with the heartbeat going, then stop it.
		Cmd:       []string{"sh", "-c", "sleep 12; kill -STOP $(cat /run/boxd-l1-heartbeat.pid); sleep 1000"},
		Timeout:   10 * time.Minute,
		HangAfter: 8 * time.Second,
		ForceL1:   true,
		Log:       &log,
		onStart:   func(pid int) { qemu = newProc(t, pid) },
	})
	if err == nil || errors.Is(err, ErrTimeout) || code != -1 || !strings.Contains(err.Error(), "L1 stopped before the command finished: it hung (no heartbeat for ") {
		t.Fatalf("Run = %d, %v; want -1 and an error saying L1 hung\nlog:\n%s", code, err, log.String())
	}
	if !strings.Contains(log.String(), "nested: L1 hung: no heartbeat for ") {
		t.Errorf("log does not say L1 hung:\n%s", log.String())
	}
	if qemu.pid == 0 || !qemu.gone() {
		t.Errorf("QEMU (pid %d) outlived the hang", qemu.pid)
	}
}

func TestL1CancelLeavesNoQEMU(t *testing.T) {
	needL1(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var qemu proc
	// Cancel once the command runs in L1, not merely while L1 boots.
	stdout := &lineWatcher{fn: func(string) { cancel() }}
	code, err := Run(ctx, Config{
		Cmd:     []string{"sh", "-c", "echo started; sleep 1000"},
		Timeout: 5 * time.Minute,
		ForceL1: true,
		Stdout:  stdout,
		onStart: func(pid int) { qemu = newProc(t, pid) },
	})
	if !errors.Is(err, context.Canceled) || code != -1 {
		t.Fatalf("Run = %d, %v; want -1 and context.Canceled", code, err)
	}
	if stdout.String() != "started\n" {
		t.Errorf("stdout %q", stdout.String())
	}
	if qemu.pid == 0 || !qemu.gone() {
		t.Errorf("QEMU (pid %d) outlived the cancellation", qemu.pid)
	}
}

const envHelper = "BOXD_NESTED_TEST_HELPER"

// TestL1QEMUDiesWithBoxd kills (SIGKILL) a process that is running Run and
// checks that its QEMU goes too.
func TestL1QEMUDiesWithBoxd(t *testing.T) {
	needL1(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	helper := exec.Command(exe, "-test.run=^TestHelperRunL1$")
	// The killed helper cannot remove its run directory; the test's TMPDIR does.
	helper.Env = append(os.Environ(), envHelper+"=1", "TMPDIR="+t.TempDir())
	helper.Stderr = os.Stderr
	pipe, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	defer helper.Process.Kill()
	var pid int
	sc := bufio.NewScanner(pipe)
	for sc.Scan() {
		if _, err := fmt.Sscanf(sc.Text(), "qemu pid %d", &pid); err == nil {
			break
		}
	}
	if pid == 0 {
		t.Fatal("helper never reported a QEMU pid")
	}
	qemu := newProc(t, pid)
	if err := helper.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	helper.Wait()
	if !qemu.waitGone(30 * time.Second) {
		t.Errorf("QEMU (pid %d) survived its parent's SIGKILL", pid)
	}
}

// TestHelperRunL1 is the process TestL1QEMUDiesWithBoxd kills.
func TestHelperRunL1(t *testing.T) {
	if os.Getenv(envHelper) != "1" {
		t.Skip("helper for TestL1QEMUDiesWithBoxd")
	}
	Run(context.Background(), Config{
		Cmd:     []string{"sleep", "1000"},
		Timeout: 10 * time.Minute,
		ForceL1: true,
		onStart: func(pid int) { fmt.Println("qemu pid " + strconv.Itoa(pid)) },
	})
	t.Error("Run returned; the test should have killed this process")
}
