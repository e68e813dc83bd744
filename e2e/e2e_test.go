//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/boxd-dev/boxd/internal/initrd"
	"github.com/boxd-dev/boxd/kernel"
	"github.com/boxd-dev/boxd/nested"
	"github.com/boxd-dev/boxd/vmm/kvm"
)

func TestMain(m *testing.M) {
	where := "directly on this host"
	if nested.Inside() {
		where = "inside the nested harness (L1)"
	}
	println("e2e: running " + where)
	os.Exit(m.Run())
}

// needKVM skips unless /dev/kvm can run a Linux guest: a hardware-virtualization
// KVM, as in the nested harness. PVM hosts cannot boot a stock kernel.
func needKVM(t testing.TB) {
	t.Helper()
	if ok, why := kvm.Available(); !ok {
		t.Skipf("e2e needs /dev/kvm: %s", why)
	}
	if ok, why := nested.HostHasHardwareKVM(); !ok && !nested.Inside() {
		t.Skipf("e2e needs hardware virtualization (run through make e2e): %s", why)
	}
}

func boxdBin(t testing.TB) string {
	t.Helper()
	return findFile(t, "BOXD_BIN", "bin/boxd", "make build")
}

// findFile returns the absolute path named by env, or rel under the repository
// root (the test runs from the root or from e2e/).
func findFile(t testing.TB, env, rel, how string) string {
	t.Helper()
	cands := []string{os.Getenv(env)}
	if cands[0] == "" {
		cands = []string{rel, filepath.Join("..", rel)}
	}
	for _, c := range cands {
		if p, err := filepath.Abs(c); err == nil {
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	t.Fatalf("%s not found (tried %q; %s builds it, or set %s)", rel, cands, how, env)
	return ""
}

func guestKernel(t testing.TB) string {
	t.Helper()
	p, err := kernel.Path()
	if err != nil {
		t.Fatalf("guest kernel: %v", err)
	}
	return p
}

// initramfs writes a busybox initramfs with script as /init and returns its path.
func initramfs(t testing.TB, script string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "initramfs.cpio")
	if err := initrd.Write(path, script); err != nil {
		t.Fatal(err)
	}
	return path
}

// writeInitrd writes a busybox initramfs with script as /init and the given
// host binaries (at their host paths).
func writeInitrd(path, script string, extra ...string) error {
	return initrd.Write(path, script, extra...)
}

// vmmRun is one "boxd vmm" run.
type vmmRun struct {
	Console string
	Stderr  string
	Status  int
	Result  struct {
		Result  string  `json:"result"`
		Detail  string  `json:"detail"`
		SetupMs float64 `json:"setup_ms"`
		RunMs   float64 `json:"run_ms"`
	}
}

func runVMM(t testing.TB, timeout time.Duration, args ...string) vmmRun {
	t.Helper()
	r, err := tryVMM(t, timeout, args...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// tryVMM is runVMM returning, instead of failing the test, the error of a
// monitor that could not run or ran past timeout (with what it was doing
// then, and how its console ends).
func tryVMM(t testing.TB, timeout time.Duration, args ...string) (vmmRun, error) {
	t.Helper()
	dir := t.TempDir()
	console, result := filepath.Join(dir, "console.log"), filepath.Join(dir, "result.json")
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, boxdBin(t), append([]string{"vmm", "--console", console, "--result-json", result}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	// On timeout, say what the monitor was doing before it is killed.
	var stalled string
	cmd.Cancel = func() error {
		stalled = stallReport(cmd.Process.Pid)
		return cmd.Process.Kill()
	}
	err := cmd.Run()
	var r vmmRun
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ctx.Err() == nil:
		r.Status = ee.ExitCode()
	default:
		c, _ := os.ReadFile(console)
		return r, fmt.Errorf("boxd vmm: %v\nstderr:\n%s\nconsole:\n%s\n%s", err, stderr.String(), c, stalled)
	}
	c, _ := os.ReadFile(console)
	r.Console, r.Stderr = string(c), stderr.String()
	if b, err := os.ReadFile(result); err == nil {
		if err := json.Unmarshal(b, &r.Result); err != nil {
			return r, fmt.Errorf("result json: %v", err)
		}
	}
	return r, nil
}

// marks returns the lines of s that contain prefix, with the prefix removed.
func marks(s, prefix string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if i := strings.Index(sc.Text(), prefix); i >= 0 {
			out = append(out, strings.TrimSpace(sc.Text()[i+len(prefix):]))
		}
	}
	return out
}

// guestScript wraps body in a busybox init: mounts, applets on PATH, body run
// by sh -e, its status printed as "E2E-STATUS n", then poweroff through the
// power register once the console has drained (drainConsole).
func guestScript(body string) string {
	return `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /mnt /tmp
( set -e
` + body + `
)
echo "E2E-STATUS $?"
` + drainConsole + `
devmem 0xc0001000 32 1
`
}

// drainConsole is the shell line a test guest runs before it powers off. echo
// returns once its line is in the kernel's tty buffer, which the UART driver
// sends a FIFO's worth per interrupt, so a power-off right after it cut the
// last lines (TestVsock failed so: its last stream's line and E2E-STATUS
// never reached the host). busybox stty applies any setting with TCSETSW,
// which first waits until the terminal has sent every byte (tcdrain);
// -ixany is the setting the console already has.
const drainConsole = "/bin/busybox stty -ixany"

// guestTool is the static helper binary built by make e2e (out/guesttool).
func guestTool(t testing.TB) string {
	t.Helper()
	return findFile(t, "BOXD_E2E_GUESTTOOL", "out/guesttool", "make e2e (CGO_ENABLED=0 go build -o out/guesttool ./e2e/guesttool)")
}

// liveVMM is a running "boxd vmm" whose console is read line by line.
type liveVMM struct {
	cmd    *exec.Cmd
	lines  chan string
	mu     sync.Mutex
	all    strings.Builder
	stderr bytes.Buffer
	done   chan struct{}
}

// startVMM starts boxd vmm (prefix, e.g. "ip netns exec NS", runs before it)
// with its console on a pipe.
func startVMM(t testing.TB, prefix []string, args ...string) *liveVMM {
	t.Helper()
	argv := append(append(append([]string{}, prefix...), boxdBin(t), "vmm", "--console", "-"), args...)
	v := &liveVMM{lines: make(chan string, 1024), done: make(chan struct{})}
	v.cmd = exec.Command(argv[0], argv[1:]...)
	v.cmd.Stderr = &v.stderr
	out, err := v.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := v.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	read := make(chan struct{}) // closed at the console's EOF
	go func() {
		defer close(read)
		defer close(v.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			v.mu.Lock()
			v.all.WriteString(sc.Text() + "\n")
			v.mu.Unlock()
			select {
			case v.lines <- sc.Text():
			default: // nobody is waiting for lines; the transcript keeps them
			}
		}
	}()
	t.Cleanup(func() {
		v.cmd.Process.Kill()
		<-v.done
	})
	go func() {
		// Wait closes the pipe: only once every console line is read (the
		// last ones, such as E2E-STATUS, were lost when it raced the
		// reader).
		<-read
		v.cmd.Wait()
		close(v.done)
	}()
	return v
}

// waitLine returns the first console line containing s, failing the test if
// the VM exits or the deadline passes first.
func (v *liveVMM) waitLine(t testing.TB, s string, timeout time.Duration) string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case line, ok := <-v.lines:
			if !ok {
				t.Fatalf("VM ended before printing %q\nconsole:\n%s\nstderr:\n%s", s, v.console(), v.stderr.String())
			}
			if strings.Contains(line, s) {
				return line
			}
		case <-deadline:
			t.Fatalf("no %q on the console after %v\nconsole:\n%s\nstderr:\n%s\n%s", s, timeout, v.console(), v.stderr.String(), stallReport(v.cmd.Process.Pid))
		}
	}
}

// wait waits for the monitor to exit and returns its exit status.
func (v *liveVMM) wait(t testing.TB, timeout time.Duration) int {
	t.Helper()
	select {
	case <-v.done:
	case <-time.After(timeout):
		t.Fatalf("VM still running after %v\nconsole:\n%s\n%s", timeout, v.console(), stallReport(v.cmd.Process.Pid))
	}
	return v.cmd.ProcessState.ExitCode()
}

func (v *liveVMM) console() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.all.String()
}
