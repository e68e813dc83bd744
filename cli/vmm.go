package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/boxd-dev/boxd/internal/sysmon"
	"github.com/boxd-dev/boxd/vmm/control"
	"github.com/boxd-dev/boxd/vmm/machine"
)

// processStart is taken when the cli package initializes, as close to process
// start as Go code gets; the monitor reports its setup time from it.
var processStart = time.Now()

// Exit statuses of "boxd vmm", so a supervisor can tell a clean stop from a crash.
const (
	vmmExitPoweroff = 0 // guest powered off, or the monitor was told to stop
	vmmExitError    = 1 // the monitor failed (bad arguments, KVM error)
	vmmExitReboot   = 3 // guest asked to reboot: restart it
	vmmExitCrash    = 4 // guest crashed: triple fault, KVM could not run it, kernel panic
	// vmmExitSuspended (5, vmmcontrol.go): saved to disk on request.
)

type vmmFlags struct {
	kernel, initrd, cmdline, console string
	cpus, memMiB                     int
	memDir, layerDir                 string
	resultJSON                       string
	timing                           bool
	disks, nets                      []string
	vsock                            string
	control, restore                 string
	standby                          bool
}

func newVMMCmd() *cobra.Command {
	var f vmmFlags
	cmd := &cobra.Command{
		Use:   "vmm (--kernel VMLINUX | --restore DIR) [flags]",
		Short: "Run one VM in the foreground (the per-VM monitor the daemon spawns)",
		Long: `Run one microVM in this process until the guest powers off, reboots or crashes.

The kernel is an ELF vmlinux (booted through its PVH entry) or a bzImage (the
64-bit Linux boot protocol). The guest's serial console goes to --console.

With --restore the VM is not booted but resumed from a snapshot directory
(written by a fork or a suspend through --control): vCPUs, devices and memory
continue where they were; memory is mapped copy-on-write, so any number of
monitors can restore the same directory. The snapshot decides the vCPUs and
memory size; the device flags must describe the same devices (the host side
of each - disk file, TAP, MAC, vsock CID and socket - may differ).

--layer-dir names a folder of this VM's on the filesystem where snapshots
on disk live: memory restored from such a snapshot, which cannot be linked
into the tmpfs --mem-dir, is hard-linked there (never copied), so the
snapshot may be deleted and the VM still be forked. Links are removed when
the monitor ends.

--control SOCK lets a supervisor pause, resume, fork and suspend the running
VM (JSON lines, see package vmm/control and docs/cli.md).

--standby builds the VM (memory slots, vCPUs, devices) without booting
anything and waits for a "restore" request on --control naming a snapshot
directory: the costly part of a restore is done before the parent of a fork
even pauses.

Exit status:
  0  the guest powered off (or the monitor got SIGINT/SIGTERM and stopped it)
  1  the monitor failed (bad arguments, KVM error, a corrupt snapshot)
  3  the guest asked to reboot (a supervisor restarts it)
  4  the guest crashed (triple fault, KVM could not run it, kernel panic)
  5  the VM was suspended to disk through --control

The kernel command line is "` + machine.DefaultCmdline + `" followed by --cmdline.`,
		Example: `  boxd vmm --kernel vmlinux --initrd initramfs.cpio.gz --cpus 2 --mem-mib 512
  boxd vmm --kernel vmlinux --initrd rd.gz --cmdline 'rdinit=/bin/sh' --console guest.log
  boxd vmm --restore /dev/shm/boxd/snap1 --mem-dir /dev/shm/boxd/vm2 --control vm2.sock --vsock cid=4,path=vm2.vsock
  boxd vmm --restore /var/lib/boxd/vms/vm2/snapshots/s1 --mem-dir /dev/shm/boxd/vm2 --layer-dir /var/lib/boxd/vms/vm2/layers --control vm2.sock`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runVMM(cmd, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.kernel, "kernel", "", "guest kernel: ELF vmlinux with a PVH note, or bzImage (required)")
	fl.StringVar(&f.initrd, "initrd", "", "initramfs to load (optional)")
	fl.StringVar(&f.cmdline, "cmdline", "", "extra kernel command-line arguments")
	fl.IntVar(&f.cpus, "cpus", 1, "number of vCPUs")
	fl.IntVar(&f.memMiB, "mem-mib", 256, "guest memory in MiB")
	fl.StringVar(&f.console, "console", "-", `where the serial console goes: a file path, or "-" for stdout (stdin is then forwarded to the guest)`)
	fl.StringVar(&f.memDir, "mem-dir", "", "back guest RAM with a file in this folder (a tmpfs) instead of a memfd")
	fl.StringVar(&f.layerDir, "layer-dir", "", "a folder of this VM's on the filesystem of snapshots on disk, kept while it runs: memory restored from such a snapshot is linked here (never copied), so the VM can be forked after the snapshot is deleted")
	fl.StringVar(&f.resultJSON, "result-json", "", "write how the VM ended as JSON to this file")
	fl.StringArrayVar(&f.disks, "disk", nil, "attach a virtio-blk disk: PATH or cow:OVERLAY (a copy-on-write overlay, see docs/disk-format.md), then [,ro][,id=SERIAL]; repeatable, the guest sees vda, vdb, ... in this order")
	fl.StringArrayVar(&f.nets, "net", nil, "attach a virtio-net device on a TAP: tap=NAME[,mac=aa:bb:cc:dd:ee:ff][,mtu=N] (repeatable)")
	fl.StringVar(&f.vsock, "vsock", "", "attach a virtio-vsock device: cid=N,path=SOCK; host programs connect to SOCK and send \"CONNECT <port>\\n\", guest connections to port P reach SOCK_P")
	fl.BoolVar(&f.timing, "timing", false, "print the monitor's setup time and the VM's run time to stderr")
	fl.StringVar(&f.control, "control", "", "serve pause/resume/fork/suspend requests on this Unix socket (created 0600)")
	fl.StringVar(&f.restore, "restore", "", "resume the VM saved in this snapshot directory instead of booting --kernel")
	fl.BoolVar(&f.standby, "standby", false, "prepare a VM of --cpus and --mem-mib with the given devices and wait for a restore request on --control (a fork's child built before its parent pauses)")
	return cmd
}

// vmmResult is what --result-json writes (documented in docs/cli.md).
type vmmResult struct {
	Result     string  `json:"result"` // poweroff, reboot, crash, host-stop, suspended
	Detail     string  `json:"detail"`
	ExitStatus int     `json:"exit_status"`
	SetupMs    float64 `json:"setup_ms"` // process start to the vCPUs starting (standby: the restore request)
	RunMs      float64 `json:"run_ms"`   // vCPUs starting to the VM stopping
	// BootMarks are the guest's boot-timer writes, in ms after the vCPUs started.
	BootMarks []bootMark `json:"boot_marks"`
}

type bootMark struct {
	ID uint64  `json:"id"`
	Ms float64 `json:"ms"`
}

func runVMM(cmd *cobra.Command, f vmmFlags) error {
	stderr := cmd.ErrOrStderr()
	if path := os.Getenv("BOXD_CPUPROFILE"); path != "" {
		// For finding where a monitor spends its CPU (docs/iobench.md):
		// a pprof CPU profile of the whole run, written at exit.
		pf, err := os.Create(path)
		if err != nil {
			return fmt.Errorf("BOXD_CPUPROFILE: %w", err)
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return fmt.Errorf("BOXD_CPUPROFILE: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	relaxSysmon(stderr)
	var console io.Writer = cmd.OutOrStdout()
	interactive := f.console == "-"
	if !interactive {
		c, err := os.OpenFile(f.console, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("console: %w", err)
		}
		defer c.Close()
		console = c
	}
	switch {
	case f.standby:
		if f.kernel != "" || f.initrd != "" || f.cmdline != "" || f.restore != "" || f.control == "" {
			return errors.New("--standby takes --cpus, --mem-mib, devices and --control (required), not --kernel, --initrd, --cmdline or --restore")
		}
	case f.restore != "":
		if f.kernel != "" || f.initrd != "" || f.cmdline != "" || cmd.Flags().Changed("cpus") || cmd.Flags().Changed("mem-mib") {
			return errors.New("--restore takes the kernel, command line, vCPUs and memory from the snapshot: drop --kernel, --initrd, --cmdline, --cpus and --mem-mib")
		}
	default:
		if f.kernel == "" {
			return errors.New("--kernel (or --restore, or --standby) is required")
		}
		if _, err := os.Stat(f.kernel); err != nil {
			return fmt.Errorf("kernel: %w", err)
		}
	}
	devs, err := virtioDevices(f)
	if err != nil {
		return err
	}
	cfg := machine.Config{
		Virtio:   devs,
		MemDir:   f.memDir,
		LayerDir: f.layerDir,
		Console:  console,
		Log:      stderr,
	}
	var m *machine.Machine
	var standby *machine.Standby
	switch {
	case f.standby:
		cfg.CPUs, cfg.MemMiB = f.cpus, f.memMiB
		standby, err = machine.NewStandby(cfg)
	case f.restore != "":
		m, err = machine.RestoreDir(cfg, f.restore)
	default:
		cmdline := strings.TrimSpace(machine.DefaultCmdline + " " + f.cmdline)
		cfg.CPUs, cfg.MemMiB = f.cpus, f.memMiB
		cfg.Load = machine.LinuxLoader(f.kernel, f.initrd, cmdline, f.cpus)
		m, err = machine.New(cfg)
	}
	if err != nil {
		return err
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	ctl := newVMMControl(m, standby)
	var stopControl func() error
	if f.control != "" {
		ln, err := listenControl(f.control)
		if err != nil {
			if m != nil {
				m.Close()
			}
			ctl.abandon()
			return err
		}
		srv := control.Serve(ln, ctl)
		// Closed before the result is written: a suspend's answer reaches
		// the daemon before the monitor says it ended.
		defer srv.Close()
		defer os.Remove(f.control)
		stopControl = srv.Close
	}
	var setup time.Duration
	if standby != nil {
		select {
		case <-ctl.restored:
		case <-sigs:
			if ctl.abandon() == nil {
				fmt.Fprintln(stderr, "boxd vmm: host-stop: stopped while standing by")
				return writeResult(f.resultJSON, vmmResult{Result: machine.HostStop.String(), Detail: "stopped while standing by", BootMarks: []bootMark{}})
			}
			// A restore won the race: stop the VM it started.
			ctl.machine().Stop()
		}
		m = ctl.machine()
		setup = ctl.restoreTime
	}
	defer m.Close()
	go func() {
		select {
		case <-sigs:
			m.Stop()
		case <-m.Done():
		}
	}()
	if interactive {
		// Forwarding stops with the process; a blocked read of stdin is not
		// interruptible, and the monitor exits right after the VM stops.
		go forwardInput(cmd.InOrStdin(), m)
	}
	if standby == nil {
		if err := m.Start(); err != nil {
			return err
		}
		setup = time.Since(processStart)
	}
	// Loading the kernel and initrd left garbage on the heap; hand it back so the
	// monitor's resident size is what it needs to run, not what it needed to load.
	go debug.FreeOSMemory()
	startRun := time.Now()
	r := m.Wait()
	run := time.Since(startRun)
	if stopControl != nil {
		stopControl()
	}

	status := vmmExitPoweroff
	result := r.Kind.String()
	switch {
	case ctl.suspended.Load():
		status, result, r.Detail = vmmExitSuspended, "suspended", "saved to disk on request"
	case r.Kind == machine.Reboot:
		status = vmmExitReboot
	case r.Kind == machine.Crash:
		status = vmmExitCrash
	}
	if f.timing {
		fmt.Fprintf(stderr, "boxd vmm: setup %.2f ms, ran %.1f ms\n", ms(setup), ms(run))
	}
	fmt.Fprintf(stderr, "boxd vmm: %s: %s\n", result, r.Detail)
	res := vmmResult{Result: result, Detail: r.Detail, ExitStatus: status, SetupMs: ms(setup), RunMs: ms(run), BootMarks: []bootMark{}}
	for _, mk := range m.BootTimer.Marks() {
		res.BootMarks = append(res.BootMarks, bootMark{ID: mk.ID, Ms: ms(mk.At)})
	}
	if err := writeResult(f.resultJSON, res); err != nil {
		return err
	}
	if status != 0 {
		return &exitError{code: status}
	}
	return nil
}

// relaxSysmon gives the Go runtime's sysmon thread a timer slack in the
// background (internal/sysmon), so its wakes, thousands a second while
// vCPU and device threads go in and out of syscalls, coalesce. The
// environment variable BOXD_SYSMON_SLACK sets the slack (a Go duration)
// or turns this off ("off"), for measuring it (docs/iobench.md).
func relaxSysmon(stderr io.Writer) {
	slack := sysmon.DefaultSlack
	switch v := os.Getenv("BOXD_SYSMON_SLACK"); v {
	case "":
	case "off":
		return
	default:
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			fmt.Fprintf(stderr, "boxd vmm: BOXD_SYSMON_SLACK=%q is not a positive duration (like 1ms) or \"off\": using %v\n", v, slack)
		} else {
			slack = d
		}
	}
	go func() {
		if _, err := sysmon.Relax(slack); err != nil {
			fmt.Fprintf(stderr, "boxd vmm: runtime monitor thread left as it was: %v\n", err)
		}
	}()
}

// writeResult writes --result-json (nothing when path is empty).
func writeResult(path string, res vmmResult) error {
	if path == "" {
		return nil
	}
	b, _ := json.Marshal(res)
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("result: %w", err)
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func forwardInput(in io.Reader, m *machine.Machine) {
	buf := make([]byte, 256)
	for {
		n, err := in.Read(buf)
		if n > 0 {
			m.Serial.Enqueue(buf[:n])
		}
		if err != nil {
			return
		}
	}
}
