package cli

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/boxd-dev/boxd/host/api"
	"github.com/boxd-dev/boxd/host/client"
	"github.com/boxd-dev/boxd/host/quota"
)

func newNewCmd() *cobra.Command {
	var (
		f         hostFlags
		name      string
		cpus      int
		mem, disk string
		from      string
	)
	cmd := &cobra.Command{
		Use:   "new [--name NAME] [--cpus N] [--mem SIZE] [--disk SIZE] [--from GOLDEN]",
		Short: "Create a VM and wait until it is ready",
		Long: `Create a VM: a fresh persistent disk from the base image, a network address,
and a booted guest whose agent answers. Prints the VM's name (or, with --json,
the VM). Sizes left out take the daemon's defaults; asking for more than the
daemon's limits is refused with the flag that raises them.

--from GOLDEN makes a warm copy of a golden VM instead: one suspended to disk
(boxd suspend --to-disk GOLDEN) is restored with its memory and running
processes, a stopped one has its disk copied and boots. The golden never
changes; the copy has the golden's sizes, its own disk, address and name.`,
		Example: `  boxd new --name task-1 --json
  boxd new --cpus 1 --mem 512M --disk 20G
  boxd suspend --to-disk app-golden && boxd new --from app-golden --name app-1 --json`,
		Args: cobra.NoArgs,
		RunE: hostCmd(&f, func(ctx context.Context, cmd *cobra.Command, _ []string) error {
			req := api.CreateRequest{Name: name, CPUs: cpus, From: from}
			for _, n := range []string{name, from} {
				if n != "" {
					if err := nameArg(n); err != nil {
						return err
					}
				}
			}
			var err error
			if mem != "" {
				if req.MemMiB, err = quota.ParseMemMiB(mem); err != nil {
					return fmt.Errorf("--mem: %w", err)
				}
			}
			if disk != "" {
				if req.DiskGiB, err = quota.ParseDiskGiB(disk); err != nil {
					return fmt.Errorf("--disk: %w", err)
				}
			}
			vm, err := f.client().Create(ctx, req)
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd.OutOrStdout(), vm)
			}
			fmt.Fprintln(cmd.OutOrStdout(), vm.Name)
			return nil
		}),
	}
	f.add(cmd)
	fl := cmd.Flags()
	fl.StringVar(&name, "name", "", "the VM's name, a DNS label (default: generated, vm-xxxxxx)")
	fl.IntVar(&cpus, "cpus", 0, "vCPUs (default: the daemon's)")
	fl.StringVar(&mem, "mem", "", "memory, e.g. 512M or 8G (default: the daemon's)")
	fl.StringVar(&disk, "disk", "", "root disk size, e.g. 20G or 1T (default: the daemon's)")
	fl.StringVar(&from, "from", "", "copy this golden VM (suspended to disk, or stopped) instead of booting the image")
	return cmd
}

func newLsCmd() *cobra.Command {
	var f hostFlags
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List VMs",
		Args:    cobra.NoArgs,
		RunE: hostCmd(&f, func(ctx context.Context, cmd *cobra.Command, _ []string) error {
			vms, err := f.client().List(ctx)
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd.OutOrStdout(), api.VMList{VMs: vms})
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSTATE\tIP\tCPUS\tMEM\tDISK\tCREATED")
			for _, vm := range vms {
				ip := vm.IP
				if ip == "" {
					ip = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", vm.Name, vm.State, ip, vm.CPUs,
					quota.FormatMiB(vm.MemMiB), quota.FormatGiB(vm.DiskGiB), ago(vm.Created))
			}
			return tw.Flush()
		}),
	}
	f.add(cmd)
	return cmd
}

func ago(t time.Time) string {
	d := time.Since(t).Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

func newInspectCmd() *cobra.Command {
	var f hostFlags
	cmd := &cobra.Command{
		Use:   "inspect NAME",
		Short: "Show one VM: state, address, sizes, monitor, how it last ended",
		Args:  cobra.ExactArgs(1),
		RunE: hostCmd(&f, func(ctx context.Context, cmd *cobra.Command, args []string) error {
			if err := nameArg(args[0]); err != nil {
				return err
			}
			vm, err := f.client().Get(ctx, args[0])
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd.OutOrStdout(), vm)
			}
			w := cmd.OutOrStdout()
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
			row("name", vm.Name)
			row("id", vm.ID)
			row("state", vm.State)
			if vm.Error != "" {
				row("error", vm.Error)
			}
			row("cpus", fmt.Sprint(vm.CPUs))
			row("memory", quota.FormatMiB(vm.MemMiB))
			row("disk", quota.FormatGiB(vm.DiskGiB))
			row("ip", orDash(vm.IP))
			row("mac", orDash(vm.MAC))
			row("tap", orDash(vm.TAP))
			row("vsock cid", fmt.Sprint(vm.VsockCID))
			row("monitor pid", orDash(fmt.Sprint(vm.PID)))
			row("created", vm.Created.Format(time.RFC3339))
			if vm.Started != nil {
				row("started", vm.Started.Format(time.RFC3339))
			}
			row("restarts", fmt.Sprint(vm.Restarts))
			if e := vm.LastExit; e != nil {
				row("last exit", strings.TrimSpace(fmt.Sprintf("status %d %s %s %s at %s", e.Status, e.Signal, e.Result, e.Detail, e.At.Format(time.RFC3339))))
			}
			return tw.Flush()
		}),
	}
	f.add(cmd)
	return cmd
}

func orDash(s string) string {
	if s == "" || s == "0" {
		return "-"
	}
	return s
}

func newDestroyCmd() *cobra.Command {
	var (
		f   hostFlags
		all bool
	)
	cmd := &cobra.Command{
		Use:     "destroy NAME... | --all",
		Aliases: []string{"rm"},
		Short:   "Destroy VMs: stop them and delete their disks, addresses and state",
		Args: func(cmd *cobra.Command, args []string) error {
			if all && len(args) > 0 {
				return fmt.Errorf("give VM names or --all, not both")
			}
			if !all && len(args) == 0 {
				return fmt.Errorf("name the VMs to destroy, or give --all")
			}
			return nil
		},
		RunE: hostCmd(&f, func(ctx context.Context, cmd *cobra.Command, args []string) error {
			for _, n := range args {
				if err := nameArg(n); err != nil {
					return err
				}
			}
			c := f.client()
			var res api.DestroyResult
			var err error
			if all {
				res, err = c.DestroyAll(ctx)
			} else {
				res, err = c.Destroy(ctx, args...)
			}
			if err != nil {
				return err
			}
			if f.json {
				printJSON(cmd.OutOrStdout(), res)
			} else {
				for _, n := range res.Destroyed {
					fmt.Fprintln(cmd.OutOrStdout(), n)
				}
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
	cmd.Flags().BoolVar(&all, "all", false, "destroy every VM")
	return cmd
}

func newRebootCmd() *cobra.Command {
	var f hostFlags
	cmd := &cobra.Command{
		Use:   "reboot NAME",
		Short: "Restart a VM with the same disk (also starts a stopped or crashed VM)",
		Long: `Restart a VM's monitor with the same disk and wait until the guest is ready.
A running guest first flushes its file systems (sync). A stopped or crashed VM
is started again.`,
		Args: cobra.ExactArgs(1),
		RunE: vmAction(&f, (*client.Client).Reboot),
	}
	f.add(cmd)
	return cmd
}

func newLogsCmd() *cobra.Command {
	var (
		f      hostFlags
		follow bool
	)
	cmd := &cobra.Command{
		Use:   "logs NAME [-f]",
		Short: "Print a VM's serial console",
		Args:  cobra.ExactArgs(1),
		RunE: hostCmd(&f, func(ctx context.Context, cmd *cobra.Command, args []string) error {
			if err := nameArg(args[0]); err != nil {
				return err
			}
			if f.json && follow {
				return fmt.Errorf("--json prints one document, so it cannot --follow")
			}
			if !f.json {
				err := f.client().Logs(ctx, args[0], follow, cmd.OutOrStdout())
				if follow && ctx.Err() != nil {
					return nil // interrupted: the normal end of following
				}
				return err
			}
			var b strings.Builder
			if err := f.client().Logs(ctx, args[0], false, &b); err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), logsJSON{Name: args[0], Console: b.String()})
		}),
	}
	f.add(cmd)
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing what the guest writes, until interrupted or the VM is destroyed")
	return cmd
}

// logsJSON is `boxd logs --json`.
type logsJSON struct {
	Name    string `json:"name"`
	Console string `json:"console"`
}
