//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
func needKVM(t *testing.T) {
	t.Helper()
	if ok, why := kvm.Available(); !ok {
		t.Skipf("e2e needs /dev/kvm: %s", why)
	}
	if ok, why := nested.HostHasHardwareKVM(); !ok && !nested.Inside() {
		t.Skipf("e2e needs hardware virtualization (run through make e2e): %s", why)
	}
}

func boxdBin(t *testing.T) string {
	t.Helper()
	p := os.Getenv("BOXD_BIN")
	if p == "" {
		p = "../bin/boxd"
	}
	p, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("boxd binary: %v (run make build or set BOXD_BIN)", err)
	}
	return p
}

func guestKernel(t *testing.T) string {
	t.Helper()
	p, err := kernel.Path()
	if err != nil {
		t.Fatalf("guest kernel: %v", err)
	}
	return p
}

// initramfs writes a busybox initramfs with script as /init and returns its path.
func initramfs(t *testing.T, script string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "initramfs.cpio")
	if err := initrd.Write(path, script); err != nil {
		t.Fatal(err)
	}
	return path
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

func runVMM(t *testing.T, timeout time.Duration, args ...string) vmmRun {
	t.Helper()
	dir := t.TempDir()
	console, result := filepath.Join(dir, "console.log"), filepath.Join(dir, "result.json")
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, boxdBin(t), append([]string{"vmm", "--console", console, "--result-json", result}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var r vmmRun
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ctx.Err() == nil:
		r.Status = ee.ExitCode()
	default:
		c, _ := os.ReadFile(console)
		t.Fatalf("boxd vmm: %v\nstderr:\n%s\nconsole:\n%s", err, stderr.String(), c)
	}
	c, _ := os.ReadFile(console)
	r.Console, r.Stderr = string(c), stderr.String()
	if b, err := os.ReadFile(result); err == nil {
		if err := json.Unmarshal(b, &r.Result); err != nil {
			t.Fatalf("result json: %v", err)
		}
	}
	return r
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
