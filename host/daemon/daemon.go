package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/boxd-dev/boxd/agent"
	"github.com/boxd-dev/boxd/host/api"
	"github.com/boxd-dev/boxd/host/quota"
	"github.com/boxd-dev/boxd/host/store"
	"github.com/boxd-dev/boxd/host/supervisor"
)

// Config configures a Daemon.
type Config struct {
	// StateDir holds the store (boxd.db) and one folder per VM (vms/ID).
	StateDir string
	// Kernel and Initrd boot every VM; Cmdline is added to each VM's kernel
	// command line after the boxd.* keys.
	Kernel, Initrd, Cmdline string
	// Limits adjusts the base limits — those the previous daemon stored,
	// else quota.Defaults() — into this daemon's; nil keeps them. The
	// result is stored for the next daemon.
	Limits func(base quota.Limits) quota.Limits
	// Network gives VMs their network; nil: VMs have none.
	Network Network
	// Storage creates root disks; required.
	Storage Storage
	// Monitor configures how monitors are started (the boxd binary; tests
	// substitute a fake).
	Monitor supervisor.Config
	// BootTimeout bounds a boot, monitor start to agent answering (default
	// 60 s); StopTimeout bounds a monitor's orderly stop before SIGKILL
	// (default 10 s).
	BootTimeout, StopTimeout time.Duration
	// MemDir is the folder on tmpfs under which each VM's monitor keeps its
	// guest memory (MemDir/ID, boxd vmm --mem-dir) and forks write their
	// snapshots (MemDir/forks): one filesystem, so a child's monitor can
	// hard-link the layers it maps. Default /dev/shm/boxd.
	MemDir string
	// Probe reads what a fork's verification checks in a guest; nil runs
	// probeScript through the agent. vmDir is the VM's folder (where its
	// vsock socket is). Tests substitute a probe of their fake guest.
	Probe func(ctx context.Context, c *agent.Client, vmDir string) (GuestFacts, error)
	// ClockSkew is how far a fork's guest clock may be from the host's
	// after its fix-ups (default 2 s).
	ClockSkew time.Duration
	// Version is what GET /v1/version reports.
	Version api.VersionInfo
	// Logf logs what no client sees (default: discard).
	Logf func(format string, args ...any)
}

// maxStateDir keeps vms/ID/control.sock (the longest of the VM's sockets)
// under the 108-byte Unix socket limit.
const maxStateDir = 100 - len("/vms/0123456789ab/control.sock")

// Daemon is boxd's host daemon. It implements api.Backend.
type Daemon struct {
	cfg    Config
	limits quota.Limits
	st     *store.Store
	sup    *supervisor.Supervisor

	mu     sync.Mutex
	vms    map[string]*vmRuntime // guarded by mu; by name
	closed bool                  // guarded by mu
	// bg counts background work (restarts after a guest reboot, reconnects
	// after a daemon restart) and ops the requests that change VMs (create,
	// reboot, destroy); Close waits for both before it closes the store.
	bg, ops sync.WaitGroup
}

// vmRuntime is the daemon's live state of one VM beside its record.
type vmRuntime struct {
	name, id string
	// mu serialises operations that change the VM: create, boot, exit
	// handling, reboot, destroy.
	mu sync.Mutex

	amu    sync.Mutex
	client agentConn          // guarded by amu
	cancel context.CancelFunc // guarded by amu; cancels the boot in progress
	// gone is closed when the VM is destroyed (ends log followers).
	gone     chan struct{}
	goneOnce sync.Once
}

// Open opens the state directory, reattaches to the monitors that outlived
// the previous daemon and settles the VMs whose monitors ended meanwhile.
func Open(ctx context.Context, cfg Config) (*Daemon, error) {
	if cfg.StateDir == "" || cfg.Kernel == "" || cfg.Storage == nil {
		return nil, errors.New("daemon: state dir, kernel and storage are required")
	}
	dir, err := filepath.Abs(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	cfg.StateDir = dir
	if len(dir) > maxStateDir {
		return nil, fmt.Errorf("daemon: state dir %s is %d bytes long; Unix socket paths under it would exceed 108 bytes: use a path of at most %d", dir, len(dir), maxStateDir)
	}
	if cfg.BootTimeout <= 0 {
		cfg.BootTimeout = 60 * time.Second
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 10 * time.Second
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	if cfg.MemDir == "" {
		cfg.MemDir = "/dev/shm/boxd"
	}
	if cfg.MemDir, err = filepath.Abs(cfg.MemDir); err != nil {
		return nil, err
	}
	if cfg.Probe == nil {
		cfg.Probe = probeGuest
	}
	if cfg.ClockSkew <= 0 {
		cfg.ClockSkew = 2 * time.Second
	}
	for _, p := range []string{filepath.Join(dir, "vms"), filepath.Join(cfg.MemDir, forksDir)} {
		if err := os.MkdirAll(p, 0o700); err != nil {
			return nil, fmt.Errorf("daemon: %w", err)
		}
	}
	st, err := store.Open(filepath.Join(dir, "boxd.db"), time.Second)
	if err != nil {
		if errors.Is(err, store.ErrLocked) {
			return nil, fmt.Errorf("daemon: state dir %s is in use by another boxd daemon: stop it first, or use another --state-dir", dir)
		}
		return nil, fmt.Errorf("daemon: %w", err)
	}
	d := &Daemon{cfg: cfg, st: st, vms: map[string]*vmRuntime{}}
	if err := d.open(ctx); err != nil {
		d.sup.Close()
		st.Close()
		return nil, fmt.Errorf("daemon: %w", err)
	}
	return d, nil
}

func (d *Daemon) open(ctx context.Context) error {
	base, ok, err := d.st.Limits()
	if err != nil {
		return err
	}
	if !ok {
		base = quota.Defaults()
	}
	d.limits = base
	if d.cfg.Limits != nil {
		d.limits = d.cfg.Limits(base)
	}
	if err := d.limits.Validate(); err != nil {
		return err
	}
	if err := d.st.SetLimits(d.limits); err != nil {
		return err
	}
	mc := d.cfg.Monitor
	mc.OnExit = d.onExit
	if d.sup, err = supervisor.New(mc); err != nil {
		return err
	}
	vms, err := d.st.List()
	if err != nil {
		return err
	}
	if d.cfg.Network != nil {
		var leases []Lease
		for _, vm := range vms {
			if vm.Lease != nil {
				leases = append(leases, *vm.Lease)
			}
		}
		if err := d.cfg.Network.Start(ctx, leases); err != nil {
			return fmt.Errorf("network: %w", err)
		}
	}
	for _, vm := range vms {
		d.vms[vm.Name] = newRuntime(vm)
	}
	for _, vm := range vms {
		d.reattach(ctx, vm)
	}
	return nil
}

func newRuntime(vm store.VM) *vmRuntime {
	return &vmRuntime{name: vm.Name, id: vm.ID, gone: make(chan struct{})}
}

// Limits returns the limits in force.
func (d *Daemon) Limits() quota.Limits { return d.limits }

// Close stops serving VMs without stopping them: monitors keep running, and
// the next daemon reattaches to them. Boots in progress are cancelled (a
// create is undone; a restart is left to the next daemon).
func (d *Daemon) Close() error {
	rts := d.shutdown()
	d.sup.Close()
	d.bg.Wait()
	d.ops.Wait()
	for _, rt := range rts {
		rt.dropAgent()
	}
	var errs []error
	if d.cfg.Network != nil {
		errs = append(errs, d.cfg.Network.Close())
	}
	errs = append(errs, d.st.Close())
	return errors.Join(errs...)
}

// shutdown refuses new work and cancels the boots in progress, so that
// requests waiting on them end now; it returns every VM's runtime.
func (d *Daemon) shutdown() []*vmRuntime {
	d.mu.Lock()
	d.closed = true
	rts := make([]*vmRuntime, 0, len(d.vms))
	for _, rt := range d.vms {
		rts = append(rts, rt)
	}
	d.mu.Unlock()
	for _, rt := range rts {
		rt.cancelBoot()
	}
	return rts
}

// runtime returns the live state of name.
func (d *Daemon) runtime(name string) (*vmRuntime, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	rt, ok := d.vms[name]
	if !ok {
		return nil, api.NotFound(name)
	}
	return rt, nil
}

// begin starts an operation on the VM called name: it enters the daemon
// (refused once it is closing), locks the VM's runtime and reads its
// record. done releases both, in reverse order.
func (d *Daemon) begin(name string) (rt *vmRuntime, vm store.VM, done func(), err error) {
	if err := d.enter(); err != nil {
		return nil, vm, nil, err
	}
	if rt, err = d.runtime(name); err != nil {
		d.ops.Done()
		return nil, vm, nil, err
	}
	rt.mu.Lock()
	done = func() {
		rt.mu.Unlock()
		d.ops.Done()
	}
	if vm, err = d.st.Get(name); err != nil {
		done()
		return nil, vm, nil, d.storeErr(name, err)
	}
	return rt, vm, done, nil
}

func (d *Daemon) runtimeByID(id string) *vmRuntime {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, rt := range d.vms {
		if rt.id == id {
			return rt
		}
	}
	return nil
}

// enter registers a request that changes VMs, refusing it once Close has
// begun; the caller calls d.ops.Done when it ends.
func (d *Daemon) enter() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return api.Errorf(api.CodeUnavailable, "the daemon is shutting down").WithHint("retry once it is back")
	}
	d.ops.Add(1)
	return nil
}

func (d *Daemon) isClosed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closed
}

// background runs f as tracked background work, unless the daemon is closed.
func (d *Daemon) background(f func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	d.bg.Go(f)
}

// Paths inside a VM's folder.
func consolePath(vm store.VM) string { return filepath.Join(vm.Dir, "console.log") }
func monitorLog(vm store.VM) string  { return filepath.Join(vm.Dir, "monitor.log") }
func vsockPath(vm store.VM) string   { return filepath.Join(vm.Dir, "vsock.sock") }
func resultPath(vm store.VM) string  { return filepath.Join(vm.Dir, "result.json") }
func controlPath(vm store.VM) string { return filepath.Join(vm.Dir, "control.sock") }

// layerDir is the monitor's --layer-dir: where it links memory restored
// from a snapshot on disk (a suspend, a golden), so the snapshot can be
// deleted while the VM runs and the VM can still be forked.
func layerDir(vm store.VM) string { return filepath.Join(vm.Dir, "layers") }

// forksDir, under Config.MemDir, holds the snapshot directories of forks in
// progress (each deleted once its children run).
const forksDir = "forks"
