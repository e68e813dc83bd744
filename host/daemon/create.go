package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/boxd-dev/boxd/agent"
	"github.com/boxd-dev/boxd/guest-init/cmdline"
	"github.com/boxd-dev/boxd/host/api"
	"github.com/boxd-dev/boxd/host/quota"
	"github.com/boxd-dev/boxd/host/store"
	"github.com/boxd-dev/boxd/host/supervisor"
)

// firstCID is the lowest guest context ID (0-2 are reserved by vsock).
const firstCID = 3

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Create creates a VM and returns it once its guest agent answers. Any
// failure undoes everything: no record, lease, disk or monitor is left.
func (d *Daemon) Create(ctx context.Context, req api.CreateRequest) (api.VM, error) {
	if err := d.enter(); err != nil {
		return api.VM{}, err
	}
	defer d.ops.Done()
	if req.From != "" {
		return d.createFrom(ctx, req)
	}
	start := time.Now()
	size, err := d.limits.Resolve(quota.Size{CPUs: req.CPUs, MemMiB: req.MemMiB, DiskGiB: req.DiskGiB})
	if err != nil {
		return api.VM{}, quotaErr(err)
	}
	vm, rt, err := d.reserve(req.Name, size)
	if err != nil {
		return api.VM{}, err
	}
	// reserve returned with rt.mu held: nothing else touches the VM until
	// it runs or is undone.
	defer rt.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, d.cfg.BootTimeout+time.Minute)
	defer cancel()
	rt.setCancel(cancel)
	defer rt.setCancel(nil)

	vm, err = d.provision(ctx, vm)
	if err == nil {
		vm, err = d.boot(ctx, rt, vm, "")
	}
	if err != nil {
		if uerr := d.undo(vm); uerr != nil {
			d.cfg.Logf("create %s: undo: %v", vm.Name, uerr)
			err = errors.Join(err, uerr)
		}
		d.forget(rt)
		return api.VM{}, err
	}
	v := view(vm)
	v.Timing = &api.Timing{TotalMs: ms(time.Since(start))}
	return v, nil
}

func quotaErr(err error) error {
	var qe *quota.Error
	if errors.As(err, &qe) {
		return (&api.Error{Code: api.CodeQuota, Message: qe.Error()}).WithHint("%s", qe.Hint())
	}
	return &api.Error{Code: api.CodeInvalid, Message: err.Error()}
}

// reserve writes the VM's record in state Creating — its name, quota slot,
// ID and CID taken — and registers its runtime, locked.
func (d *Daemon) reserve(name string, size quota.Size) (store.VM, *vmRuntime, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return store.VM{}, nil, api.Errorf(api.CodeUnavailable, "the daemon is shutting down")
	}
	vms, err := d.st.List()
	if err != nil {
		return store.VM{}, nil, err
	}
	var cids []uint32
	for _, vm := range vms {
		cids = append(cids, vm.CID)
	}
	cid := uint32(firstCID)
	for slices.Contains(cids, cid) {
		cid++
	}
	if name == "" {
		name = d.generateName()
	}
	id := randomHex(6)
	vm := store.VM{
		Name: name, ID: id, State: store.Creating,
		CPUs: size.CPUs, MemMiB: size.MemMiB, DiskGiB: size.DiskGiB, CID: cid,
		Dir: filepath.Join(d.cfg.StateDir, "vms", id), MemDir: filepath.Join(d.cfg.MemDir, id),
		Created: time.Now().UTC(),
	}
	if err := d.st.Create(vm, d.limits.CheckCount); err != nil {
		if errors.Is(err, store.ErrExists) {
			return store.VM{}, nil, api.Errorf(api.CodeExists, "a VM named %q exists", name).WithHint("pick another --name, or `boxd destroy %s` first", name)
		}
		return store.VM{}, nil, quotaErr(err)
	}
	rt := newRuntime(vm)
	rt.mu.Lock()
	d.vms[name] = rt
	return vm, rt, nil
}

// generateName returns "vm-" and six hex digits, unused. d.mu is held.
func (d *Daemon) generateName() string {
	for {
		n := "vm-" + randomHex(3)
		if _, ok := d.vms[n]; !ok {
			return n
		}
	}
}

// provision gives a reserved VM its folder, disk and network lease, each
// recorded as soon as it is taken.
func (d *Daemon) provision(ctx context.Context, vm store.VM) (store.VM, error) {
	if err := os.MkdirAll(vm.Dir, 0o700); err != nil {
		return vm, err
	}
	disk, err := d.cfg.Storage.CreateDisk(ctx, vm.ID, int64(vm.DiskGiB)*quota.GiB)
	if err != nil {
		return vm, api.Errorf(api.CodeInternal, "create disk of %q: %v", vm.Name, err)
	}
	vm, err = d.update(vm.Name, func(v *store.VM) { v.DiskPath = disk })
	if err != nil {
		return vm, err
	}
	return d.attach(ctx, vm)
}

// attach takes a network lease for vm, if the daemon has a network.
func (d *Daemon) attach(ctx context.Context, vm store.VM) (store.VM, error) {
	if d.cfg.Network == nil || vm.Lease != nil {
		return vm, nil
	}
	l, err := d.cfg.Network.Attach(ctx, vm.ID)
	if err != nil {
		return vm, api.Errorf(api.CodeInternal, "network for %q: %v", vm.Name, err)
	}
	return d.update(vm.Name, func(v *store.VM) { v.Lease = &l })
}

// detach frees vm's lease, if it holds one.
func (d *Daemon) detach(ctx context.Context, vm store.VM) (store.VM, error) {
	if vm.Lease == nil || d.cfg.Network == nil {
		return vm, nil
	}
	if err := d.cfg.Network.Detach(ctx, *vm.Lease); err != nil {
		return vm, fmt.Errorf("network: detach %s: %w", vm.Lease.TAP, err)
	}
	return d.update(vm.Name, func(v *store.VM) { v.Lease = nil })
}

func (d *Daemon) update(name string, f func(*store.VM)) (store.VM, error) {
	return d.st.Update(name, func(v *store.VM) error { f(v); return nil })
}

// spec is the monitor configuration of vm, with a fresh kernel command line
// (new entropy seed and clock each boot).
func (d *Daemon) spec(vm store.VM) supervisor.Spec {
	seed := make([]byte, 32) // 32 bytes initialise the guest's CRNG at once
	rand.Read(seed)
	c := cmdline.Config{Hostname: vm.Name, Seed: seed, Time: time.Now().UTC(), Root: "/dev/vda"}
	s := supervisor.Spec{
		ID: vm.ID, Kernel: d.cfg.Kernel, Initrd: d.cfg.Initrd,
		CPUs: vm.CPUs, MemMiB: vm.MemMiB,
		Disks: []supervisor.Disk{{Path: vm.DiskPath}},
		CID:   vm.CID, VsockPath: vsockPath(vm),
		ConsolePath: consolePath(vm), LogPath: monitorLog(vm), ResultPath: resultPath(vm),
		MemDir: vm.MemDir, LayerDir: layerDir(vm), ControlPath: controlPath(vm),
	}
	if l := vm.Lease; l != nil {
		c.Address, c.Gateway, c.DNS = l.Address, l.Gateway, l.DNS
		s.TAP, s.MAC = l.TAP, l.MAC
	}
	s.Cmdline = strings.TrimSpace(c.String() + " " + d.cfg.Cmdline)
	return s
}

// boot starts vm's monitor — booting the kernel, or with restore resuming
// that snapshot directory — and waits for its agent; vm's runtime is
// locked. On success the VM is Running; on failure no monitor of it runs.
func (d *Daemon) boot(ctx context.Context, rt *vmRuntime, vm store.VM, restore string) (store.VM, error) {
	vm, c, err := d.startMonitor(ctx, rt, vm, restore)
	if err != nil {
		return vm, err
	}
	rt.setAgent(c)
	return d.update(vm.Name, func(v *store.VM) { v.State = store.Running })
}

// startMonitor starts vm's monitor and returns the agent once it answers,
// leaving the state as it is; on failure no monitor of vm runs.
func (d *Daemon) startMonitor(ctx context.Context, rt *vmRuntime, vm store.VM, restore string) (store.VM, *agent.Client, error) {
	spec := d.spec(vm)
	spec.Restore = restore
	// A socket file left by an earlier monitor would make the new one fail
	// to listen.
	for _, p := range []string{spec.VsockPath, spec.ControlPath} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return vm, nil, err
		}
	}
	if err := d.freshMemDir(vm); err != nil {
		return vm, nil, api.Errorf(api.CodeInternal, "memory or layer folder of %q: %v", vm.Name, err)
	}
	id, err := d.sup.Start(spec)
	if err != nil {
		return vm, nil, api.Errorf(api.CodeInternal, "start monitor of %q: %v", vm.Name, err)
	}
	mon := &store.Monitor{PID: id.PID, StartTime: id.StartTime, BootID: id.BootID}
	vm, err = d.update(vm.Name, func(v *store.VM) { v.Monitor, v.Started, v.Error = mon, time.Now().UTC(), "" })
	if err != nil {
		d.sup.Stop(context.Background(), vm.ID)
		return vm, nil, err
	}
	bctx, cancel := context.WithTimeout(ctx, d.cfg.BootTimeout)
	defer cancel()
	c, err := waitReady(bctx, spec.VsockPath, d.sup.Done(vm.ID))
	if err != nil {
		if d.isClosed() && vm.State != store.Creating {
			// The daemon is going away, not the VM: its monitor stays
			// recorded, and the next daemon adopts it and waits on.
			return vm, nil, err
		}
		vm, err = d.bootFailed(vm, spec, err)
		return vm, nil, err
	}
	return vm, c, nil
}

// freshMemDir empties vm's memory folder and layer folder for a new
// monitor: a memory file left by an earlier monitor is never the new
// guest's, and links a monitor that was killed left in its layer folder
// would keep whole snapshots on disk.
func (d *Daemon) freshMemDir(vm store.VM) error {
	for _, dir := range d.monitorDirs(vm) {
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
	}
	return nil
}

// dropMemDir deletes vm's memory folder and layer folder once no monitor of
// it runs (the VM's own snapshots are elsewhere in its folder).
func (d *Daemon) dropMemDir(vm store.VM) {
	for _, dir := range d.monitorDirs(vm) {
		if err := os.RemoveAll(dir); err != nil {
			d.cfg.Logf("%s: remove %s: %v", vm.Name, dir, err)
		}
	}
}

// monitorDirs are the folders a monitor of vm keeps its memory's files in.
func (d *Daemon) monitorDirs(vm store.VM) []string {
	var dirs []string
	if vm.MemDir != "" {
		dirs = append(dirs, vm.MemDir)
	}
	if vm.Dir != "" {
		dirs = append(dirs, layerDir(vm))
	}
	return dirs
}

// bootFailed stops a monitor whose guest did not come up and explains why,
// quoting the end of the monitor's log: after a failed create the VM's
// folder is gone, so the error is the only place the reason survives.
func (d *Daemon) bootFailed(vm store.VM, spec supervisor.Spec, cause error) (store.VM, error) {
	sctx, cancel := context.WithTimeout(context.Background(), d.cfg.StopTimeout)
	defer cancel()
	d.sup.Stop(sctx, vm.ID) // ErrGone if it ended by itself
	why := cause.Error()
	if errors.Is(cause, errMonitorEnded) {
		if r, err := supervisor.ReadResult(spec.ResultPath); err == nil {
			why = fmt.Sprintf("%v: %s (%s), exit status %d", cause, r.Result, r.Detail, r.ExitStatus)
		} else {
			why = fmt.Sprintf("%v, without a result", cause)
		}
	} else if errors.Is(cause, context.DeadlineExceeded) {
		why = fmt.Sprintf("the guest agent did not answer within %v (%v)", d.cfg.BootTimeout, cause)
	}
	if t := tail(spec.LogPath, 8, 8192); t != "" {
		why += "; monitor log ends: " + t
	}
	if t := tail(spec.ConsolePath, 8, 2048); t != "" {
		why += "; console ends: " + t
	}
	vm, err := d.update(vm.Name, func(v *store.VM) { v.Monitor, v.Error = nil, why })
	if err != nil {
		return vm, err
	}
	if spec.Restore != "" {
		return vm, api.Errorf(api.CodeUnavailable, "VM %q did not resume from %s: %s", vm.Name, spec.Restore, why)
	}
	e := api.Errorf(api.CodeUnavailable, "VM %q did not boot: %s", vm.Name, why)
	if vm.State == store.Creating {
		return vm, e.WithHint("the VM was removed; `boxd new` again once the cause is fixed")
	}
	return vm, e.WithHint("`boxd logs %s` shows its console; `boxd reboot %s` tries again", vm.Name, vm.Name)
}

// tail returns at most the last lines lines (and maxBytes bytes) of a file,
// joined with " | ", or "" if it cannot be read.
func tail(path string, lines, maxBytes int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(0, fi.Size()-int64(maxBytes))
	buf := make([]byte, fi.Size()-off)
	n, _ := f.ReadAt(buf, off)
	text := strings.TrimSpace(string(buf[:n]))
	all := strings.Split(text, "\n")
	if off > 0 && len(all) > 1 {
		all = all[1:] // a cut first line
	}
	// A Go panic's first line says what happened; its stack does not.
	for i, l := range all {
		if strings.HasPrefix(l, "panic: ") {
			all = all[i:min(len(all), i+2)]
			break
		}
	}
	all = all[max(0, len(all)-lines):]
	for i, l := range all {
		all[i] = strings.TrimSpace(l)
	}
	return strings.Join(all, " | ")
}

// undo releases everything vm holds and deletes its record; vm's runtime is
// locked. It is how a failed create ends and how destroy ends.
func (d *Daemon) undo(vm store.VM) error {
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.StopTimeout+30*time.Second)
	defer cancel()
	sctx, scancel := context.WithTimeout(ctx, d.cfg.StopTimeout)
	_, err := d.sup.Stop(sctx, vm.ID)
	scancel()
	switch {
	case err == nil:
	case errors.Is(err, supervisor.ErrGone):
		// Not watched. If a monitor is recorded (one a restarted daemon
		// could not account for), make sure it is not left running.
		if err := d.stopRecorded(vm); err != nil {
			return err
		}
	default:
		return err
	}
	vm, err = d.update(vm.Name, func(v *store.VM) { v.Monitor = nil })
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if vm, err = d.detach(ctx, vm); err != nil {
		return err
	}
	if vm.DiskPath != "" {
		if err := d.cfg.Storage.DeleteDisk(ctx, vm.ID); err != nil {
			return fmt.Errorf("delete disk: %w", err)
		}
	}
	if vm.Dir != "" {
		if err := os.RemoveAll(vm.Dir); err != nil {
			return err
		}
	}
	if vm.MemDir != "" {
		if err := os.RemoveAll(vm.MemDir); err != nil {
			return err
		}
	}
	if err := d.st.Delete(vm.Name); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return nil
}

// forget unregisters a VM whose record is gone.
func (d *Daemon) forget(rt *vmRuntime) {
	d.mu.Lock()
	if d.vms[rt.name] == rt {
		delete(d.vms, rt.name)
	}
	d.mu.Unlock()
	rt.dropAgent()
	rt.goneOnce.Do(func() { close(rt.gone) })
}

func (rt *vmRuntime) setCancel(c context.CancelFunc) {
	rt.amu.Lock()
	rt.cancel = c
	rt.amu.Unlock()
}

// cancelBoot cancels a create or boot in progress, if any.
func (rt *vmRuntime) cancelBoot() {
	rt.amu.Lock()
	if rt.cancel != nil {
		rt.cancel()
	}
	rt.amu.Unlock()
}

// stopRecorded stops the monitor recorded in vm if it still runs but is not
// watched, by adopting it first (so it is signalled by pidfd, never a
// recycled PID).
func (d *Daemon) stopRecorded(vm store.VM) error {
	if vm.Monitor == nil {
		return nil
	}
	id := supervisor.Identity{PID: vm.Monitor.PID, StartTime: vm.Monitor.StartTime, BootID: vm.Monitor.BootID}
	if err := d.sup.Adopt(d.spec(vm), id); err != nil {
		if errors.Is(err, supervisor.ErrGone) {
			return nil
		}
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.StopTimeout)
	defer cancel()
	_, err := d.sup.Stop(ctx, vm.ID)
	return err
}
