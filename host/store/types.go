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
const (
	Creating   State = "creating"
	Booting    State = "booting"
	Running    State = "running"
	Stopped    State = "stopped"
	Crashed    State = "crashed"
	Destroying State = "destroying"
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

	Created time.Time `json:"created"`
	// Started is when the current (or last) monitor started.
	Started time.Time `json:"started,omitzero"`
	// Restarts counts monitor restarts: guest reboots and boxd reboot.
	Restarts int   `json:"restarts"`
	LastExit *Exit `json:"last_exit,omitempty"`
	// Error says why the VM is Crashed, or what went wrong last.
	Error string `json:"error,omitempty"`
}

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
	// 3 reboot, 4 crash), or -1 when it was killed by a signal or ended
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
