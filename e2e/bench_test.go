//go:build e2e

package e2e

import (
	"context"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	guestrd "github.com/boxd-dev/boxd/guest-init/initramfs"
)

// BenchmarkNewVsBareBoot compares "boxd new" (API, disk, network, monitor,
// boot, agent ready) with a bare "boxd vmm" boot of the same kernel, initramfs
// and image to the same point (agent answering over vsock), alternating runs in
// one process. It prints medians and their ratio; it asserts nothing about time.
// Run it with -test.bench NewVsBare -test.benchtime 1x (make bench does).
func BenchmarkNewVsBareBoot(b *testing.B) {
	const runs = 5
	needKVM(b)
	d := startDaemon(b, "--max-vms", "2")
	kernel, rd := guestKernel(b), guestInitramfs(b, guestrd.None)
	var newMs, bareMs, execMs, cliMs []float64
	for i := range runs {
		t0 := time.Now()
		var vm vmDoc
		d.jsonCLI(&vm, "new", "--name=bench"+strconv.Itoa(i), "--cpus", "1", "--mem", "512M", "--disk", "4G")
		newMs = append(newMs, msSince(t0))
		// exec round trip through the CLI, the daemon and vsock: the command's
		// own duration as the daemon measured it, and the whole CLI call.
		for range 5 {
			var ex struct {
				DurationMs float64 `json:"duration_ms"`
			}
			t0 = time.Now()
			d.jsonCLI(&ex, "exec", vm.Name, "true")
			cliMs = append(cliMs, msSince(t0))
			execMs = append(execMs, ex.DurationMs)
		}
		d.cli("destroy", vm.Name)

		disk, _ := rootDisk(b)
		dir := b.TempDir()
		sock := filepath.Join(dir, "vsock.sock")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		t0 = time.Now()
		vmm := exec.CommandContext(ctx, boxdBin(b), "vmm", "--kernel", kernel, "--initrd", rd, "--mem-mib", "512",
			"--console", filepath.Join(dir, "console.log"), "--vsock", "cid=3,path="+sock, "--disk", disk,
			"--cmdline", "boxd.root=/dev/vda")
		if err := vmm.Start(); err != nil {
			b.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- vmm.Wait() }()
		c := dialAgent(b, ctx, sock, exited, func() {})
		if err := c.Ping(ctx); err != nil {
			b.Fatal(err)
		}
		bareMs = append(bareMs, msSince(t0))
		c.Close()
		vmm.Process.Kill()
		<-exited
		cancel()
	}
	b.Logf("boxd exec VM true: median %.1f ms in the daemon, %.1f ms for the whole CLI call (n=%d)", median(execMs), median(cliMs), len(execMs))
	b.ReportMetric(median(cliMs), "exec-cli-ms")
	b.ReportMetric(median(newMs), "new-ms")
	b.ReportMetric(median(bareMs), "bare-ms")
	b.ReportMetric(median(newMs)/median(bareMs), "new/bare")
	b.Logf("boxd new to agent ready: median %.0f ms; bare boxd vmm to agent ready: median %.0f ms; ratio %.2f (target <= 1.25); %d runs each, alternating",
		median(newMs), median(bareMs), median(newMs)/median(bareMs), runs)
}
