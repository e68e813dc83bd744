package daemon

import (
	"context"

	"github.com/boxd-dev/boxd/host/store"
)

// Network gives each VM its link to the outside: a TAP device on a host
// bridge, an address, and the NAT and isolation rules around it. host/network
// implements it; tests use a fake.
//
// The daemon calls Start once before any other method, Attach when a VM is
// about to boot (creation, or a restart after its monitor crashed or the
// guest powered off), and Detach when the VM's monitor is gone for good
// (crash, power-off, destroy). A guest reboot keeps its lease: the same TAP,
// MAC and address are handed to the new monitor.
//
// Leases are persisted by the daemon in its store, so an implementation may
// keep its own state in memory only: after a daemon restart Start receives
// every lease still held by a VM and must treat them as allocated (and
// re-create whatever host state of theirs is missing). Detach is idempotent:
// a lease whose TAP or rules are already gone is not an error.
type Network interface {
	// Start prepares host networking (bridge, NAT, isolation rules) and
	// marks inUse as allocated.
	Start(ctx context.Context, inUse []Lease) error
	// Attach allocates an address and creates a persistent TAP device
	// (TUNSETPERSIST, already enslaved to the bridge and up) that the VM's
	// monitor opens by name and that survives the monitor's restarts. vmID
	// is the VM's ID: 12 lowercase hex digits, unique for the VM's life
	// (so "bx" + vmID fits IFNAMSIZ).
	Attach(ctx context.Context, vmID string) (Lease, error)
	// Detach deletes the TAP and the VM's rules and frees its address.
	Detach(ctx context.Context, l Lease) error
	// Close releases what Start set up in this process; it does not touch
	// the leases of VMs that keep running across a daemon restart.
	Close() error
}

// Lease is one VM's network identity: TAP, MAC, the guest's address and
// prefix, gateway and DNS servers. It is defined in host/store, which
// persists it with the VM, so host/network need not import the daemon.
type Lease = store.Lease

// Storage gives each VM its persistent root disk, created from the base image
// without copying it whole (reflink or a copy-on-write layer). host/storage
// implements it; tests use a fake.
//
// A disk lives from CreateDisk to DeleteDisk: across guest reboots, monitor
// crashes and daemon restarts. The daemon attaches the returned path to the
// monitor as the guest's first virtio-blk disk (/dev/vda).
type Storage interface {
	// CreateDisk creates the disk of VM vmID (see Network.Attach for the
	// form of IDs), sizeBytes long (sparse), and returns its path. A size
	// smaller than the base image is an error.
	CreateDisk(ctx context.Context, vmID string, sizeBytes int64) (path string, err error)
	// DeleteDisk deletes the disk of vmID. A disk that does not exist is not
	// an error.
	DeleteDisk(ctx context.Context, vmID string) error
	// CloneDisk creates dstID's disk as a copy of srcID's as it is now,
	// as cheaply as the filesystem allows. Nothing writes the source
	// meanwhile: its VM is paused (live: its monitor has the disk open)
	// or has no monitor. The source's disk keeps its path.
	CloneDisk(ctx context.Context, srcID, dstID string, live bool) (DiskClone, error)
}

// DiskClone is a disk made by CloneDisk and what it cost.
type DiskClone struct {
	Path string
	// Method is "reflink" (FICLONE: O(1)), "cow-layer" (the source's
	// overlay frozen as a shared layer under two new ones: O(1)) or "copy"
	// (the source overlay's written clusters copied: O(data written)).
	Method string
	// CopiedBytes is what Method "copy" copied.
	CopiedBytes int64
}
