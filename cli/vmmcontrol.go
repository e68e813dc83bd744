package cli

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"

	"github.com/boxd-dev/boxd/vmm/control"
	"github.com/boxd-dev/boxd/vmm/machine"
)

// vmmExitSuspended is the status of a monitor that saved its VM to disk on
// the daemon's request and ended (see control.OpSuspend).
const vmmExitSuspended = 5

// vmmControl carries out the daemon's requests on the monitor's machine.
type vmmControl struct {
	m *machine.Machine
	// suspended is set once a suspend wrote the VM to disk: the monitor
	// then reports "suspended" and exits with vmmExitSuspended.
	suspended atomic.Bool
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
	err := c.do(req, resp)
	resp.State = c.m.State().String()
	return err
}

func (c *vmmControl) do(req control.Request, resp *control.Response) error {
	switch req.Op {
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
