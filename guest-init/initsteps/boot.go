package initsteps

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/boxd-dev/boxd/agent/wire"
	"github.com/boxd-dev/boxd/devices/boottimer"
	"github.com/boxd-dev/boxd/guest-init/cmdline"
	"github.com/boxd-dev/boxd/guest-init/switchroot"
	"github.com/boxd-dev/boxd/vmm/boot"
)

// mountSpec is one filesystem init mounts.
type mountSpec struct {
	Target, FSType, Source, Data string
	Flags                        uintptr
	Mode                         os.FileMode
	Fatal                        bool
}

// mounts is the guest's base filesystem layout, in mount order (parents first).
var mounts = []mountSpec{
	{Target: "/proc", FSType: "proc", Source: "proc", Flags: unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, Mode: 0o555, Fatal: true},
	{Target: "/sys", FSType: "sysfs", Source: "sysfs", Flags: unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, Mode: 0o555, Fatal: true},
	{Target: "/dev", FSType: "devtmpfs", Source: "devtmpfs", Data: "mode=0755", Flags: unix.MS_NOSUID, Mode: 0o755, Fatal: true},
	{Target: "/dev/pts", FSType: "devpts", Source: "devpts", Data: "gid=5,mode=0620,ptmxmode=0666", Flags: unix.MS_NOSUID | unix.MS_NOEXEC, Mode: 0o755},
	{Target: "/dev/shm", FSType: "tmpfs", Source: "shm", Data: "mode=1777", Flags: unix.MS_NOSUID | unix.MS_NODEV, Mode: 0o1777},
	// /run carries init's own binaries across switch root.
	{Target: "/run", FSType: "tmpfs", Source: "tmpfs", Data: "mode=0755", Flags: unix.MS_NOSUID | unix.MS_NODEV, Mode: 0o755, Fatal: true},
	{Target: "/tmp", FSType: "tmpfs", Source: "tmpfs", Data: "mode=1777", Flags: unix.MS_NOSUID | unix.MS_NODEV, Mode: 0o1777},
	{Target: "/sys/fs/cgroup", FSType: "cgroup2", Source: "cgroup2", Data: "nsdelegate", Flags: unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, Mode: 0o555},
}

// movedMounts are carried onto the root disk (children travel with them).
var movedMounts = []string{"/dev", "/proc", "/sys", "/run", "/tmp"}

// newRootDir is where the root disk is mounted before it becomes "/".
const newRootDir = "/newroot"

// Early returns the steps run from the initramfs: filesystems, boot-timer
// mark 1, the command line, entropy, clock, and the switch onto the root disk
// (which, when it happens, re-executes init and never returns).
func Early() []Step {
	mount := func(m mountSpec) Step { return Step{Name: "mount " + m.Target, Run: m.run, Fatal: m.Fatal} }
	// /proc, /sys and /dev first: mark 1 (as early as /dev/mem exists) and
	// the command line (which says whether to be quiet) need nothing else.
	steps := []Step{mount(mounts[0]), mount(mounts[1]), mount(mounts[2]),
		{Name: "boot-timer mark 1", Run: markStep(boottimer.MarkInit)},
		{Name: "cmdline", Run: readCmdline},
	}
	for _, m := range mounts[3:] {
		steps = append(steps, mount(m))
	}
	return append(steps,
		Step{Name: "entropy", Run: seedEntropy},
		Step{Name: "clock", Run: setClock},
		Step{Name: "switch root", Run: switchRoot},
	)
}

// Late returns the steps run from the final root (the root disk, or the
// initramfs without one): networking, the in-guest tools, the agent, mark 2.
// They overlap: the agent process starts up (exec, Go runtime) while init
// configures the network and links the tools, but it listens only once all
// of that is done (Supervisor.Hold), so no host connects to a guest without
// its hostname and address.
func Late() []Step {
	return []Step{
		{Name: "cmdline", Run: readCmdline},
		Parallel("setup",
			Step{Name: "agent start", Run: startAgent},
			Step{Name: "loopback", Run: func(e *Env) error { return e.Sys.LinkUp("lo") }},
			Step{Name: "network", Run: network},
			Step{Name: "guest tools", Run: guestTools},
		),
		{Name: "agent", Run: agentReady},
		{Name: "boot-timer mark 2", Run: markAgentReady},
	}
}

func (m mountSpec) run(e *Env) error {
	target := e.Path(m.Target)
	if err := os.MkdirAll(target, m.Mode.Perm()); err != nil {
		return err
	}
	err := e.Sys.Mount(m.Source, target, m.FSType, m.Flags, m.Data)
	if errors.Is(err, unix.EBUSY) {
		// Already mounted (devtmpfs by CONFIG_DEVTMPFS_MOUNT on a disk root).
		return Skip("already mounted")
	}
	return err
}

func markStep(mark uint32) func(*Env) error {
	return func(e *Env) error { return e.Sys.WriteMMIO(boot.BootTimerAddr, mark) }
}

// readCmdline parses /proc/cmdline. Invalid keys are logged and ignored (the
// rest still apply), so the step only fails if the file cannot be read.
func readCmdline(e *Env) error {
	if e.cmdlineRead {
		return Skip("already read")
	}
	b, err := os.ReadFile(e.Path("/proc/cmdline"))
	if err != nil {
		return err
	}
	c, perr := cmdline.Parse(string(b))
	e.Config, e.cmdlineRead, e.Quiet = c, true, !c.LogSteps()
	if perr != nil {
		for _, line := range strings.Split(perr.Error(), "\n") {
			e.Logf("cmdline: ignored %s", line)
		}
	}
	return nil
}

func seedEntropy(e *Env) error {
	if len(e.Config.Seed) == 0 {
		return Skip("no " + cmdline.KeySeed)
	}
	return e.Sys.AddEntropy(e.Config.Seed)
}

func setClock(e *Env) error {
	if e.Config.Time.IsZero() {
		return Skip("no " + cmdline.KeyTime)
	}
	return e.Sys.SetClock(e.Config.Time)
}

// switchRoot moves onto the root disk when the command line names one. A
// switch that fails before the root moved leaves init on the initramfs,
// which keeps the agent reachable to diagnose the disk; one that fails after
// is fatal.
func switchRoot(e *Env) error {
	if e.Config.Root == "" {
		return Skip("no " + cmdline.KeyRoot + ", staying on the initramfs")
	}
	spec := switchroot.Spec{
		Device:  e.Config.Root,
		FSType:  e.Config.RootFSType,
		NewRoot: newRootDir,
		Wait:    e.DeviceWait,
		Move:    movedMounts,
		Bin:     initramfsBin,
		Init:    initName,
		Args:    []string{switchedArg},
		Quiet:   e.Quiet,
	}
	ops, err := switchroot.Plan(spec)
	if err != nil {
		return err
	}
	err = switchroot.Execute(e.Root, spec, ops, e.Sys, e.Environ, e.Logf)
	if errors.Is(err, switchroot.ErrHalfSwitched) {
		return fmt.Errorf("%w: %w", ErrFatal, err)
	}
	return err
}

// The initramfs keeps init and the guest tools in /bin (/init is a link to
// bin/init); switch root shows that directory at switchroot.BinDir.
const (
	initramfsBin = "/bin"
	initName     = "init"
)

// switchedArg tells the re-executed init that the root is already switched.
const switchedArg = "--switched"

// network configures eth0 (when it exists), resolv.conf and the hostname
// from the command line.
func network(e *Env) error {
	c := e.Config
	cfg := wire.NetworkConfig{Interface: "eth0", Hostname: c.Hostname}
	if c.Address.IsValid() {
		cfg.Address = c.Address.String()
	}
	if c.Gateway.IsValid() {
		cfg.Gateway = c.Gateway.String()
	}
	for _, d := range c.DNS {
		cfg.DNS = append(cfg.DNS, d.String())
	}
	if (cfg.Address != "" || cfg.Gateway != "") && !e.Sys.HasLink("eth0") {
		e.Logf("network: no eth0, address and route not applied")
		cfg.Address, cfg.Gateway = "", ""
	}
	if cfg.Address == "" && cfg.Gateway == "" && len(cfg.DNS) == 0 && cfg.Hostname == "" {
		return Skip("nothing configured")
	}
	if len(cfg.DNS) > 0 {
		// Debian images may lack /etc on a fresh disk; the initramfs has it.
		if err := os.MkdirAll(e.Path("/etc"), 0o755); err != nil {
			return err
		}
	}
	return e.Sys.SetNetwork(cfg)
}

// guestTools makes the initramfs's binaries usable on the root disk: boxd (the
// in-guest CLI) and busybox's poweroff/reboot/halt, which signal PID 1. Links
// go in /usr/local, and a file a user put there is never replaced.
func guestTools(e *Env) error {
	if !e.Switched {
		return Skip("on the initramfs, tools are in /bin")
	}
	links := map[string]string{"/usr/local/bin/boxd": "boxd"}
	for _, name := range []string{"poweroff", "reboot", "halt"} {
		links["/usr/local/sbin/"+name] = "busybox"
	}
	var errs []error
	for link, bin := range links {
		target := filepath.Join(switchroot.BinDir, bin)
		if _, err := os.Stat(e.Path(target)); err != nil {
			continue // not in this initramfs
		}
		p := e.Path(link)
		if old, err := os.Readlink(p); err == nil && old == target {
			continue
		} else if err == nil && strings.HasPrefix(old, switchroot.BinDir+"/") {
			os.Remove(p) // ours, from an older layout
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := os.Symlink(target, p); err != nil && !errors.Is(err, os.ErrExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// markAgentReady writes mark 2 now if the agent is ready, else when it
// first is (the supervisor keeps restarting an agent that failed).
func markAgentReady(e *Env) error {
	var err error
	mark := func() {
		if err = e.Sys.WriteMMIO(boot.BootTimerAddr, boottimer.MarkAgentReady); err != nil {
			e.Logf("boot-timer mark 2: %v", err)
		}
	}
	if e.Agent != nil && !e.Agent.WhenReady(mark) {
		return Skip("deferred until the agent is ready")
	}
	if e.Agent == nil {
		mark()
	}
	return err
}

// startAgent starts the agent, held back from listening until agentReady.
func startAgent(e *Env) error {
	if e.Agent == nil {
		return errors.New("no agent supervisor")
	}
	if err := e.Agent.Hold(); err != nil {
		e.Logf("agent: %v; starting it unheld", err)
	}
	err := e.Agent.Start(e.Config.AgentPort)
	e.agentErr.Store(&err)
	return err
}

// agentReady lets the agent listen and waits until it does.
func agentReady(e *Env) error {
	if e.Agent == nil {
		return errors.New("no agent supervisor")
	}
	e.Agent.Release()
	if err := e.agentErr.Load(); err != nil && *err != nil {
		return fmt.Errorf("not started: %w", *err)
	}
	return e.Agent.WaitReady(e.AgentReadyTimeout)
}
