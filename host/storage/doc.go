// Package storage creates and deletes the VMs' persistent root disks, each
// from the base image without copying it whole. Manager implements
// daemon.Storage.
//
// Layout under Config.Dir (normally STATE/disks):
//
//	bases/KEY-SIZE.img   one immutable base per image version and disk size
//	ID.img               a VM's disk as a reflinked raw file, or
//	ID.cow               a VM's disk as a copy-on-write overlay on a base
//
// A base is the image copied once (a reflink where the filesystems allow,
// else its data extents only, so holes stay holes), extended to the disk
// size, and, if it holds ext2/3/4, grown with resize2fs -f. Growing the
// filesystem offline on the host, once per size, was chosen over growing
// it in the guest at boot: it works unchanged for both kinds of disk, costs
// every later disk of that size nothing, and keeps resize logic out of the
// guest's init. A base is never written after it is renamed into place
// (mode 0444), which is what lets overlays trust it and lets the image be
// replaced while disks made from the old one live on. Bases are not
// garbage-collected yet: one per (image version, size) stays until removed
// by hand.
//
// A VM's disk: CreateDisk tries FICLONE from the base (XFS, btrfs: O(1),
// blocks shared until written) and falls back to a virtio/blk COW overlay
// (ext4, tmpfs: a few KiB, see docs/disk-format.md). It returns the disk's
// spec for blk.OpenDisk and boxd vmm --disk: a plain path or "cow:PATH".
// Disks are sparse; a 100 GB disk costs what the guest writes.
//
// Invariants: a disk file appears complete or not at all (built under a
// temporary name, renamed with RENAME_NOREPLACE, directory synced); VM IDs
// are validated before they become file names; DeleteDisk removes either
// kind and succeeds on what is already gone.
package storage
