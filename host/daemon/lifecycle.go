package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/boxd-dev/boxd/host/api"
	"github.com/boxd-dev/boxd/host/store"
	"github.com/boxd-dev/boxd/host/supervisor"
)

// Monitor exit statuses (see cli/vmm.go).
const (
	exitPoweroff  = 0
	exitReboot    = 3
	exitSuspended = 5
)

// onExit is the supervisor's report of a monitor's end.
func (d *Daemon) onExit(vmID string, e supervisor.Exit) {
	if e.Requested {
		return // whoever stopped it settles the VM
	}
	rt := d.runtimeByID(vmID)
	if rt == nil {
		return
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	vm, err := d.st.Get(rt.name)
	if err != nil || vm.ID != vmID {
		return
	}
	if m := vm.Monitor; m == nil || m.PID != e.Monitor.PID || m.StartTime != e.Monitor.StartTime {
		return // an earlier monitor, already accounted for (a failed boot)
	}
	d.settle(rt, vm, e)
}

// settle records how vm's monitor ended and acts on it: a guest reboot
// restarts the VM with the same disk and lease; a power-off stops it; any
// other end marks it crashed. vm's runtime is locked.
func (d *Daemon) settle(rt *vmRuntime, vm store.VM, e supervisor.Exit) {
	rt.dropAgent()
	last := &store.Exit{Status: e.Status, Signal: e.Signal, Result: e.Result, Detail: e.Detail, At: e.At}
	if last.At.IsZero() {
		last.At = time.Now().UTC()
	}
	if e.Status == exitReboot && vm.State != store.Creating {
		vm, err := d.update(vm.Name, func(v *store.VM) {
			v.LastExit, v.Monitor, v.State = last, nil, store.Booting
			v.Restarts++
		})
		if err != nil {
			d.cfg.Logf("%s: record reboot: %v", vm.Name, err)
			return
		}
		// Boot in the background: the state says Booting meanwhile, and
		// whoever settles (the supervisor, a starting daemon) is not held.
		d.background(func() { d.restart(rt, vm.ID) })
		return
	}
	d.dropMemDir(vm)
	if e.Status == exitSuspended && vm.Suspending != "" {
		// A suspend to disk whose requester did not see it through (the
		// daemon restarted meanwhile): the snapshot is complete, since the
		// monitor exits 5 only after writing it. The lease stays with the
		// VM for its resume.
		if _, err := d.update(vm.Name, func(v *store.VM) {
			v.LastExit, v.Monitor, v.State, v.Error = last, nil, store.SuspendedDisk, ""
			v.Snapshot, v.Suspending = v.Suspending, ""
		}); err != nil {
			d.cfg.Logf("%s: record suspend: %v", vm.Name, err)
		}
		return
	}
	state, why := store.Crashed, describeExit(e)
	if e.Status == exitPoweroff {
		state, why = store.Stopped, ""
	}
	// The lease goes before the state is written, so that whoever sees
	// the new state sees the resources freed too.
	freed := d.freeLease(vm)
	if _, err := d.update(vm.Name, func(v *store.VM) {
		v.LastExit, v.Monitor, v.State, v.Error = last, nil, state, why
		v.Suspending = ""
		if freed {
			v.Lease = nil
		}
	}); err != nil {
		d.cfg.Logf("%s: record exit: %v", vm.Name, err)
	}
}

// freeLease detaches vm's lease, if it holds one, and reports whether it is
// free now (a failure is logged; the lease stays recorded for destroy).
func (d *Daemon) freeLease(vm store.VM) bool {
	if vm.Lease == nil || d.cfg.Network == nil {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.cfg.Network.Detach(ctx, *vm.Lease); err != nil {
		d.cfg.Logf("%s: network: detach %s: %v", vm.Name, vm.Lease.TAP, err)
		return false
	}
	return true
}

func describeExit(e supervisor.Exit) string {
	switch {
	case e.Result != "" && e.Detail != "":
		return fmt.Sprintf("monitor exit status %d: %s: %s", e.Status, e.Result, e.Detail)
	case e.Signal != "":
		return "monitor killed by " + e.Signal
	case e.Detail != "":
		return fmt.Sprintf("monitor exit status %d: %s", e.Status, e.Detail)
	}
	return fmt.Sprintf("monitor exit status %d", e.Status)
}

// restart boots a VM again after a guest reboot, unless something else
// (boxd reboot, destroy) took care of it first. A boot that fails marks the
// VM crashed.
func (d *Daemon) restart(rt *vmRuntime, id string) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	vm, err := d.st.Get(rt.name)
	if err != nil || vm.ID != id || vm.State != store.Booting || vm.Monitor != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rt.setCancel(cancel)
	defer rt.setCancel(nil)
	if _, err := d.boot(ctx, rt, vm, ""); err != nil {
		if d.isClosed() {
			return // left Booting: the next daemon restarts it
		}
		d.cfg.Logf("%s: restart after reboot: %v", vm.Name, err)
		d.crashed(vm.Name, err)
	}
}

// crashed marks a VM whose monitor is not running as crashed and frees its
// lease.
func (d *Daemon) crashed(name string, cause error) {
	vm, err := d.st.Get(name)
	if err != nil {
		return
	}
	freed := d.freeLease(vm)
	d.update(name, func(v *store.VM) {
		v.State, v.Monitor = store.Crashed, nil
		v.Error = api.AsError(cause).Message
		if freed {
			v.Lease = nil
		}
	})
}

// reattach settles one VM found in the store at start: it adopts a monitor
// that still runs, settles one that ended while no daemon watched, and
// finishes a create or destroy that the previous daemon left half done.
func (d *Daemon) reattach(ctx context.Context, vm store.VM) {
	rt, _ := d.runtime(vm.Name)
	switch vm.State {
	case store.Creating, store.Destroying:
		rt.mu.Lock()
		defer rt.mu.Unlock()
		if err := d.undo(vm); err != nil {
			d.cfg.Logf("%s: finish the %s the last daemon left: %v", vm.Name, vm.State, err)
			d.update(vm.Name, func(v *store.VM) { v.State, v.Error = store.Destroying, err.Error() })
			return
		}
		d.forget(rt)
		return
	case store.Stopped, store.Crashed, store.SuspendedDisk:
		return
	}
	if vm.Monitor == nil {
		if vm.State == store.Booting {
			// A restart the last daemon did not finish.
			d.background(func() { d.restart(rt, vm.ID) })
			return
		}
		rt.mu.Lock()
		defer rt.mu.Unlock()
		d.crashed(vm.Name, errors.New("no monitor recorded for a running VM"))
		return
	}
	spec := d.spec(vm)
	id := supervisor.Identity{PID: vm.Monitor.PID, StartTime: vm.Monitor.StartTime, BootID: vm.Monitor.BootID}
	if err := d.sup.Adopt(spec, id); err != nil {
		// It ended while no daemon watched: its result file says how.
		e := supervisor.Exit{Status: -1, Monitor: id, At: time.Now().UTC(), Detail: "monitor ended while the daemon was down, without a result file"}
		if r, rerr := supervisor.ReadResult(spec.ResultPath); rerr == nil {
			e.Status, e.Result, e.Detail = r.ExitStatus, r.Result, r.Detail
		}
		if !errors.Is(err, supervisor.ErrGone) {
			d.cfg.Logf("%s: adopt monitor %d: %v", vm.Name, id.PID, err)
		}
		rt.mu.Lock()
		defer rt.mu.Unlock()
		d.settle(rt, vm, e)
		return
	}
	if vm.State == store.Suspended {
		return // paused: its agent answers after a resume
	}
	// Adopted: reconnect to its agent in the background (a guest that was
	// booting may take a while) and mark it running when it answers.
	d.background(func() {
		rt.mu.Lock()
		defer rt.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), d.cfg.BootTimeout)
		defer cancel()
		rt.setCancel(cancel)
		defer rt.setCancel(nil)
		c, err := waitReady(ctx, spec.VsockPath, d.sup.Done(vm.ID))
		if err != nil {
			if !errors.Is(err, errMonitorEnded) && !errors.Is(err, context.Canceled) {
				d.cfg.Logf("%s: reconnect to the guest agent: %v", vm.Name, err)
			}
			return // a monitor that ended is settled by onExit
		}
		rt.offerAgent(c)
		d.update(vm.Name, func(v *store.VM) {
			if v.State == store.Booting {
				v.State = store.Running
			}
		})
	})
}

// Reboot restarts a VM's monitor with the same disk: a running VM is
// stopped first (after the guest flushed its file systems), a stopped or
// crashed one is simply started. It returns once the agent answers.
func (d *Daemon) Reboot(ctx context.Context, name string) (api.VM, error) {
	rt, vm, done, err := d.begin(name)
	if err != nil {
		return api.VM{}, err
	}
	defer done()
	switch vm.State {
	case store.Running, store.Booting, store.Suspended:
		d.syncGuest(ctx, rt)
		sctx, cancel := context.WithTimeout(ctx, d.cfg.StopTimeout)
		e, err := d.sup.Stop(sctx, vm.ID)
		cancel()
		if err != nil && !errors.Is(err, supervisor.ErrGone) {
			return api.VM{}, err
		}
		rt.dropAgent()
		if err == nil {
			last := &store.Exit{Status: e.Status, Signal: e.Signal, Result: e.Result, Detail: e.Detail, At: e.At}
			if vm, err = d.update(name, func(v *store.VM) { v.LastExit = last }); err != nil {
				return api.VM{}, err
			}
		}
	case store.Stopped, store.Crashed, store.SuspendedDisk:
	default:
		return api.VM{}, runningOrErr(vm)
	}
	if vm.Snapshot != "" {
		// Booting from the disk forgets the saved memory.
		if err := os.RemoveAll(vm.Snapshot); err != nil {
			d.cfg.Logf("%s: remove snapshot: %v", name, err)
		}
	}
	vm, err = d.update(name, func(v *store.VM) {
		v.State, v.Monitor, v.Error, v.Snapshot = store.Booting, nil, "", ""
		v.Restarts++
	})
	if err != nil {
		return api.VM{}, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rt.setCancel(cancel)
	defer rt.setCancel(nil)
	if vm, err = d.attach(ctx, vm); err == nil {
		vm, err = d.boot(ctx, rt, vm, "")
	}
	if err != nil {
		if !d.isClosed() {
			d.crashed(name, err)
		}
		return api.VM{}, err
	}
	return view(vm), nil
}

// syncGuest asks the guest to write its dirty pages to disk before its
// monitor is stopped, best effort and bounded.
func (d *Daemon) syncGuest(ctx context.Context, rt *vmRuntime) {
	rt.amu.Lock()
	c := rt.client
	rt.amu.Unlock()
	if c == nil || c.Err() != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	p, err := c.Exec(ctx, execSync)
	if err != nil {
		return
	}
	p.Wait()
}

// Destroy stops a VM's monitor and deletes its lease, disk, folder and
// record. A create or boot in progress is cancelled first.
func (d *Daemon) Destroy(ctx context.Context, name string) error {
	if err := d.enter(); err != nil {
		return err
	}
	defer d.ops.Done()
	rt, err := d.runtime(name)
	if err != nil {
		return err
	}
	rt.cancelBoot()
	rt.mu.Lock()
	defer rt.mu.Unlock()
	vm, err := d.st.Get(name)
	if errors.Is(err, store.ErrNotFound) {
		return nil // a create that the cancel above undid
	}
	if err != nil {
		return err
	}
	if vm.ID != rt.id {
		return api.NotFound(name)
	}
	if vm, err = d.update(name, func(v *store.VM) { v.State = store.Destroying }); err != nil {
		return err
	}
	if err := d.undo(vm); err != nil {
		d.update(name, func(v *store.VM) { v.Error = err.Error() })
		return api.Errorf(api.CodeInternal, "destroy %q: %v", name, err).WithHint("retry `boxd destroy %s`", name)
	}
	d.forget(rt)
	return nil
}

func (d *Daemon) storeErr(name string, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return api.NotFound(name)
	}
	return err
}
