package daemon

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"time"

	"github.com/boxd-dev/boxd/host/api"
	"github.com/boxd-dev/boxd/host/store"
	"github.com/boxd-dev/boxd/vmm/control"
)

// dialControl connects to vm's monitor's control socket.
func (d *Daemon) dialControl(ctx context.Context, vm store.VM) (*control.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := control.Dial(ctx, controlPath(vm))
	if err != nil {
		return nil, api.Errorf(api.CodeUnavailable, "VM %q: its monitor does not answer on its control socket: %v", vm.Name, err).
			WithHint("a monitor started by an older boxd has no control socket: `boxd reboot %s` restarts it with one", vm.Name)
	}
	return c, nil
}

// monitorErr reports a control request the monitor refused or failed.
func monitorErr(vm store.VM, what string, err error) error {
	var ce *control.Error
	if errors.As(err, &ce) {
		return api.Errorf(api.CodeInternal, "%s %q: the monitor refused: %s", what, vm.Name, ce.Message)
	}
	return api.Errorf(api.CodeUnavailable, "%s %q: %v", what, vm.Name, err).WithHint("see `boxd logs %s` and `boxd inspect %s`", vm.Name, vm.Name)
}

// Suspend pauses a running VM's vCPUs (in memory: its monitor stays, and a
// resume takes well under a millisecond of its time) or, with ToDisk, saves
// the VM to a new snapshot directory under its folder and ends its
// monitor, keeping its disk and lease. Suspending a suspended VM again is
// not an error (in memory → to disk saves it).
func (d *Daemon) Suspend(ctx context.Context, name string, req api.SuspendRequest) (api.VM, error) {
	start := time.Now()
	rt, vm, done, err := d.begin(name)
	if err != nil {
		return api.VM{}, err
	}
	defer done()
	switch {
	case vm.State == store.SuspendedDisk, vm.State == store.Suspended && !req.ToDisk:
		return view(vm), nil
	case vm.State == store.Running, vm.State == store.Suspended:
	default:
		return api.VM{}, runningOrErr(vm)
	}
	cc, err := d.dialControl(ctx, vm)
	if err != nil {
		return api.VM{}, err
	}
	defer cc.Close()
	if !req.ToDisk {
		resp, err := cc.Pause(ctx)
		if err != nil {
			return api.VM{}, monitorErr(vm, "suspend", err)
		}
		// A paused guest answers nothing: requests must not wait on it.
		rt.dropAgent()
		if vm, err = d.update(name, func(v *store.VM) { v.State, v.Error = store.Suspended, "" }); err != nil {
			return api.VM{}, err
		}
		out := view(vm)
		out.Timing = &api.Timing{TotalMs: ms(time.Since(start)), MonitorUs: resp.MonitorUs}
		return out, nil
	}
	return d.suspendToDisk(ctx, rt, vm, cc, start)
}

// suspendToDisk asks vm's monitor to save the VM to a new directory and
// waits for it to end. The directory is new each time: forks of an earlier
// snapshot may still map its files, which must never change.
func (d *Daemon) suspendToDisk(ctx context.Context, rt *vmRuntime, vm store.VM, cc *control.Client, start time.Time) (api.VM, error) {
	wasRunning := vm.State == store.Running
	dir := filepath.Join(vm.Dir, "snapshots", time.Now().UTC().Format("20060102T150405")+"-"+randomHex(3))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return api.VM{}, err
	}
	vm, err := d.update(vm.Name, func(v *store.VM) { v.Suspending = dir })
	if err != nil {
		os.RemoveAll(dir)
		return api.VM{}, err
	}
	done := d.sup.Done(vm.ID) // before asking: the monitor ends right after answering
	resp, err := cc.Suspend(ctx, dir)
	if err != nil {
		// The monitor did not save the VM and still runs (or died, which
		// the supervisor reports as for any monitor). Give it back as it was.
		os.RemoveAll(dir)
		if wasRunning {
			if _, rerr := cc.Resume(context.WithoutCancel(ctx)); rerr != nil {
				d.cfg.Logf("%s: resume after a failed suspend: %v", vm.Name, rerr)
			}
		}
		d.update(vm.Name, func(v *store.VM) { v.Suspending = "" })
		return api.VM{}, monitorErr(vm, "suspend", err)
	}
	rt.dropAgent()
	last := &store.Exit{Status: exitSuspended, Result: "suspended", At: time.Now().UTC()}
	if done != nil {
		t := time.NewTimer(d.cfg.StopTimeout)
		select {
		case <-done:
			t.Stop()
		case <-t.C:
			// The snapshot is complete (it answered): a monitor that does
			// not end after it is stopped.
			d.cfg.Logf("%s: monitor still runs %v after suspending: stopping it", vm.Name, d.cfg.StopTimeout)
			sctx, cancel := context.WithTimeout(context.Background(), d.cfg.StopTimeout)
			d.sup.Stop(sctx, vm.ID)
			cancel()
		}
	}
	d.dropMemDir(vm)
	vm, err = d.update(vm.Name, func(v *store.VM) {
		v.State, v.Monitor, v.LastExit, v.Error = store.SuspendedDisk, nil, last, ""
		v.Snapshot, v.Suspending = dir, ""
	})
	if err != nil {
		return api.VM{}, err
	}
	out := view(vm)
	out.Timing = &api.Timing{TotalMs: ms(time.Since(start)), MonitorUs: resp.MonitorUs}
	return out, nil
}

// Resume runs a suspended VM again: in memory by resuming its vCPUs; from
// disk by a monitor restoring its snapshot with the VM's own disk and
// lease, then the guest's clock set and its entropy reseeded. A resume that
// fails leaves the VM suspended (the error is recorded), never lost.
func (d *Daemon) Resume(ctx context.Context, name string) (api.VM, error) {
	start := time.Now()
	rt, vm, done, err := d.begin(name)
	if err != nil {
		return api.VM{}, err
	}
	defer done()
	switch vm.State {
	case store.Running:
		return view(vm), nil
	case store.Suspended:
		cc, err := d.dialControl(ctx, vm)
		if err != nil {
			return api.VM{}, err
		}
		defer cc.Close()
		resp, err := cc.Resume(ctx)
		if err != nil {
			return api.VM{}, monitorErr(vm, "resume", err)
		}
		if vm, err = d.update(name, func(v *store.VM) { v.State, v.Error = store.Running, "" }); err != nil {
			return api.VM{}, err
		}
		d.syncClock(ctx, name)
		out := view(vm)
		out.Timing = &api.Timing{TotalMs: ms(time.Since(start)), MonitorUs: resp.MonitorUs}
		return out, nil
	case store.SuspendedDisk:
		return d.resumeFromDisk(ctx, rt, vm, start)
	}
	return api.VM{}, api.Errorf(api.CodeState, "VM %q is %s, not suspended", name, vm.State).WithHint("`boxd suspend %s` first", name)
}

func (d *Daemon) resumeFromDisk(ctx context.Context, rt *vmRuntime, vm store.VM, start time.Time) (api.VM, error) {
	snap := vm.Snapshot
	if snap == "" {
		return api.VM{}, api.Errorf(api.CodeInternal, "VM %q is suspended to disk without a snapshot recorded", vm.Name).WithHint("`boxd reboot %s` boots it from its disk", vm.Name)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rt.setCancel(cancel)
	defer rt.setCancel(nil)
	vm, err := d.attach(ctx, vm)
	if err != nil {
		return api.VM{}, err
	}
	vm, c, err := d.startMonitor(ctx, rt, vm, snap)
	restored := time.Since(start)
	if err == nil {
		t := time.Now()
		if err = d.fixup(ctx, c, vm, false); err != nil {
			c.Close()
			err = api.Errorf(api.CodeUnavailable, "VM %q resumed but its guest refused the fix-ups: %v", vm.Name, err)
			sctx, scancel := context.WithTimeout(context.Background(), d.cfg.StopTimeout)
			d.sup.Stop(sctx, vm.ID)
			scancel()
		} else {
			rt.setAgent(c)
			vm, err = d.update(vm.Name, func(v *store.VM) { v.State, v.Snapshot, v.Error = store.Running, "", "" })
			if err == nil {
				// Its monitor mapped the memory and linked it into its
				// layer folder: the directory goes (the file stays while
				// the VM runs, for it and its forks), and the next suspend
				// writes a new one.
				if rerr := os.RemoveAll(snap); rerr != nil {
					d.cfg.Logf("%s: remove snapshot %s: %v", vm.Name, snap, rerr)
				}
				out := view(vm)
				out.Timing = &api.Timing{TotalMs: ms(time.Since(start)), RestoreMs: ms(restored), FixupMs: ms(time.Since(t))}
				return out, nil
			}
		}
	}
	// Still suspended, with its snapshot: record why the resume failed.
	d.dropMemDir(vm)
	msg := api.AsError(err).Message
	d.update(vm.Name, func(v *store.VM) { v.State, v.Monitor, v.Error = store.SuspendedDisk, nil, msg })
	return api.VM{}, (&api.Error{Code: api.CodeUnavailable, Message: msg}).
		WithHint("the VM stays suspended with its snapshot %s; `boxd logs %s` shows the console; `boxd reboot %s` boots it fresh from its disk", snap, vm.Name, vm.Name)
}

// syncClock sets a resumed guest's wall clock to the host's. The guest's
// kvmclock counted on while it was paused, but a guest kernel does not
// always account a long stop in full (measured in the nested harness: a
// parent paused for a fork came back seconds behind), and a guest without
// NTP never catches up. Best effort: a failure is logged, the VM runs on.
func (d *Daemon) syncClock(ctx context.Context, name string) {
	c, _, err := d.agent(ctx, name)
	if err == nil {
		err = c.SetClock(ctx, time.Now())
	}
	if err != nil {
		d.cfg.Logf("%s: set the clock after resume: %v", name, err)
	}
}
