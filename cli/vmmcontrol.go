package cli

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/boxd-dev/boxd/vmm/control"
	"github.com/boxd-dev/boxd/vmm/machine"
)

// vmmExitSuspended is the status of a monitor that saved its VM to disk on
// the daemon's request and ended (see control.OpSuspend).
const vmmExitSuspended = 5

// vmmControl carries out the daemon's requests on the monitor's machine.
type vmmControl struct {
	mu sync.Mutex
	// m is the machine; nil while a --standby monitor waits for its
	// restore request, standby is the machine prepared for it then.
	m       *machine.Machine
	standby *machine.Standby
	// restored is closed when a standby's restore started its machine;
	// restoreTime is what the restore took.
	restored    chan struct{}
	restoreTime time.Duration
	// suspended is set once a suspend wrote the VM to disk: the monitor
	// then reports "suspended" and exits with vmmExitSuspended.
	suspended atomic.Bool
}

func newVMMControl(m *machine.Machine, standby *machine.Standby) *vmmControl {
	return &vmmControl{m: m, standby: standby, restored: make(chan struct{})}
}

// machine returns the machine, nil if a standby was not restored yet.
func (c *vmmControl) machine() *machine.Machine {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m
}

// abandon discards an unrestored standby (the monitor was told to stop)
// and returns nil; if a restore won the race it returns the machine.
func (c *vmmControl) abandon() *machine.Machine {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil && c.standby != nil {
		c.standby.Close()
		c.standby = nil
	}
	return c.m
}

// listenControl creates the monitor's control socket, root-only. A stale
// socket file from an earlier monitor of the same VM is replaced.
func listenControl(path string) (net.Listener, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return ln, nil
}

func (c *vmmControl) Do(req control.Request, resp *control.Response) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		err := c.restore(req)
		resp.State = "standby"
		if c.m != nil {
			resp.State = c.m.State().String()
		}
		return err
	}
	err := c.do(req, resp)
	resp.State = c.m.State().String()
	return err
}

// restore serves a standby monitor, whose only work is to restore.
func (c *vmmControl) restore(req control.Request) error {
	switch req.Op {
	case control.OpStatus:
		return nil
	case control.OpRestore:
	default:
		return fmt.Errorf("%s: this monitor is a standby waiting for a restore", req.Op)
	}
	if c.standby == nil {
		return errors.New("restore: the standby machine is gone (the monitor is stopping)")
	}
	start := time.Now()
	m, err := c.standby.RestoreDir(req.Dir)
	if err != nil {
		return err
	}
	c.standby = nil
	if err := m.Start(); err != nil {
		m.Close()
		return err
	}
	c.m, c.restoreTime = m, time.Since(start)
	close(c.restored)
	return nil
}

func (c *vmmControl) do(req control.Request, resp *control.Response) error {
	switch req.Op {
	case control.OpRestore:
		return errors.New("restore: this monitor already runs a VM (only a --standby monitor restores)")
	case control.OpStatus:
		return nil
	case control.OpPause:
		return c.m.Pause()
	case control.OpResume:
		return c.m.Resume()
	case control.OpFork:
		if err := checkSnapshotDir(req.Dir); err != nil {
			return err
		}
		st, err := machine.SaveFork(c.m, req.Dir)
		if err != nil {
			return err
		}
		resp.Snapshot = c.snapshotInfo(req.Dir, st)
		return nil
	case control.OpSuspend:
		if err := checkSnapshotDir(req.Dir); err != nil {
			return err
		}
		resumeAfter := false
		if c.m.State() == machine.Running {
			if err := c.m.Pause(); err != nil {
				return err
			}
			resumeAfter = true
		}
		st, err := machine.SaveFull(c.m, req.Dir)
		if err != nil {
			// Nothing is lost: the VM goes on as before the request.
			if resumeAfter {
				c.m.Resume()
			}
			return err
		}
		resp.Snapshot = c.snapshotInfo(req.Dir, st)
		c.suspended.Store(true)
		c.m.Stop()
		return nil
	}
	return fmt.Errorf("unknown op %q", req.Op)
}

// checkSnapshotDir refuses a directory that is not empty: a snapshot never
// mixes with another's files. A missing one is created by the save.
func checkSnapshotDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("snapshot dir: %w", err)
	}
	if len(ents) > 0 {
		return fmt.Errorf("snapshot dir %s is not empty", dir)
	}
	return nil
}

func (c *vmmControl) snapshotInfo(dir string, st machine.SaveStats) *control.SnapshotInfo {
	return &control.SnapshotInfo{
		Dir:          dir,
		MemBytes:     c.m.RAM().Size(),
		WrittenBytes: uint64(st.StateBytes) + st.MemoryBytes,
		DirtyPages:   st.Freeze.DirtyBytes / pageSize,
	}
}

const pageSize = 4096
