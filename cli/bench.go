package cli

import (
	"fmt"
	"os"
	"os/exec"

	"github.com/spf13/cobra"

	"github.com/boxd-dev/boxd/bench"
	"github.com/boxd-dev/boxd/kernel"
)

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Benchmarks: boot against QEMU, monitor setup time",
		Long: `Benchmarks print medians, p99 and ratios of runs made side by side; they never
pass or fail on a time. Absolute latency is only meaningful on a host with
hardware virtualization: each report says where it ran.`,
	}
	cmd.AddCommand(newBenchBootCmd(), newBenchSetupCmd())
	return cmd
}

func selfPath() (string, error) {
	p, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("cannot find the boxd binary: %w", err)
	}
	return p, nil
}

func newBenchBootCmd() *cobra.Command {
	cfg := bench.BootConfig{CPUs: 1, MemMiB: 256, Runs: 20}
	var noQEMU bool
	cmd := &cobra.Command{
		Use:   "boot",
		Short: "Boot the guest kernel N times under boxd vmm and under QEMU microvm, alternating",
		Long: `Boot the same kernel and busybox initramfs N times with "boxd vmm" and with QEMU's
microvm machine (KVM-accelerated), alternating, and print boot-to-init medians,
p99 and their ratio, the monitor's RSS beyond guest RAM, and a breakdown of
where each boot's time goes: process start, KVM_CREATE_VM, the vCPUs starting
(boxd's boot-timer mark), the guest's clock starting (the kvmclock reading the
guest kernel prints) and init.

Needs a /dev/kvm that can boot Linux: run it through the nested harness on
hosts without VT-x/AMD-V (make bench does).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if cfg.Boxd, err = selfPath(); err != nil {
				return err
			}
			if cfg.Kernel == "" {
				if cfg.Kernel, err = kernel.Path(); err != nil {
					return err
				}
			}
			if !noQEMU {
				if cfg.QEMU, err = exec.LookPath("qemu-system-x86_64"); err != nil {
					return fmt.Errorf("QEMU not found (apt-get install qemu-system-x86, or pass --no-qemu): %w", err)
				}
			}
			cfg.Out = cmd.OutOrStdout()
			return bench.Boot(cmd.Context(), cfg)
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&cfg.Runs, "runs", cfg.Runs, "boots per monitor")
	fl.IntVar(&cfg.CPUs, "cpus", cfg.CPUs, "vCPUs")
	fl.IntVar(&cfg.MemMiB, "mem-mib", cfg.MemMiB, "guest memory in MiB")
	fl.StringVar(&cfg.Kernel, "kernel", "", "guest vmlinux (default: the cached build of kernel/)")
	fl.StringVar(&cfg.Initrd, "initrd", "", "initramfs (default: a busybox one that reboots at init)")
	fl.BoolVar(&noQEMU, "no-qemu", false, "measure boxd alone")
	return cmd
}

func newBenchSetupCmd() *cobra.Command {
	cfg := bench.SetupConfig{Runs: 50}
	cmd := &cobra.Command{
		Use:   "setup",
		Short: "Measure the monitor's setup time (process start to first guest instruction) on this host's /dev/kvm",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if cfg.Boxd, err = selfPath(); err != nil {
				return err
			}
			cfg.Out = cmd.OutOrStdout()
			return bench.Setup(cmd.Context(), cfg)
		},
	}
	cmd.Flags().IntVar(&cfg.Runs, "runs", cfg.Runs, "runs")
	return cmd
}
