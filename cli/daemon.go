package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/boxd-dev/boxd/agent"
	"github.com/boxd-dev/boxd/host/api"
	"github.com/boxd-dev/boxd/host/client"
	"github.com/boxd-dev/boxd/host/daemon"
	"github.com/boxd-dev/boxd/host/quota"
)

type daemonFlags struct {
	stateDir, socket         string
	kernel, initramfs, image string
	cmdline                  string
	config                   string
	network, bridge, subnet  string
	diskMode, memDir         string
	bootTimeout              time.Duration
	json                     bool

	maxVMs, maxCPUs, defaultCPUs int
	maxMem, maxDisk              string
	defaultMem, defaultDisk      string
}

// backends builds the daemon's network and storage from its flags; tests
// substitute fakes.
var backends = realBackends

// daemonProbe reads a fork's guest facts; nil is the daemon's own (a
// script run in the guest). Tests whose "guests" are fake substitute one.
var daemonProbe func(ctx context.Context, c *agent.Client, vmDir string) (daemon.GuestFacts, error)

func newDaemonCmd() *cobra.Command { return daemonCmd(&daemonFlags{}) }

// daemonCmd is the daemon command with its flags bound to f.
func daemonCmd(fp *daemonFlags) *cobra.Command {
	f := fp
	cmd := &cobra.Command{
		Use:   "daemon --kernel VMLINUX --image ROOTFS [flags]",
		Short: "Run the boxd daemon in the foreground (root; one per host)",
		Long: `Run the daemon: the VM registry, one monitor per VM, networking, disks and
quotas, serving the API on a Unix socket until SIGINT or SIGTERM. Stopping the
daemon leaves the VMs running; the next daemon on the same --state-dir
reattaches to them.

Limits: flags given here (or in --config) override what the previous daemon
used, which is kept in the state directory; with neither, the defaults are
10 VMs of at most 2 vCPUs, 8G of memory and a 100G disk each.

--config FILE is a JSON object whose keys are these flags' names, e.g.
{"kernel": "/var/lib/boxd/vmlinux", "max-vms": 20, "max-mem": "4G"};
flags on the command line win over it.`,
		Example: `  boxd daemon --kernel vmlinux --initramfs initramfs.cpio.gz --image rootfs.ext4
  boxd daemon --state-dir /tmp/boxd --socket /tmp/boxd.sock --network none --kernel K --image I`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.config != "" {
				if err := applyConfigFile(cmd.Flags(), f.config); err != nil {
					return err
				}
			}
			return runDaemon(cmd, *f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.stateDir, "state-dir", "/var/lib/boxd", "where the registry, VM folders and disks live")
	fl.StringVar(&f.socket, "socket", "", "the API socket (default $"+client.SocketEnv+", else "+client.DefaultSocket+")")
	fl.StringVar(&f.kernel, "kernel", "", "guest kernel for every VM (required)")
	fl.StringVar(&f.initramfs, "initramfs", "", "guest initramfs (boxd's init and agent)")
	fl.StringVar(&f.image, "image", "", "base root file system image each VM's disk starts from (required)")
	fl.StringVar(&f.cmdline, "cmdline", "", "extra guest kernel command-line arguments")
	fl.StringVar(&f.config, "config", "", "JSON file of flag values (see above)")
	fl.StringVar(&f.network, "network", "bridge", `"bridge" (TAP per VM on a host bridge, NAT) or "none" (VMs without a network)`)
	fl.StringVar(&f.bridge, "bridge", "", "host bridge name (default boxd0)")
	fl.StringVar(&f.subnet, "subnet", "", "the guests' IPv4 subnet (default 10.88.0.0/16)")
	fl.StringVar(&f.diskMode, "disk-mode", "", `how disks share the image's blocks: "reflink", "cow" (an overlay), or "" to pick reflink where the state dir's file system has it`)
	fl.StringVar(&f.memDir, "mem-dir", "/dev/shm/boxd", "a folder on tmpfs for the VMs' memory files and fork snapshots (one filesystem: forks hard-link memory layers)")
	fl.DurationVar(&f.bootTimeout, "boot-timeout", 60*time.Second, "how long a VM may take from monitor start to agent ready")
	fl.IntVar(&f.maxVMs, "max-vms", 0, "most VMs at once (default 10)")
	fl.IntVar(&f.maxCPUs, "max-cpus", 0, "most vCPUs per VM (default 2)")
	fl.StringVar(&f.maxMem, "max-mem", "", "most memory per VM (default 8G)")
	fl.StringVar(&f.maxDisk, "max-disk", "", "largest disk per VM (default 100G)")
	fl.IntVar(&f.defaultCPUs, "default-cpus", 0, "vCPUs of a VM created without --cpus (default: the max)")
	fl.StringVar(&f.defaultMem, "default-mem", "", "memory of a VM created without --mem (default: the max)")
	fl.StringVar(&f.defaultDisk, "default-disk", "", "disk of a VM created without --disk (default: the max)")
	fl.BoolVar(&f.json, "json", false, "print one JSON document when ready (socket, state dir, pid, limits)")
	return cmd
}

// applyConfigFile sets every flag named in the JSON object at path that the
// command line did not set.
func applyConfigFile(fs *pflag.FlagSet, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		return fmt.Errorf("--config %s: %w", path, err)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fl := fs.Lookup(k)
		if fl == nil || k == "config" {
			return fmt.Errorf("--config %s: unknown key %q (keys are boxd daemon's flag names)", path, k)
		}
		if fl.Changed {
			continue
		}
		v := m[k]
		if f, ok := v.(float64); ok && f == float64(int64(f)) {
			v = int64(f)
		}
		if err := fs.Set(k, fmt.Sprint(v)); err != nil {
			return fmt.Errorf("--config %s: %s: %w", path, k, err)
		}
	}
	return nil
}

// limits returns the adjustment of the base limits by the flags that were set.
func (f daemonFlags) limits(fs *pflag.FlagSet) (func(quota.Limits) quota.Limits, error) {
	var sets []func(*quota.Limits)
	intFlag := func(name string, v int, set func(*quota.Limits, int)) {
		if fs.Changed(name) {
			sets = append(sets, func(l *quota.Limits) { set(l, v) })
		}
	}
	var errs []error
	sizeFlag := func(name, v string, parse func(string) (int, error), set func(*quota.Limits, int)) {
		if !fs.Changed(name) {
			return
		}
		n, err := parse(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("--%s: %w", name, err))
			return
		}
		sets = append(sets, func(l *quota.Limits) { set(l, n) })
	}
	intFlag("max-vms", f.maxVMs, func(l *quota.Limits, n int) { l.MaxVMs = n })
	intFlag("max-cpus", f.maxCPUs, func(l *quota.Limits, n int) { l.MaxCPUs = n })
	intFlag("default-cpus", f.defaultCPUs, func(l *quota.Limits, n int) { l.DefaultCPUs = n })
	sizeFlag("max-mem", f.maxMem, quota.ParseMemMiB, func(l *quota.Limits, n int) { l.MaxMemMiB = n })
	sizeFlag("max-disk", f.maxDisk, quota.ParseDiskGiB, func(l *quota.Limits, n int) { l.MaxDiskGiB = n })
	sizeFlag("default-mem", f.defaultMem, quota.ParseMemMiB, func(l *quota.Limits, n int) { l.DefaultMemMiB = n })
	sizeFlag("default-disk", f.defaultDisk, quota.ParseDiskGiB, func(l *quota.Limits, n int) { l.DefaultDiskGiB = n })
	if len(errs) > 0 {
		return nil, errs[0]
	}
	// A lowered max pulls a default that was at the old max down with it,
	// unless the default was set too: "--max-mem 2G" alone must not fail
	// because the default stayed 8G.
	return func(l quota.Limits) quota.Limits {
		for _, s := range sets {
			s(&l)
		}
		if !fs.Changed("default-cpus") {
			l.DefaultCPUs = min(l.DefaultCPUs, l.MaxCPUs)
		}
		if !fs.Changed("default-mem") {
			l.DefaultMemMiB = min(l.DefaultMemMiB, l.MaxMemMiB)
		}
		if !fs.Changed("default-disk") {
			l.DefaultDiskGiB = min(l.DefaultDiskGiB, l.MaxDiskGiB)
		}
		return l
	}, nil
}

// daemonReady is what `boxd daemon --json` prints once it serves.
type daemonReady struct {
	Socket   string       `json:"socket"`
	StateDir string       `json:"state_dir"`
	PID      int          `json:"pid"`
	Version  string       `json:"version"`
	Network  string       `json:"network"`
	Limits   quota.Limits `json:"limits"`
}

func runDaemon(cmd *cobra.Command, f daemonFlags) error {
	switch {
	case f.kernel == "":
		return fmt.Errorf("--kernel is required: the guest kernel every VM boots")
	case f.image == "":
		return fmt.Errorf("--image is required: the base root file system each VM's disk starts from")
	case f.network != "bridge" && f.network != "none":
		return fmt.Errorf("--network %q: want bridge or none", f.network)
	case f.diskMode != "" && f.diskMode != "reflink" && f.diskMode != "cow":
		return fmt.Errorf("--disk-mode %q: want reflink, cow, or empty (automatic)", f.diskMode)
	}
	if f.subnet != "" {
		if _, err := netip.ParsePrefix(f.subnet); err != nil {
			return fmt.Errorf("--subnet: %w", err)
		}
	}
	for _, p := range []string{f.kernel, f.initramfs, f.image} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err != nil {
			return err
		}
	}
	limits, err := f.limits(cmd.Flags())
	if err != nil {
		return err
	}
	stateDir, err := filepath.Abs(f.stateDir)
	if err != nil {
		return err
	}
	f.stateDir = stateDir
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := log.New(cmd.ErrOrStderr(), "boxd daemon: ", log.LstdFlags|log.Lmicroseconds)
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return err
	}
	network, storage, err := backends(f)
	if err != nil {
		return err
	}
	d, err := daemon.Open(ctx, daemon.Config{
		StateDir: stateDir, Kernel: f.kernel, Initrd: f.initramfs, Cmdline: f.cmdline,
		Limits: limits, Network: network, Storage: storage,
		MemDir: f.memDir, Probe: daemonProbe,
		BootTimeout: f.bootTimeout,
		Version:     versionOf(),
		Logf:        logger.Printf,
	})
	if err != nil {
		return err
	}
	defer d.Close()
	sock := client.SocketPath(f.socket)
	ln, err := daemon.Listen(sock)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer os.Remove(sock)
	ready := daemonReady{Socket: sock, StateDir: stateDir, PID: os.Getpid(), Version: Version, Network: f.network, Limits: d.Limits()}
	if f.json {
		printJSON(cmd.OutOrStdout(), ready)
	} else {
		l := ready.Limits
		logger.Printf("serving on %s, state in %s; limits: %d VMs of at most %d vCPUs, %s memory, %s disk",
			sock, stateDir, l.MaxVMs, l.MaxCPUs, quota.FormatMiB(l.MaxMemMiB), quota.FormatGiB(l.MaxDiskGiB))
	}
	err = d.Serve(ctx, ln)
	logger.Printf("stopped serving; VMs keep running")
	return err
}

func versionOf() api.VersionInfo {
	v := api.VersionInfo{Version: Version, GoVersion: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				v.Commit = s.Value
			}
		}
	}
	return v
}
