package store

import (
	"net/netip"
	"time"
)

// State is where a VM is in its life.
type State string

// VM states. A VM is created in Creating, becomes Running when its agent
// answers, and goes through Booting when its monitor restarts (a guest
// reboot, or boxd reboot). Stopped (the guest powered off) and Crashed (the
// guest or its monitor failed) keep the disk until destroy.
//
// Suspended is paused in memory: its monitor still runs (and is adopted
// across daemon restarts), its vCPUs do not. SuspendedDisk was saved to the
// snapshot directory in Snapshot and has no monitor; it keeps its disk and
// lease, and is resumed by a monitor restoring that directory. Either is
// Running again after a resume.
const (
	Creating      State = "creating"
	Booting       State = "booting"
	Running       State = "running"
	Suspended     State = "suspended"
	SuspendedDisk State = "suspended-to-disk"
	Stopped       State = "stopped"
	Crashed       State = "crashed"
	Destroying    State = "destroying"
)

// VM is one VM's record.
type VM struct {
	Name    string `json:"name"`
	ID      string `json:"id"` // 12 lowercase hex digits, unique for the VM's life
	State   State  `json:"state"`
	CPUs    int    `json:"cpus"`
	MemMiB  int    `json:"mem_mib"`
	DiskGiB int    `json:"disk_gib"`
	CID     uint32 `json:"cid"` // guest vsock context ID

	// Lease is the VM's network identity while it holds one (nil without a
	// network, and after a crash or power-off freed it).
	Lease    *Lease `json:"lease,omitempty"`
	DiskPath string `json:"disk_path,omitempty"`
	// Dir holds the VM's console log, monitor log, vsock socket and the
	// monitor's result file.
	Dir string `json:"dir"`

	// Monitor identifies the running monitor process, nil when none runs.
	Monitor *Monitor `json:"monitor,omitempty"`
	// MemDir is the folder on tmpfs that holds the monitor's guest memory
	// (boxd vmm --mem-dir); it exists while a monitor may run.
	MemDir string `json:"mem_dir,omitempty"`
	// Snapshot is the snapshot directory of a SuspendedDisk VM (under Dir).
	// A snapshot directory is written once and never changed: a later
	// suspend writes a new one, because forks may map its files.
	Snapshot string `json:"snapshot,omitempty"`
	// Suspending is the directory a suspend to disk is writing, recorded
	// before the monitor is asked, so a monitor that ends with status 5
	// while no daemon watched is still understood.
	Suspending string `json:"suspending,omitempty"`
	// Origin says where the VM came from when it was forked.
	Origin *Origin `json:"origin,omitempty"`

	Created time.Time `json:"created"`
	// Started is when the current (or last) monitor started.
	Started time.Time `json:"started,omitzero"`
	// Restarts counts monitor restarts: guest reboots and boxd reboot.
	Restarts int   `json:"restarts"`
	LastExit *Exit `json:"last_exit,omitempty"`
	// Error says why the VM is Crashed, or what went wrong last.
	Error string `json:"error,omitempty"`
}

// Origin is the source of a forked VM.
type Origin struct {
	// Kind is "fork" (of a running or suspended VM: memory, processes and
	// disk), "golden" (restored from a VM suspended to disk) or "clone" (a
	// stopped VM's disk, booted fresh).
	Kind     string    `json:"kind"`
	Parent   string    `json:"parent"`    // the source's name at the time
	ParentID string    `json:"parent_id"` // the source's ID
	At       time.Time `json:"at"`
}

// Origin kinds.
const (
	OriginFork   = "fork"
	OriginGolden = "golden"
	OriginClone  = "clone"
)

// Monitor identifies a monitor process across daemon restarts: a PID alone
// could have been reused, so its start time (clock ticks after boot, from
// /proc/PID/stat) and the boot it ran in must match too.
type Monitor struct {
	PID       int    `json:"pid"`
	StartTime uint64 `json:"start_time"`
	BootID    string `json:"boot_id"`
}

// Exit is how a monitor ended.
type Exit struct {
	// Status is the monitor's exit status (0 poweroff, 1 monitor error,
	// 3 reboot, 4 crash, 5 suspended to disk), or -1 when it was killed by a signal or ended
	// while no one could learn its status.
	Status int    `json:"status"`
	Signal string `json:"signal,omitempty"`
	// Result and Detail are the monitor's own account (--result-json).
	Result string    `json:"result,omitempty"`
	Detail string    `json:"detail,omitempty"`
	At     time.Time `json:"at"`
}

// Lease is a VM's network identity (see daemon.Network).
type Lease struct {
	VMID    string       `json:"vm_id"`
	TAP     string       `json:"tap"`
	MAC     string       `json:"mac"`     // "52:54:00:12:34:56"
	Address netip.Prefix `json:"address"` // the guest's address and prefix, "10.77.0.2/24"
	Gateway netip.Addr   `json:"gateway"` // the host's address on the bridge
	DNS     []netip.Addr `json:"dns,omitempty"`
}
