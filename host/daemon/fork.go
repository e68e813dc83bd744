package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/boxd-dev/boxd/host/api"
	"github.com/boxd-dev/boxd/host/quota"
	"github.com/boxd-dev/boxd/host/store"
	"github.com/boxd-dev/boxd/host/supervisor"
	"github.com/boxd-dev/boxd/vmm/control"
)

// forkJob is one copy being made.
type forkJob struct {
	vm     store.VM
	rt     *vmRuntime // locked from reserve until the copy runs or is undone
	err    error
	facts  GuestFacts
	timing api.Timing
}

// Fork copies a VM: Count copies (see api.ForkRequest.Names), each with its
// own disk (cloned while the source is paused, so disk and memory agree),
// lease, vsock CID and host name.
//
// A running (or in-memory suspended) source is paused, its disks cloned, a
// snapshot written to a folder on the memory tmpfs, and resumed if it ran;
// each copy's monitor then restores that snapshot, the guest is told its new
// identity (clock, entropy, MAC, address, host name) and checked (host name,
// address, clock, /dev/urandom distinct from its siblings' and the
// source's). A source suspended to disk (a golden) is not touched: copies
// restore its snapshot directly. A stopped source's disk is cloned and the
// copies boot fresh. A copy that fails is undone and reported in Errors; a
// failure before any copy starts undoes everything, resumes the source and
// is the returned error.
func (d *Daemon) Fork(ctx context.Context, name string, req api.ForkRequest) (api.ForkResult, error) {
	if err := d.enter(); err != nil {
		return api.ForkResult{}, err
	}
	defer d.ops.Done()
	return d.fork(ctx, name, req.Names(), nil)
}

// createFrom is Create with From: one copy of a golden, which must be
// suspended to disk or stopped (so that it never changes).
func (d *Daemon) createFrom(ctx context.Context, req api.CreateRequest) (api.VM, error) {
	check := func(src store.VM) error {
		if src.State != store.SuspendedDisk && src.State != store.Stopped {
			return api.Errorf(api.CodeState, "VM %q is %s: a golden VM is suspended to disk or stopped", src.Name, src.State).
				WithHint("`boxd suspend --to-disk %s` makes it one; `boxd fork %s` copies a running VM", src.Name, src.Name)
		}
		for _, s := range []struct {
			what      string
			got, want int
		}{{"cpus", req.CPUs, src.CPUs}, {"mem_mib", req.MemMiB, src.MemMiB}, {"disk_gib", req.DiskGiB, src.DiskGiB}} {
			if s.got != 0 && s.got != s.want {
				return api.Errorf(api.CodeInvalid, "%s %d: a copy of %q has the golden's size (%d)", s.what, s.got, src.Name, s.want).
					WithHint("leave the sizes out with --from")
			}
		}
		return nil
	}
	res, err := d.fork(ctx, req.From, []string{req.Name}, check)
	if err != nil {
		return api.VM{}, err
	}
	if len(res.Errors) > 0 {
		e := res.Errors[0].Error
		return api.VM{}, &e
	}
	return res.VMs[0], nil
}

func (d *Daemon) fork(ctx context.Context, name string, names []string, check func(store.VM) error) (api.ForkResult, error) {
	start := time.Now()
	srt, err := d.runtime(name)
	if err != nil {
		return api.ForkResult{}, err
	}
	// The source's lock is held until every copy runs or is undone: it is
	// not destroyed, suspended or resumed while its snapshot is in use.
	srt.mu.Lock()
	defer srt.mu.Unlock()
	src, err := d.st.Get(name)
	if err != nil {
		return api.ForkResult{}, d.storeErr(name, err)
	}
	var kind string
	switch src.State {
	case store.Running, store.Suspended:
		kind = store.OriginFork
	case store.SuspendedDisk:
		kind = store.OriginGolden
	case store.Stopped:
		kind = store.OriginClone
	case store.Crashed:
		return api.ForkResult{}, api.Errorf(api.CodeState, "VM %q crashed; a crashed VM is not forked", name).WithHint("`boxd reboot %s` first", name)
	default:
		return api.ForkResult{}, runningOrErr(src)
	}
	if check != nil {
		if err := check(src); err != nil {
			return api.ForkResult{}, err
		}
	}
	size := quota.Size{CPUs: src.CPUs, MemMiB: src.MemMiB, DiskGiB: src.DiskGiB}
	if _, err := d.limits.Resolve(size); err != nil {
		return api.ForkResult{}, quotaErr(err)
	}

	// Every copy is reserved (name, quota slot, CID), given its folder and
	// lease before the source is paused: a refusal touches nothing, and
	// the pause covers only what must see the source paused.
	jobs, err := d.reserveCopies(ctx, src, kind, names, size)
	if err != nil {
		return api.ForkResult{}, err
	}
	res := api.ForkResult{Source: src.Name, Kind: kind, VMs: []api.VM{}}
	var snap string
	switch kind {
	case store.OriginFork:
		snap, err = d.snapshotForFork(ctx, srt, src, jobs, &res.Timing)
		if err == nil {
			// Each copy's monitor links what it maps at start: the folder
			// goes once they all started (or failed).
			defer os.RemoveAll(snap)
		}
	case store.OriginGolden:
		snap = src.Snapshot
		err = d.cloneDisks(ctx, src, jobs, false, &res.Timing)
	case store.OriginClone:
		err = d.cloneDisks(ctx, src, jobs, false, &res.Timing)
	}
	if err != nil {
		d.discard(jobs)
		return api.ForkResult{}, err
	}

	// The source's own urandom output, sampled after it resumed, must
	// differ from every copy's.
	var parentRandom string
	var wg sync.WaitGroup
	if src.State == store.Running {
		wg.Go(func() {
			if c, _, err := d.agent(ctx, src.Name); err == nil {
				if f, err := d.cfg.Probe(ctx, c, src.Dir); err == nil {
					parentRandom = f.Random
				}
			}
		})
	}
	for _, j := range jobs {
		wg.Go(func() { d.startCopy(ctx, j, snap, kind, start) })
	}
	wg.Wait()
	checkDistinct(src.Name, parentRandom, jobs)

	var failed []*forkJob
	for _, j := range jobs {
		if j.err == nil {
			j.vm, j.err = d.update(j.vm.Name, func(v *store.VM) { v.State = store.Running })
		}
		if j.err != nil {
			failed = append(failed, j)
			res.Errors = append(res.Errors, api.NameError{Name: j.vm.Name, Error: *api.AsError(j.err)})
			continue
		}
		v := view(j.vm)
		t := j.timing
		v.Timing = &t
		res.VMs = append(res.VMs, v)
		j.rt.mu.Unlock()
	}
	d.discard(failed)
	res.Timing.TotalMs = ms(time.Since(start))
	return res, nil
}

// reserveCopies reserves each copy and gives it its folder and lease; on
// failure nothing of them is left.
func (d *Daemon) reserveCopies(ctx context.Context, src store.VM, kind string, names []string, size quota.Size) ([]*forkJob, error) {
	var jobs []*forkJob
	origin := &store.Origin{Kind: kind, Parent: src.Name, ParentID: src.ID, At: time.Now().UTC()}
	for _, n := range names {
		vm, rt, err := d.reserve(n, size)
		if err != nil {
			d.discard(jobs)
			return nil, err
		}
		j := &forkJob{vm: vm, rt: rt}
		jobs = append(jobs, j)
		if err := os.MkdirAll(vm.Dir, 0o700); err != nil {
			d.discard(jobs)
			return nil, err
		}
		if j.vm, err = d.update(vm.Name, func(v *store.VM) { v.Origin = origin }); err == nil {
			j.vm, err = d.attach(ctx, j.vm)
		}
		if err != nil {
			d.discard(jobs)
			return nil, err
		}
	}
	return jobs, nil
}

// discard undoes copies that will not be handed out and unlocks them.
func (d *Daemon) discard(jobs []*forkJob) {
	for _, j := range jobs {
		if err := d.undo(j.vm); err != nil {
			d.cfg.Logf("fork: undo %s: %v", j.vm.Name, err)
		}
		d.forget(j.rt)
		j.rt.mu.Unlock()
	}
}

// snapshotForFork pauses a running source, clones its disks for the copies,
// has its monitor write a snapshot into a new folder on the memory tmpfs,
// and resumes it if it ran; srt is locked. On failure the source runs as
// before and the folder is gone.
func (d *Daemon) snapshotForFork(ctx context.Context, srt *vmRuntime, src store.VM, jobs []*forkJob, t *api.ForkTiming) (string, error) {
	dir := filepath.Join(d.cfg.MemDir, forksDir, src.ID+"-"+randomHex(4))
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", api.Errorf(api.CodeInternal, "fork %q: snapshot folder: %v", src.Name, err)
	}
	cc, err := d.dialControl(ctx, src)
	if err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	defer cc.Close()
	running := src.State == store.Running
	var pausedAt time.Time
	if running {
		resp, err := cc.Pause(ctx)
		if err != nil {
			os.RemoveAll(dir)
			return "", monitorErr(src, "fork: pause", err)
		}
		pausedAt = time.Now()
		t.MonitorPauseUs = resp.MonitorUs
	}
	resume := func() error {
		if !running {
			return nil
		}
		// Not cancelled with the request: a source left paused would be
		// worse than a late answer.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		resp, err := cc.Resume(rctx)
		t.ParentPausedMs = ms(time.Since(pausedAt))
		t.MonitorResumeUs = resp.MonitorUs
		return err
	}
	err = d.cloneDisks(ctx, src, jobs, true, t)
	if err == nil {
		var resp control.Response
		resp, err = cc.Fork(ctx, dir)
		t.MonitorForkUs = resp.MonitorUs
		if err != nil {
			err = monitorErr(src, "fork", err)
		}
	}
	if rerr := resume(); rerr != nil {
		// The source stays paused: say so, rather than report it running.
		srt.dropAgent()
		msg := fmt.Sprintf("resume after fork failed: %v", rerr)
		d.update(src.Name, func(v *store.VM) { v.State, v.Error = store.Suspended, msg })
		err = errors.Join(err, api.Errorf(api.CodeInternal, "fork %q: the source could not be resumed: %v", src.Name, rerr).
			WithHint("it is suspended now: `boxd resume %s` tries again", src.Name))
	}
	if err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	if running {
		d.syncClock(ctx, src.Name)
	}
	return dir, nil
}

// cloneDisks gives each copy a clone of the source's disk.
func (d *Daemon) cloneDisks(ctx context.Context, src store.VM, jobs []*forkJob, live bool, t *api.ForkTiming) error {
	start := time.Now()
	defer func() { t.DiskCloneMs = ms(time.Since(start)) }()
	for _, j := range jobs {
		c, err := d.cfg.Storage.CloneDisk(ctx, src.ID, j.vm.ID, live)
		if err != nil {
			return api.Errorf(api.CodeInternal, "fork %q: clone its disk for %q: %v", src.Name, j.vm.Name, err)
		}
		t.DiskClone = c.Method
		t.DiskCopiedBytes += c.CopiedBytes
		if j.vm, err = d.update(j.vm.Name, func(v *store.VM) { v.DiskPath = c.Path }); err != nil {
			d.cfg.Storage.DeleteDisk(context.WithoutCancel(ctx), j.vm.ID)
			return err
		}
	}
	return nil
}

// startCopy starts one copy's monitor (restoring snap, or booting fresh
// for a clone), fixes its guest up and checks it; j.err says how it went.
func (d *Daemon) startCopy(ctx context.Context, j *forkJob, snap, kind string, start time.Time) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	j.rt.setCancel(cancel) // a destroy of the copy cancels only it
	defer j.rt.setCancel(nil)
	t0 := time.Now()
	restore := snap
	if kind == store.OriginClone {
		restore = ""
	}
	vm, c, err := d.startMonitor(ctx, j.rt, j.vm, restore)
	j.vm = vm
	if err != nil {
		j.err = err
		return
	}
	j.rt.setAgent(c)
	j.timing.RestoreMs = ms(time.Since(t0))
	t1 := time.Now()
	if kind != store.OriginClone {
		if err := d.fixup(ctx, c, vm, true); err != nil {
			j.err = d.copyFailed(vm, fmt.Sprintf("the guest refused its fix-ups: %v", err))
			return
		}
	}
	j.timing.FixupMs = ms(time.Since(t1))
	t2 := time.Now()
	f, err := d.cfg.Probe(ctx, c, vm.Dir)
	if err != nil {
		j.err = d.copyFailed(vm, fmt.Sprintf("could not check the guest: %v", err))
		return
	}
	j.facts = f
	if err := d.verify(vm, f); err != nil {
		j.err = api.Errorf(api.CodeUnavailable, "fork %q: %v", vm.Name, err).WithHint("the copy was destroyed; see the daemon's log")
		return
	}
	j.timing.VerifyMs = ms(time.Since(t2))
	j.timing.TotalMs = ms(time.Since(start))
}

// checkDistinct fails every copy whose urandom sample equals the source's
// or a sibling's: their entropy was not reseeded.
func checkDistinct(source, parentRandom string, jobs []*forkJob) {
	owner := map[string][]*forkJob{}
	for _, j := range jobs {
		if j.err == nil {
			owner[j.facts.Random] = append(owner[j.facts.Random], j)
		}
	}
	for r, js := range owner {
		if len(js) < 2 && (r != parentRandom || r == "") {
			continue
		}
		for _, j := range js {
			other := source
			if r != parentRandom {
				other = "a sibling"
			}
			j.err = api.Errorf(api.CodeUnavailable, "fork %q: %v: /dev/urandom gives the same bytes as %s", j.vm.Name, errCheck, other).
				WithHint("the copy was destroyed: its entropy was not reseeded")
		}
	}
}

// copyFailed explains a copy whose guest stopped answering during its
// fix-ups or checks: it stops the copy's monitor (if it has not ended by
// itself) and quotes how it ended and how its log and console end. The
// copy is destroyed afterwards, so the error is where the reason survives
// (a guest that crashed reads "exec: EOF" to the agent, nothing more).
func (d *Daemon) copyFailed(vm store.VM, what string) error {
	sctx, cancel := context.WithTimeout(context.Background(), d.cfg.StopTimeout)
	defer cancel()
	d.sup.Stop(sctx, vm.ID) // ErrGone if it ended by itself
	why := what
	if r, err := supervisor.ReadResult(resultPath(vm)); err == nil {
		why += fmt.Sprintf("; its monitor ended: %s (%s), exit status %d", r.Result, r.Detail, r.ExitStatus)
	}
	if t := tail(monitorLog(vm), 8, 8192); t != "" {
		why += "; monitor log ends: " + t
	}
	if t := tail(consolePath(vm), 8, 2048); t != "" {
		why += "; console ends: " + t
	}
	return api.Errorf(api.CodeUnavailable, "fork %q: %s", vm.Name, why)
}
