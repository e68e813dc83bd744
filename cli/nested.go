package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/boxd-dev/boxd/nested"
	"github.com/spf13/cobra"
)

// Exit statuses of `boxd nested` that are not the command's own, chosen as
// timeout(1) and container runners do.
const (
	nestedExitTimeout  = 124 // the command did not finish within --timeout
	nestedExitHarness  = 125 // the harness failed; the command's status is unknown
	nestedExitCanceled = 130 // boxd was interrupted (SIGINT/SIGTERM)
)

func newNestedCmd() *cobra.Command {
	var (
		cfg     nested.Config
		out     string
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "nested [flags] -- CMD [ARG...]",
		Short: "Run a command where /dev/kvm has hardware virtualization, in an L1 VM if needed",
		Long: `nested runs CMD with a /dev/kvm that can boot Linux guests.

If this host has hardware virtualization (vmx/svm and /dev/kvm), CMD runs
directly. Otherwise boxd boots an L1 VM (QEMU TCG with an emulated AMD SVM CPU
and the host's Debian kernel) and runs CMD there, chrooted into the host's
root (read-only), in the current directory, with the current environment.
/tmp, /var/tmp and $HOME are writable in L1 (changes are discarded); --out DIR
is shared writable at the same path. CMD's stdin is /dev/null; its stdout and
stderr stream live. boxd exits with CMD's status, 124 on timeout, 125 when
the harness fails and 130 when interrupted.

L1 has one vCPU unless --cpus says otherwise: with more, QEMU's
multi-threaded emulation now and then resets or livelocks an L2 guest or
panics L1's kernel (docs/iobench.md, "Stalls and resets"). Benchmarks that
need the host's cores in L1 pass --cpus and live with it.

L1 prints a heartbeat on its serial console every 2 s; an L1 whose heartbeat stops
for --hang-after (it has hung, busy and silent, for many minutes) is
stopped, and boxd exits 125 saying it hung.

Needs: ` + nested.InstallCommand,
		Example: `  boxd nested -- sh -c 'test -c /dev/kvm && grep -c svm /proc/cpuinfo'
  go test -c -tags e2e -o /tmp/e2e.test ./e2e/ && boxd nested --out /tmp/e2e-out -- /tmp/e2e.test -test.v`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if out == "" {
				d, err := os.MkdirTemp("", "boxd-nested-out-")
				if err != nil {
					return &exitError{code: nestedExitHarness, err: err}
				}
				out = d
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "nested: output directory %s\n", out)
			cfg.Cmd, cfg.OutDir, cfg.Timeout = args, out, timeout
			cfg.Stdout, cfg.Stderr, cfg.Log = cmd.OutOrStdout(), cmd.ErrOrStderr(), cmd.ErrOrStderr()
			code, err := nested.Run(ctx, cfg)
			switch {
			case errors.Is(err, nested.ErrTimeout):
				return &exitError{code: nestedExitTimeout, err: err}
			case errors.Is(err, context.Canceled):
				return &exitError{code: nestedExitCanceled, err: err}
			case err != nil:
				return &exitError{code: nestedExitHarness, err: err}
			case code != 0:
				return &exitError{code: code}
			}
			return nil
		},
	}
	// Everything after CMD belongs to CMD, with or without "--".
	cmd.Flags().SetInterspersed(false)
	cmd.Flags().StringVar(&out, "out", "", "writable output directory shared with CMD at the same path (default: a new temporary directory)")
	cmd.Flags().DurationVar(&timeout, "timeout", nested.DefaultTimeout, "stop CMD (and L1) after this long")
	cmd.Flags().IntVar(&cfg.Mem, "mem", 0, "L1 memory in MiB (default: half the host's RAM, at most 8192)")
	cmd.Flags().DurationVar(&cfg.HangAfter, "hang-after", nested.DefaultHangAfter, "stop L1 as hung when its heartbeat (every 2 s) stops this long")
	cmd.Flags().IntVar(&cfg.CPUs, "cpus", 0, "L1 vCPUs (more than 1 is faster and less reliable; see above)")
	cmd.Flags().BoolVar(&cfg.ForceL1, "force-l1", false, "boot L1 even if this host has hardware virtualization")
	cmd.Flags().BoolVarP(&cfg.Verbose, "verbose", "v", false, "show L1's serial console")
	return cmd
}
