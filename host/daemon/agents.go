package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/boxd-dev/boxd/agent"
	"github.com/boxd-dev/boxd/host/api"
	"github.com/boxd-dev/boxd/host/store"
)

type agentConn = *agent.Client

// errMonitorEnded says a monitor ended while the daemon waited for its agent.
var errMonitorEnded = errors.New("the monitor ended before the guest agent answered")

// waitReady dials the guest agent through the monitor's vsock socket until
// it answers a Ping, retrying with backoff, until ctx ends or done (the
// monitor's end) closes. The agent answers only once the guest booted, so
// this is the readiness check; nothing here sleeps for a fixed time.
func waitReady(ctx context.Context, sock string, done <-chan struct{}) (*agent.Client, error) {
	if done == nil {
		return nil, errMonitorEnded
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-done:
			cancel()
		case <-ctx.Done():
		}
	}()
	var last error
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		c, err := dialOnce(ctx, sock)
		if err == nil {
			return c, nil
		}
		last = err
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			select {
			case <-done:
				return nil, errMonitorEnded
			default:
			}
			return nil, fmt.Errorf("%w (last attempt: %v)", context.Cause(ctx), last)
		case <-t.C:
		}
	}
}

// dialOnce connects, shakes hands and pings, each attempt bounded so a guest
// that accepts but never answers cannot hold the boot forever.
func dialOnce(ctx context.Context, sock string) (*agent.Client, error) {
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := agent.Dial(actx, sock)
	if err != nil {
		return nil, err
	}
	if err := c.Ping(actx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (rt *vmRuntime) setAgent(c *agent.Client) {
	rt.amu.Lock()
	old := rt.client
	rt.client = c
	rt.amu.Unlock()
	if old != nil && old != c {
		old.Close()
	}
}

// offerAgent keeps c unless a live connection exists already (one dialled
// by a request meanwhile, which may be in use).
func (rt *vmRuntime) offerAgent(c *agent.Client) {
	rt.amu.Lock()
	if rt.client != nil && rt.client.Err() == nil {
		rt.amu.Unlock()
		c.Close()
		return
	}
	old := rt.client
	rt.client = c
	rt.amu.Unlock()
	if old != nil {
		old.Close()
	}
}

func (rt *vmRuntime) dropAgent() { rt.setAgent(nil) }

// agent returns a live connection to the VM's guest agent, dialling a new
// one if the last one dropped. The VM must be running.
func (d *Daemon) agent(ctx context.Context, name string) (*agent.Client, *vmRuntime, error) {
	rt, err := d.runtime(name)
	if err != nil {
		return nil, nil, err
	}
	vm, err := d.st.Get(name)
	if err != nil {
		return nil, nil, d.storeErr(name, err)
	}
	if err := runningOrErr(vm); err != nil {
		return nil, nil, err
	}
	rt.amu.Lock()
	defer rt.amu.Unlock()
	if rt.client != nil && rt.client.Err() == nil {
		return rt.client, rt, nil
	}
	if rt.client != nil {
		rt.client.Close()
		rt.client = nil
	}
	c, err := dialOnce(ctx, vsockPath(vm))
	if err != nil {
		return nil, nil, api.Errorf(api.CodeUnavailable, "VM %q: guest agent does not answer: %v", name, err).
			WithHint("see `boxd logs %s`; `boxd reboot %s` restarts it", name, name)
	}
	rt.client = c
	return c, rt, nil
}

// runningOrErr explains why a VM that is not running cannot serve a request.
func runningOrErr(vm store.VM) error {
	switch vm.State {
	case store.Running:
		return nil
	case store.Creating, store.Booting:
		return api.Errorf(api.CodeState, "VM %q is %s", vm.Name, vm.State).WithHint("wait for it to be running (`boxd ls`), or see `boxd logs %s`", vm.Name)
	case store.Suspended, store.SuspendedDisk:
		msg := fmt.Sprintf("VM %q is suspended: boxd resume %s", vm.Name, vm.Name)
		if vm.State == store.SuspendedDisk {
			msg = fmt.Sprintf("VM %q is suspended to disk: boxd resume %s", vm.Name, vm.Name)
		}
		if vm.Error != "" {
			msg += " (last resume failed: " + vm.Error + ")"
		}
		return (&api.Error{Code: api.CodeState, Message: msg}).WithHint("resume it with `boxd resume %s`, or fork it with `boxd fork %s`", vm.Name, vm.Name)
	case store.Stopped, store.Crashed:
		msg := fmt.Sprintf("VM %q is %s", vm.Name, vm.State)
		if vm.Error != "" {
			msg += ": " + vm.Error
		}
		return (&api.Error{Code: api.CodeState, Message: msg}).WithHint("start it again with `boxd reboot %s`; `boxd logs %s` shows its console", vm.Name, vm.Name)
	}
	return api.Errorf(api.CodeState, "VM %q is %s", vm.Name, vm.State)
}
