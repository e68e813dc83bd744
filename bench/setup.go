package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/boxd-dev/boxd/devices/power"
	"github.com/boxd-dev/boxd/internal/testguest"
	"github.com/boxd-dev/boxd/vmm/boot"
)

// SetupConfig describes the monitor setup benchmark.
type SetupConfig struct {
	Boxd string
	Runs int
	Out  io.Writer
}

// Setup measures the monitor's own part of a boot on this host's /dev/kvm, with
// a guest whose first instruction marks the boot timer and whose second powers
// off: process start to the first guest instruction, split into the monitor's
// setup (process start to vCPUs started) and the first KVM_RUN (vCPUs started to
// the mark). Exec of "boxd version" is run alongside as the baseline cost of
// starting the binary at all.
func Setup(ctx context.Context, cfg SetupConfig) error {
	dir, err := os.MkdirTemp("", "boxd-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	kernel := filepath.Join(dir, "tiny.elf")
	code := append(testguest.Store32(boot.BootTimerAddr, 1), testguest.Store32(boot.PowerAddr, power.Poweroff)...)
	if err := os.WriteFile(kernel, testguest.PVHKernel(append(code, 0xf4)), 0o644); err != nil {
		return err
	}
	result := filepath.Join(dir, "result.json")
	var setup, first, total, wall, baseline []float64
	for i := range cfg.Runs {
		t0 := time.Now()
		if err := exec.CommandContext(ctx, cfg.Boxd, "version").Run(); err != nil {
			return fmt.Errorf("bench: baseline: %w", err)
		}
		baseline = append(baseline, msSince(t0))

		t0 = time.Now()
		out, err := exec.CommandContext(ctx, cfg.Boxd, "vmm", "--kernel", kernel, "--mem-mib", "64",
			"--console", os.DevNull, "--result-json", result).CombinedOutput()
		if err != nil {
			return fmt.Errorf("bench: run %d: %v\n%s", i, err, out)
		}
		wall = append(wall, msSince(t0))
		var r struct {
			SetupMs   float64 `json:"setup_ms"`
			BootMarks []struct {
				ID uint64  `json:"id"`
				Ms float64 `json:"ms"`
			} `json:"boot_marks"`
		}
		b, err := os.ReadFile(result)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(b, &r); err != nil {
			return err
		}
		if len(r.BootMarks) != 1 {
			return fmt.Errorf("bench: run %d: boot marks %+v, want one", i, r.BootMarks)
		}
		setup = append(setup, r.SetupMs)
		first = append(first, r.BootMarks[0].Ms)
		total = append(total, r.SetupMs+r.BootMarks[0].Ms)
	}
	w := cfg.Out
	fmt.Fprintf(w, "monitor setup benchmark: %s, %d runs, times in ms\n", Environment(), cfg.Runs)
	fmt.Fprintf(w, "  setup (process start to vCPUs started)          %s\n", Summarize(setup))
	fmt.Fprintf(w, "  first KVM_RUN (vCPUs started to first insn)      %s\n", Summarize(first))
	fmt.Fprintf(w, "  process start to first guest instruction         %s  (target: median <= 5)\n", Summarize(total))
	fmt.Fprintf(w, "  exec to exit of boxd vmm                         %s\n", Summarize(wall))
	fmt.Fprintf(w, "  baseline: exec to exit of boxd version           %s\n", Summarize(baseline))
	fmt.Fprintf(w, "  ratio vmm/version exec-to-exit (medians)         %.2f\n", Summarize(wall).Median/Summarize(baseline).Median)
	return nil
}
