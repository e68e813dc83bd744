package control

import (
	"errors"
	"fmt"
	"path/filepath"
)

// Operations.
const (
	// OpStatus reports the VM's state ("running", "paused").
	OpStatus = "status"
	// OpPause stops the vCPUs and quiesces the devices; guest memory and
	// device state stay put until OpResume.
	OpPause = "pause"
	// OpResume lets a paused VM run again.
	OpResume = "resume"
	// OpFork writes a snapshot directory (Dir) from which any number of
	// children can be restored with "boxd vmm --restore Dir". The VM must be
	// paused and stays paused; its memory from now on is private to it.
	OpFork = "fork"
	// OpSuspend pauses the VM (if it runs), writes a self-contained snapshot
	// (state and the whole memory) to Dir and ends the monitor, which exits
	// with status 5 ("suspended") after answering.
	OpSuspend = "suspend"
	// OpRestore is for a monitor started with --standby: it restores the
	// snapshot directory Dir into the machine it prepared and starts it.
	OpRestore = "restore"
)

// MaxLine bounds one request or response line.
const MaxLine = 64 << 10

// Request is one line from the daemon.
type Request struct {
	Op string `json:"op"`
	// Dir is the snapshot directory of OpFork and OpSuspend (absolute; a
	// new or empty directory) and of OpRestore (a snapshot to read).
	Dir string `json:"dir,omitempty"`
}

// Response is the monitor's answer to one Request.
type Response struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// State is the VM's state after the request.
	State string `json:"state,omitempty"`
	// MonitorUs is how long the monitor spent on the request, in
	// microseconds, from reading it to answering (excluding the socket).
	MonitorUs int64 `json:"monitor_us"`
	// Snapshot describes what OpFork or OpSuspend wrote.
	Snapshot *SnapshotInfo `json:"snapshot,omitempty"`
}

// SnapshotInfo describes a written snapshot directory.
type SnapshotInfo struct {
	Dir string `json:"dir"`
	// MemBytes is the guest's memory size; WrittenBytes what was written to
	// Dir (the state file and memory pages copied, not hard links).
	MemBytes     uint64 `json:"mem_bytes"`
	WrittenBytes uint64 `json:"written_bytes"`
	// DirtyPages is how many private pages a fork had to copy (0 for the
	// first fork of a VM, whose memory file is shared as is).
	DirtyPages uint64 `json:"dirty_pages"`
}

// Validate checks a request before the monitor acts on it.
func (r Request) Validate() error {
	switch r.Op {
	case OpStatus, OpPause, OpResume:
		if r.Dir != "" {
			return fmt.Errorf("%s takes no dir", r.Op)
		}
	case OpFork, OpSuspend, OpRestore:
		if r.Dir == "" || !filepath.IsAbs(r.Dir) || filepath.Clean(r.Dir) != r.Dir {
			return fmt.Errorf("%s needs an absolute, clean dir, got %q", r.Op, r.Dir)
		}
	case "":
		return errors.New("request without an op")
	default:
		return fmt.Errorf("unknown op %q (want status, pause, resume, fork, suspend or restore)", r.Op)
	}
	return nil
}

// Error is a request the monitor refused or failed.
type Error struct {
	Op      string
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("monitor: %s: %s", e.Op, e.Message) }
