package cli

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/boxd-dev/boxd/host/api"
	"github.com/boxd-dev/boxd/host/client"
)

func newSuspendCmd() *cobra.Command {
	var (
		f      hostFlags
		toDisk bool
	)
	cmd := &cobra.Command{
		Use:   "suspend NAME [--to-disk]",
		Short: "Pause a VM in memory, or save it to disk and free its memory",
		Long: `Suspend a running VM. By default its vCPUs stop and its memory stays where it is:
resuming takes well under a millisecond of the monitor's time. With --to-disk the
VM's whole state (vCPUs, devices, memory) is saved to a new snapshot under its
folder and its monitor ends, freeing the memory; its disk and address are kept.

A VM suspended to disk is a golden VM: "boxd new --from NAME" and "boxd fork NAME"
make warm copies of it without touching it. Commands that need the guest (exec,
cp, shell) refuse a suspended VM until "boxd resume NAME".`,
		Example: `  boxd suspend task-1
  boxd suspend app --to-disk --json
  boxd new --from app --name app-copy-1`,
		Args: cobra.ExactArgs(1),
		RunE: vmAction(&f, func(c *client.Client, ctx context.Context, name string) (api.VM, error) {
			return c.Suspend(ctx, name, toDisk)
		}),
	}
	f.add(cmd)
	cmd.Flags().BoolVar(&toDisk, "to-disk", false, "save the VM to a snapshot on disk and end its monitor (frees its memory)")
	return cmd
}

func newResumeCmd() *cobra.Command {
	var f hostFlags
	cmd := &cobra.Command{
		Use:   "resume NAME",
		Short: "Run a suspended VM again",
		Long: `Resume a VM suspended in memory (its vCPUs run again) or to disk (a monitor
restores its snapshot with the VM's own disk and address, then the guest's
clock is set and its entropy reseeded). A snapshot that is corrupt is refused:
the VM stays suspended and the error says why.`,
		Example: `  boxd resume task-1
  boxd resume app --json`,
		Args: cobra.ExactArgs(1),
		RunE: vmAction(&f, (*client.Client).Resume),
	}
	f.add(cmd)
	return cmd
}

func newForkCmd() *cobra.Command {
	var (
		f     hostFlags
		name  string
		count int
	)
	cmd := &cobra.Command{
		Use:   "fork SRC [--name NEW] [--count N]",
		Short: "Copy a VM: memory, running processes and disk",
		Long: `Fork a VM into copies that continue from the same moment: same memory, same
running processes, same disk contents. A running source is paused only while its
disk is cloned and its state saved, then runs on; memory is shared copy-on-write.
Each copy gets its own disk, MAC, IP address, host name, vsock and fresh entropy,
and is checked (host name, address, clock, /dev/urandom unlike its siblings' and
the source's) before it is handed out; a copy that fails is destroyed and
reported, and the command exits 1.

A source suspended to disk (a golden VM) is not touched: copies restore its
snapshot. A stopped source's disk is copied and the copies boot fresh.

With --count N and --name NEW the copies are NEW-1 ... NEW-N; without --name
each gets a generated name. --json prints the copies, the errors and where the
time went (parent paused, the monitor's own part, disk clone).`,
		Example: `  boxd fork task-1 --name task-1-attempt-2 --json
  boxd fork task-1 --name try --count 4
  boxd suspend --to-disk app && boxd fork app --count 3`,
		Args: cobra.ExactArgs(1),
		RunE: hostCmd(&f, func(ctx context.Context, cmd *cobra.Command, args []string) error {
			if err := nameArg(args[0]); err != nil {
				return err
			}
			if count < 1 {
				return fmt.Errorf("--count %d: want 1..%d", count, api.MaxForkCount)
			}
			req := api.ForkRequest{Name: name, Count: count}
			if err := req.Validate(); err != nil {
				return err
			}
			res, err := f.client().Fork(ctx, args[0], req)
			if err != nil {
				return err
			}
			if f.json {
				printJSON(cmd.OutOrStdout(), res)
			} else {
				printFork(cmd, res)
			}
			for _, e := range res.Errors {
				warnf(cmd, "%s: %s", e.Name, e.Error.Error())
			}
			if len(res.Errors) > 0 {
				return &exitError{code: 1}
			}
			return nil
		}),
	}
	f.add(cmd)
	cmd.Flags().StringVar(&name, "name", "", "the copy's name; with --count, the copies are NAME-1..NAME-N (default: generated)")
	cmd.Flags().IntVar(&count, "count", 1, fmt.Sprintf("how many copies (1..%d; quotas apply)", api.MaxForkCount))
	return cmd
}

func printFork(cmd *cobra.Command, res api.ForkResult) {
	if len(res.VMs) == 0 {
		return
	}
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tIP\tREADY")
	for _, vm := range res.VMs {
		ready := "-"
		if vm.Timing != nil {
			ready = fmt.Sprintf("%.1fms", vm.Timing.TotalMs)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", vm.Name, orDash(vm.IP), ready)
	}
	tw.Flush()
	t := res.Timing
	switch res.Kind {
	case "fork":
		warnf(cmd, "%s of %s: source paused %.1fms (monitor: fork %dµs), disks by %s in %.1fms, total %.1fms",
			res.Kind, res.Source, t.ParentPausedMs, t.MonitorForkUs, t.DiskClone, t.DiskCloneMs, t.TotalMs)
	default:
		warnf(cmd, "%s of %s: disks by %s in %.1fms, total %.1fms", res.Kind, res.Source, t.DiskClone, t.DiskCloneMs, t.TotalMs)
	}
}
