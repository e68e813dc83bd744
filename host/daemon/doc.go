// Package daemon is boxd's host daemon: it owns the VM registry (host/store),
// one monitor per VM (host/supervisor), each VM's network lease (Network) and
// root disk (Storage), and the quotas (host/quota), and it serves the API of
// host/api on their behalf.
//
// Invariants:
//   - A VM's record is written to the store before any resource is taken for
//     it (state "creating"), and every resource it holds — lease, disk, CID,
//     monitor — is in the record, so after a daemon crash the next daemon
//     knows what to reattach or clean up.
//   - Monitors outlive the daemon: Close stops watching them, it never stops
//     them. On start the daemon reattaches to each monitor that still runs
//     (same PID, start time and boot), and settles the VMs whose monitors
//     ended while it was away as if it had watched them end.
//   - Operations on one VM are serialised by that VM's lock; operations on
//     different VMs run concurrently. Create and destroy do not hold the
//     registry lock while a guest boots or a monitor stops.
//   - A guest reboot (monitor exit status 3) restarts the VM with the same
//     disk and lease; a crash (4), a monitor error (1) or an unexplained
//     death marks it crashed; a power-off marks it stopped. Either way the
//     lease is freed; the disk is kept until destroy.
package daemon
