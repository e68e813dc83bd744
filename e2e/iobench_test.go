//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/boxd-dev/boxd/vmm/machine"
)

// ioScript measures the guest's virtio disk and network, then powers off: under
// boxd through the power register, under QEMU microvm (no such register) by a
// triple-fault reboot that -no-reboot turns into an exit.
func ioScript(tool string) string {
	return guestScript(fmt.Sprintf(`%[1]s disk-bench /dev/vda 256 3 | sed 's/^/IO /'
ip link set eth0 up
ip addr add 10.0.0.2/24 dev eth0
%[1]s tcp-bench 10.0.0.1:5000 67108864 | sed 's/^/IO /'`, tool)) + "reboot -f\n"
}

// BenchmarkIOvsQEMU runs the same guest I/O measurements under boxd vmm and under
// QEMU's microvm with its own virtio-mmio block and net devices, same kernel,
// same disk file, same TAP setup, alternating, and prints medians and ratios
// (target >= 0.8 of QEMU on each). Run with -test.bench IOvsQEMU -test.benchtime 1x.
func BenchmarkIOvsQEMU(b *testing.B) {
	needKVM(b)
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		b.Skipf("needs QEMU: %v", err)
	}
	ns := netns(b)
	tool := guestTool(b)
	for _, tap := range []string{"tapb", "tapq"} {
		run(b, "ip", "-n", ns, "tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr")
		run(b, "ip", "-n", ns, "link", "set", tap, "up")
	}
	kernel := guestKernel(b)
	rd := filepath.Join(b.TempDir(), "rd.cpio")
	if err := writeInitrd(rd, ioScript(tool), tool); err != nil {
		b.Fatal(err)
	}
	disk := filepath.Join(b.TempDir(), "disk.img")
	if err := os.WriteFile(disk, nil, 0o644); err != nil {
		b.Fatal(err)
	}
	os.Truncate(disk, 1<<30)

	type sample map[string]float64
	one := func(tap string, argv []string) sample {
		// The peer lives on the TAP under test; the other TAP has no address.
		run(b, "ip", "-n", ns, "addr", "flush", "dev", "tapb")
		run(b, "ip", "-n", ns, "addr", "flush", "dev", "tapq")
		run(b, "ip", "-n", ns, "addr", "add", "10.0.0.1/24", "dev", tap)
		peer := exec.Command("ip", "netns", "exec", ns, tool, "tcp-recv", "10.0.0.1:5000")
		pout, _ := peer.StdoutPipe()
		if err := peer.Start(); err != nil {
			b.Fatal(err)
		}
		defer peer.Process.Kill()
		sc := bufio.NewScanner(pout)
		if !sc.Scan() || sc.Text() != "listening" {
			b.Fatalf("peer: %q", sc.Text())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, argv...)...).CombinedOutput()
		s := sample{}
		for _, m := range marks(string(out), "IO ") {
			f := strings.Fields(m)
			if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
				s[f[0]+" "+f[1]] = v
			}
		}
		if len(s) != 4 {
			b.Fatalf("%s: %v; got %v\n%s", argv[0], err, s, out)
		}
		return s
	}
	boxdArgv := []string{boxdBin(b), "vmm", "--kernel", kernel, "--initrd", rd, "--mem-mib", "512", "--cpus", "2",
		"--console", "-", "--disk", disk, "--net", "tap=tapb"}
	qemuArgv := []string{qemu, "-M", "microvm,x-option-roms=off,rtc=off,acpi=off", "-accel", "kvm", "-cpu", "host",
		"-m", "512", "-smp", "2", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-serial", "stdio",
		"-drive", "file=" + disk + ",if=none,id=d0,format=raw", "-device", "virtio-blk-device,drive=d0",
		"-netdev", "tap,id=n0,ifname=tapq,script=no,downscript=no", "-device", "virtio-net-device,netdev=n0",
		"-kernel", kernel, "-initrd", rd, "-append", strings.Replace(machine.DefaultCmdline, "reboot=k", "reboot=t", 1)}

	const runs = 3
	var boxd, qemuS []sample
	for range runs {
		boxd = append(boxd, one("tapb", boxdArgv))
		qemuS = append(qemuS, one("tapq", qemuArgv))
	}
	for _, k := range []string{"seqwrite MBps", "seqread MBps", "randread IOPS", "net MBps"} {
		col := func(ss []sample) []float64 {
			var xs []float64
			for _, s := range ss {
				xs = append(xs, s[k])
			}
			return xs
		}
		bm, qm := median(col(boxd)), median(col(qemuS))
		b.Logf("%-14s boxd %8.1f  qemu %8.1f  ratio %.2f (target >= 0.8)", k, bm, qm, bm/qm)
		b.ReportMetric(bm/qm, strings.ReplaceAll(k, " ", "-")+"-ratio")
	}
}
