//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	guestrd "github.com/boxd-dev/boxd/guest-init/initramfs"
	"github.com/boxd-dev/boxd/host/network"
	"github.com/boxd-dev/boxd/image"
	"github.com/boxd-dev/boxd/internal/loopfs"
)

// daemon is a "boxd daemon" started by a test, with a CLI bound to its socket.
type daemon struct {
	t      testing.TB
	bin    string
	socket string
	state  string
	cmd    *exec.Cmd
	log    bytes.Buffer
}

// startDaemon runs boxd daemon in the foreground with its own state directory
// and waits for its "ready" JSON document.
func startDaemon(t testing.TB, extra ...string) *daemon {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the daemon needs root (bridge, TAPs, nftables)")
	}
	img, err := image.Path()
	if err != nil {
		t.Fatalf("root image: %v (make image builds it)", err)
	}
	return startDaemonIn(t, t.TempDir(), img, extra...)
}

func startDaemonIn(t testing.TB, state, img string, extra ...string) *daemon {
	t.Helper()
	d := &daemon{t: t, bin: boxdBin(t), state: state}
	d.socket = filepath.Join(d.state, "boxd.sock")
	return d.start(img, extra...)
}

// startDaemonXFS is startDaemon with the state directory on a fresh XFS
// filesystem, where disks are raw files cloned by reflink (O(1) forks).
func startDaemonXFS(t testing.TB, extra ...string) *daemon {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the daemon needs root (bridge, TAPs, nftables)")
	}
	img, err := image.Path()
	if err != nil {
		t.Fatalf("root image: %v (make image builds it)", err)
	}
	return startDaemonIn(t, loopfs.XFS(t, 16<<30), img, extra...)
}

// startDaemonOn starts a new daemon on the state directory of a stopped one.
func startDaemonOn(t testing.TB, old *daemon, extra ...string) *daemon {
	t.Helper()
	img, err := image.Path()
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{t: t, bin: old.bin, state: old.state, socket: old.socket}
	return d.start(img, extra...)
}

func (d *daemon) start(img string, extra ...string) *daemon {
	t := d.t
	t.Helper()
	args := append([]string{"daemon", "--json", "--state-dir", d.state, "--socket", d.socket,
		"--kernel", guestKernel(t), "--initramfs", guestInitramfs(t, guestrd.None), "--image", img,
		"--boot-timeout", "4m"}, extra...)
	d.cmd = exec.Command(d.bin, args...)
	d.cmd.Stderr = &d.log
	out, err := d.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.cli("destroy", "--all")
		d.cmd.Process.Signal(os.Interrupt)
		d.cmd.Wait()
		if t.Failed() {
			t.Logf("daemon log:\n%s", d.log.String())
		}
	})
	// The daemon prints one JSON document on stdout once it serves.
	var ready map[string]any
	if err := json.NewDecoder(out).Decode(&ready); err != nil {
		t.Fatalf("daemon did not become ready: %v\n%s", err, d.log.String())
	}
	return d
}

// cli runs a boxd command against the daemon; it returns stdout, stderr and the
// exit status.
func (d *daemon) cli(args ...string) (string, string, int) {
	// Flags go right after the subcommand: exec stops parsing flags at its
	// command, as ssh does.
	argv := append([]string{args[0], "--socket", d.socket}, args[1:]...)
	// No command a test runs takes minutes (a boot waits at most the
	// daemon's --boot-timeout); a hung one fails with what the VMs said.
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.bin, argv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		d.t.Fatalf("boxd %s: no answer after %v\nstdout: %s\nstderr: %s\n%s\n%s", strings.Join(args, " "), cliTimeout, stdout.String(), stderr.String(), d.vmTails(), monitorsStallReport())
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		d.t.Fatalf("boxd %s: %v", strings.Join(args, " "), err)
	}
	return stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()
}

// jsonCLI runs a command with --json and decodes its document.
func (d *daemon) jsonCLI(v any, args ...string) {
	d.t.Helper()
	out, stderr, code := d.cli(append([]string{args[0], "--json"}, args[1:]...)...)
	if code != 0 {
		d.t.Fatalf("boxd %s: exit %d\nstdout: %s\nstderr: %s\n%s", strings.Join(args, " "), code, out, stderr, d.vmTails())
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		d.t.Fatalf("boxd %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// cliTimeout bounds one CLI command in these tests: longer than the
// daemon's --boot-timeout (4m), so a slow boot fails with the daemon's own
// explanation first.
const cliTimeout = 5 * time.Minute

// vmTails returns the last lines of every VM's monitor log, console and
// result, for a failure message: what a monitor said before it went away.
func (d *daemon) vmTails() string {
	var b strings.Builder
	files, _ := filepath.Glob(filepath.Join(d.state, "vms", "*", "*"))
	for _, f := range files {
		switch filepath.Base(f) {
		case "monitor.log", "console.log", "result.json":
		default:
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		fmt.Fprintf(&b, "--- %s (last lines)\n%s\n", f, strings.Join(lines[max(0, len(lines)-12):], "\n"))
	}
	return b.String()
}

type vmDoc struct {
	Name     string `json:"name"`
	ID       string `json:"id"`
	State    string `json:"state"`
	CPUs     int    `json:"cpus"`
	MemMiB   int    `json:"mem_mib"`
	DiskGiB  int    `json:"disk_gib"`
	IP       string `json:"ip"`
	TAP      string `json:"tap"`
	PID      int    `json:"pid"`
	Restarts int    `json:"restarts"`
}

// TestDaemonNewExecLsDestroy is the README's first command, checked: a VM made
// by the daemon from the Debian image runs python3 through exec, shows in ls,
// and destroy removes its monitor, TAP and disk.
func TestDaemonNewExecLsDestroy(t *testing.T) {
	needKVM(t)
	d := startDaemon(t)

	var vm vmDoc
	d.jsonCLI(&vm, "new", "--name=task-1", "--cpus", "2", "--mem", "512M", "--disk", "4G")
	if vm.Name != "task-1" || vm.State != "running" || vm.CPUs != 2 || vm.MemMiB != 512 || vm.DiskGiB != 4 || vm.IP == "" || vm.PID == 0 {
		t.Fatalf("new = %+v", vm)
	}

	var ex struct {
		Output     string  `json:"output"`
		Stderr     string  `json:"stderr"`
		ExitCode   int     `json:"exit_code"`
		DurationMs float64 `json:"duration_ms"`
	}
	d.jsonCLI(&ex, "exec", "task-1", `python3 -c "print(6*7)"`)
	if ex.Output != "42\n" || ex.Stderr != "" || ex.ExitCode != 0 {
		t.Fatalf("exec python3 = %+v", ex)
	}
	t.Logf("exec round trip of python3: %.1f ms", ex.DurationMs)
	d.jsonCLI(&ex, "exec", "task-1", "echo out; echo err >&2; exit 3")
	if ex.Output != "out\n" || ex.Stderr != "err\n" || ex.ExitCode != 3 {
		t.Fatalf("exec exit 3 = %+v", ex)
	}
	if out, _, code := d.cli("exec", "task-1", "nproc; exit 7"); code != 7 || out != "2\n" {
		t.Fatalf("exec without --json: output %q, status %d; want \"2\\n\", 7", out, code)
	}

	var ls struct {
		VMs []vmDoc `json:"vms"`
	}
	d.jsonCLI(&ls, "ls")
	if len(ls.VMs) != 1 || ls.VMs[0].Name != "task-1" || ls.VMs[0].State != "running" || ls.VMs[0].IP != vm.IP {
		t.Fatalf("ls = %+v", ls)
	}

	// What destroy must remove: nftables rules and the disk (the TAP and the
	// monitor are checked below).
	if n, err := network.VMRules(vm.ID); err != nil || n == 0 {
		t.Errorf("before destroy: %d nftables rules for %s (%v), want some", n, vm.ID, err)
	}
	if disks := filesNamed(t, d.state, vm.ID); len(disks) == 0 {
		t.Errorf("before destroy: no disk for %s under %s", vm.ID, d.state)
	}
	if _, stderr, code := d.cli("destroy", "task-1"); code != 0 {
		t.Fatalf("destroy: %d %s", code, stderr)
	}
	d.jsonCLI(&ls, "ls")
	if len(ls.VMs) != 0 {
		t.Fatalf("ls after destroy = %+v", ls)
	}
	if err := exec.Command("ip", "link", "show", vm.TAP).Run(); err == nil {
		t.Errorf("TAP %s still exists after destroy", vm.TAP)
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(vm.PID)); err == nil {
		t.Errorf("monitor %d still running after destroy", vm.PID)
	}
	if n, err := network.VMRules(vm.ID); err != nil || n != 0 {
		t.Errorf("after destroy: %d nftables rules for %s (%v)", n, vm.ID, err)
	}
	if disks := filesNamed(t, d.state, vm.ID); len(disks) != 0 {
		t.Errorf("after destroy: disk files remain: %q", disks)
	}
}

// filesNamed lists the files under dir whose names start with prefix.
func filesNamed(t testing.TB, dir, prefix string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() && strings.HasPrefix(e.Name(), prefix) {
			out = append(out, p)
		}
		return nil
	})
	return out
}
