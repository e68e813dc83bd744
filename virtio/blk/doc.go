// Package blk implements a virtio-blk device (virtio 1.2 §5.2) over a
// Backend, normally a sparse file.
//
// The device serves one request queue on its own worker goroutine, woken by
// Notify (an MMIO kick or an ioeventfd) through a channel, never by a timer.
// Each request chain is validated before any I/O: a 16-byte readable header,
// a writable status byte at the very end, data lengths in whole 512-byte
// sectors, sector ranges inside the disk and a bounded total size. Data moves
// between the file and guest memory without copies (Memory.Slice plus
// pread/pwrite). Guest mistakes complete the request with IOERR or UNSUPP and
// are counted in Stats; only a corrupt ring stops the device (the transport
// then shows DEVICE_NEEDS_RESET).
//
// Sparse files stay sparse: discard and write-zeroes punch holes
// (FALLOC_FL_PUNCH_HOLE) or zero ranges (FALLOC_FL_ZERO_RANGE) instead of
// writing zeros, so a 100 GB disk costs only what the guest wrote.
//
// Backends: File (a raw file or block device) and COW, a copy-on-write
// overlay over a read-only base (docs/disk-format.md: cluster bitmap,
// crash-safe flush ordering, frozen overlays as bases of chains).
// OpenDisk opens either from a disk spec: "cow:PATH" or a plain path.
//
// A Device owns its backend: Close stops the worker and closes the backend.
// Devices share nothing, so a VM may have several.
package blk
