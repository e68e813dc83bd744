//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/boxd-dev/boxd/agent"
	guestrd "github.com/boxd-dev/boxd/guest-init/initramfs"
	"github.com/boxd-dev/boxd/image"
)

// guestInitramfs returns boxd's guest initramfs: $BOXD_INITRAMFS, else the
// cached archive for the binaries `make initramfs` left in out/guest (found
// beside this source file, so the test binary may run from anywhere).
func guestInitramfs(t testing.TB, c guestrd.Compression) string {
	t.Helper()
	if p := os.Getenv("BOXD_INITRAMFS"); p != "" && c == guestrd.None {
		return p
	}
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the source tree")
	}
	out := filepath.Join(filepath.Dir(file), "..", "out", "guest")
	s := guestrd.Spec{Init: filepath.Join(out, "init"), Boxd: filepath.Join(out, "boxd"), Busybox: "/bin/busybox", Compress: c}
	if _, err := os.Stat(s.Init); err != nil {
		t.Fatalf("guest init not built (run make initramfs, or set BOXD_INITRAMFS): %v", err)
	}
	if _, err := os.Stat(s.Boxd); err != nil {
		s.Boxd = ""
	}
	apps, err := guestrd.Applets(s.Busybox)
	if err != nil {
		t.Fatalf("static busybox (apt-get install busybox-static): %v", err)
	}
	s.Applets = apps
	dir, err := guestrd.CacheDir()
	if err != nil {
		t.Fatal(err)
	}
	p, _, err := guestrd.Ensure(dir, s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// testCmdline is what a host would pass, plus the test hook that powers the
// guest off once its agent is ready.
func testCmdline(extra ...string) string {
	return strings.Join(append([]string{
		"boxd.test_poweroff=1", "boxd.verbose=1", "boxd.hostname=e2e-guest",
		"boxd.seed=" + strings.Repeat("5a", 32),
		fmt.Sprintf("boxd.time=%d", time.Now().UnixNano()),
	}, extra...), " ")
}

// checkInitBoot checks what every boot of boxd's init must show: its steps on
// the console, both boot-timer marks, and a clean poweroff through the power
// register.
func checkInitBoot(t testing.TB, r vmmRun, steps ...string) {
	t.Helper()
	if r.Status != 0 || r.Result.Result != "poweroff" {
		t.Fatalf("exit status %d, result %+v; want a clean poweroff\nstderr:\n%s\nconsole:\n%s", r.Status, r.Result, r.Stderr, r.Console)
	}
	for _, s := range steps {
		if !strings.Contains(r.Console, "boxd-init: "+s) {
			t.Errorf("console lacks %q", "boxd-init: "+s)
		}
	}
	if strings.Contains(r.Console, "FAILED") {
		t.Errorf("a fatal step failed")
	}
	got := marks(r.Stderr, "boot-timer: mark ")
	if len(got) != 2 || !strings.HasPrefix(got[0], "1 ") || !strings.HasPrefix(got[1], "2 ") {
		t.Errorf("boot-timer marks %q, want mark 1 then mark 2", got)
	}
	if t.Failed() {
		t.Logf("stderr:\n%s\nconsole:\n%s", r.Stderr, r.Console)
	}
	for _, m := range got {
		t.Logf("boot-timer: mark %s", m)
	}
	for _, l := range marks(r.Console, "boxd-init: ") {
		t.Logf("  %s", l)
	}
	t.Logf("monitor setup %.2f ms; VM ran %.1f ms", r.Result.SetupMs, r.Result.RunMs)
}

// TestGuestInit boots the guest kernel with boxd's initramfs and no disk:
// init mounts, marks the boot timer, applies the command line, starts the
// agent, marks it ready and (boxd.test_poweroff=1) powers off. Both archive
// compressions run, so their boot times can be compared in the log.
func TestGuestInit(t *testing.T) {
	needKVM(t)
	k := guestKernel(t)
	for _, c := range []guestrd.Compression{guestrd.None, guestrd.Gzip} {
		t.Run(string(c), func(t *testing.T) {
			rd := guestInitramfs(t, c)
			r := runVMM(t, 5*time.Minute, "--kernel", k, "--initrd", rd, "--mem-mib", "256", "--cmdline", testCmdline())
			checkInitBoot(t, r,
				"mount /proc: ok", "mount /sys/fs/cgroup: ok", "boot-timer mark 1: ok", "entropy: ok", "clock: ok",
				"switch root: skipped: no boxd.root", "loopback: ok", "network: ok", "agent: ok",
				"boot-timer mark 2: ok", "shutdown: poweroff")
		})
	}
	// The kernel's quiet (in boxd vmm's default command line) without
	// boxd.verbose: init logs no step after reading the command line.
	t.Run("quiet", func(t *testing.T) {
		rd := guestInitramfs(t, guestrd.None)
		r := runVMM(t, 5*time.Minute, "--kernel", k, "--initrd", rd, "--mem-mib", "256", "--cmdline", "quiet boxd.test_poweroff=1")
		checkInitBoot(t, r, "boot-timer mark 1: ok", "boot done in", "shutdown: poweroff")
		for _, s := range []string{"cmdline: ok", "mount /run", "agent: ok"} {
			if strings.Contains(r.Console, s) {
				t.Errorf("quiet console shows %q", s)
			}
		}
	})
}

// TestGuestInitSwitchRoot boots onto a copy of the Debian root image: init
// switches root, re-executes itself from the disk's /run as PID 1, and at
// poweroff leaves the filesystem clean (e2fsck finds nothing to fix).
func TestGuestInitSwitchRoot(t *testing.T) {
	needKVM(t)
	disk, why := rootDisk(t)
	if disk == "" {
		t.Skip(why)
	}
	r := runVMM(t, 5*time.Minute, "--kernel", guestKernel(t), "--initrd", guestInitramfs(t, guestrd.None),
		"--mem-mib", "512", "--disk", disk, "--cmdline", testCmdline("boxd.root=/dev/vda"))
	checkInitBoot(t, r,
		"switch root: exec /run/boxd/bin/init /run/boxd/bin/init --switched (+",
		"running from the root disk as PID 1 (/run/boxd/bin/init)",
		"guest tools: ok", "agent: ok", "boot-timer mark 2: ok", "shutdown: poweroff")
	if strings.Contains(r.Console, "switch root: failed") {
		t.Errorf("switch root failed")
	}
	if out, err := exec.Command("debugfs", "-R", "stat /usr/local/bin/boxd", disk).CombinedOutput(); err != nil || !strings.Contains(string(out), "/run/boxd/bin/boxd") {
		t.Errorf("the disk lacks init's /usr/local/bin/boxd link: %v\n%s", err, out)
	}
	if out, err := exec.Command("e2fsck", "-fn", disk).CombinedOutput(); err != nil {
		t.Errorf("filesystem not clean after poweroff: %v\n%s", err, out)
	}
}

// rootDisk returns a private copy of the root image, or "" (with the reason)
// when there is none or boxd vmm cannot attach disks.
func rootDisk(t testing.TB) (string, string) {
	t.Helper()
	img, err := image.Path()
	if err != nil {
		return "", err.Error()
	}
	if help, _ := exec.Command(boxdBin(t), "vmm", "--help").CombinedOutput(); !strings.Contains(string(help), "--disk") {
		return "", "boxd vmm has no --disk yet"
	}
	disk := filepath.Join(t.TempDir(), "root.ext4")
	if out, err := exec.Command("cp", "--sparse=always", img, disk).CombinedOutput(); err != nil {
		t.Fatalf("copy image: %v: %s", err, out)
	}
	return disk, ""
}

// TestGuestAgentOverVsock reaches the agent that init started, through the
// monitor's hybrid vsock: it runs a command, checks who PID 1 is, and asks
// for a poweroff the way a guest user would (busybox poweroff signals PID 1),
// which must end the VM cleanly.
func TestGuestAgentOverVsock(t *testing.T) {
	needKVM(t)
	if help, _ := exec.Command(boxdBin(t), "vmm", "--help").CombinedOutput(); !strings.Contains(string(help), "--vsock") {
		t.Skip("boxd vmm has no --vsock yet")
	}
	dir := t.TempDir()
	sock, console := filepath.Join(dir, "vsock.sock"), filepath.Join(dir, "console.log")
	args := []string{"vmm", "--kernel", guestKernel(t), "--initrd", guestInitramfs(t, guestrd.None), "--mem-mib", "512",
		"--console", console, "--vsock", "cid=3,path=" + sock}
	wantInit := "/bin/init" // /init links to it
	cmdline := "boxd.hostname=vsock-guest"
	if disk, why := rootDisk(t); disk != "" {
		args = append(args, "--disk", disk)
		cmdline += " boxd.root=/dev/vda"
		wantInit = "/run/boxd/bin/init"
	} else {
		t.Logf("booting without a root disk: %s", why)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	exited, dump := startMonitor(t, ctx, console, append(args, "--cmdline", cmdline)...)

	c := dialAgent(t, ctx, sock, exited, dump)
	var out, errOut bytes.Buffer
	p, err := c.Exec(ctx, agent.ExecRequest{Shell: "readlink /proc/1/exe; hostname", Stdout: &out, Stderr: &errOut})
	if err != nil {
		dump()
		t.Fatal(err)
	}
	if st, err := p.Wait(); err != nil || st.Code != 0 {
		t.Fatalf("exec: %+v, %v\nstdout: %s\nstderr: %s", st, err, out.String(), errOut.String())
	}
	if got, want := strings.Fields(out.String()), []string{wantInit, "vsock-guest"}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("PID 1 and hostname: %q (stderr %q), want %q", got, errOut.String(), want)
	}

	// An agent that dies is restarted by init: kill it from a command it
	// runs, then reach the new one on a new connection.
	if p, err := c.Exec(ctx, agent.ExecRequest{Shell: "kill -KILL $PPID"}); err == nil {
		p.Wait()
	}
	c.Close()
	c = dialAgent(t, ctx, sock, exited, dump)
	defer c.Close()
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("restarted agent: %v", err)
	}

	// poweroff kills the agent while it runs: its own result may be lost.
	if p, err := c.Exec(ctx, agent.ExecRequest{Argv: []string{"poweroff"}}); err == nil {
		p.Wait()
	}
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 0) {
			dump()
			t.Fatalf("boxd vmm: %v; want exit status 0 after poweroff", err)
		}
	case <-ctx.Done():
		dump()
		t.Fatal("VM still running after poweroff")
	}
	cons, _ := os.ReadFile(console)
	for _, want := range []string{"killed by signal 9", "restart 1 in", "boxd-init: shutdown: poweroff"} {
		if !strings.Contains(string(cons), want) {
			t.Errorf("console lacks %q", want)
		}
	}
	if t.Failed() {
		dump()
	}
}

// dialAgent connects to the guest agent through the monitor's vsock socket,
// retrying while the guest refuses (the agent is not listening yet), until
// ctx ends or the VM exits.
// startMonitor starts "boxd ARGS..." in the background, bounded by ctx. exited
// receives its end; dump logs its stderr and the console file, for failures.
func startMonitor(t testing.TB, ctx context.Context, console string, args ...string) (exited <-chan error, dump func()) {
	t.Helper()
	vm := exec.CommandContext(ctx, boxdBin(t), args...)
	var stderr bytes.Buffer
	vm.Stderr = &stderr
	// When ctx ends first, say what the monitor was doing before it is
	// killed; dump, called after the exit, reports it.
	var stalled atomic.Pointer[string]
	vm.Cancel = func() error {
		r := stallReport(vm.Process.Pid)
		stalled.Store(&r)
		return vm.Process.Kill()
	}
	if err := vm.Start(); err != nil {
		t.Fatal(err)
	}
	ch := make(chan error, 1)
	waited := make(chan struct{})
	go func() {
		err := vm.Wait() // returns after Cancel has
		close(waited)
		ch <- err
	}()
	return ch, func() {
		if ctx.Err() != nil {
			<-waited // the report is being written
		}
		c, _ := os.ReadFile(console)
		var report string
		if r := stalled.Load(); r != nil {
			report = *r
		}
		t.Logf("stderr:\n%s\nconsole:\n%s\n%s", stderr.String(), c, report)
	}
}

func dialAgent(t testing.TB, ctx context.Context, sock string, exited <-chan error, dump func()) *agent.Client {
	t.Helper()
	for delay := 50 * time.Millisecond; ; delay = min(2*delay, time.Second) {
		dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
		c, err := agent.Dial(dctx, sock)
		dcancel()
		if err == nil {
			return c
		}
		select {
		case err := <-exited:
			dump()
			t.Fatalf("VM ended before its agent answered: %v", err)
		case <-ctx.Done():
			dump()
			t.Fatalf("agent never answered: %v", err)
		case <-time.After(delay):
		}
	}
}

// TestGuestRebootOverVsock asks for a reboot the way a guest user would
// (busybox reboot sends SIGTERM to PID 1): init shuts down, writes "reboot"
// to the power register, and boxd vmm exits with status 3.
func TestGuestRebootOverVsock(t *testing.T) {
	needKVM(t)
	if help, _ := exec.Command(boxdBin(t), "vmm", "--help").CombinedOutput(); !strings.Contains(string(help), "--vsock") {
		t.Skip("boxd vmm has no --vsock yet")
	}
	dir := t.TempDir()
	sock, console := filepath.Join(dir, "vsock.sock"), filepath.Join(dir, "console.log")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	exited, dump := startMonitor(t, ctx, console, "vmm", "--kernel", guestKernel(t), "--initrd", guestInitramfs(t, guestrd.None),
		"--mem-mib", "256", "--console", console, "--vsock", "cid=3,path="+sock)
	c := dialAgent(t, ctx, sock, exited, dump)
	defer c.Close()
	if p, err := c.Exec(ctx, agent.ExecRequest{Argv: []string{"reboot"}}); err == nil {
		p.Wait()
	}
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 3 {
			dump()
			t.Fatalf("boxd vmm: %v; want exit status 3 (reboot)", err)
		}
	case <-ctx.Done():
		dump()
		t.Fatal("VM still running after reboot")
	}
	if cons, _ := os.ReadFile(console); !strings.Contains(string(cons), "boxd-init: shutdown: reboot") {
		dump()
		t.Error("console lacks the shutdown line")
	}
}
