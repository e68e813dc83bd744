// Package nested runs a command inside an L1 virtual machine that has a
// hardware-virtualization-backed /dev/kvm, on hosts whose own KVM cannot boot
// a Linux guest (PVM, or no KVM at all). It is how boxd's end-to-end tests and
// boxd itself run on CI machines and cloud VMs without VT-x/AMD-V.
//
// L1 is QEMU under pure software emulation (TCG) with an emulated AMD SVM CPU,
// booting the host's own Debian kernel directly: the uncompressed vmlinux
// through its PVH entry (extracted from /boot's bzImage once and cached, which
// spares L1 seconds of emulated decompression), or the bzImage if that fails.
// The initramfs is built here, in Go: static busybox, the init script
// (l1init.sh) and the few modules L1 needs before it can reach the host's disk
// (virtio, 9p, overlay, kvm-amd), resolved from the kernel's modules.dep. Both
// are cached outside the source tree (CacheDir), keyed by a hash of their inputs.
//
// Inside L1 the host's root is mounted read-only over virtio-9p and the
// command runs chrooted into it, in the caller's working directory, so a
// binary built on the host runs unchanged in L1. /tmp, /var/tmp and $HOME are
// overlays (host contents visible, writes kept in L1 memory and discarded),
// and one output directory is shared writable at the same path as on the
// host. Every other module of the same kernel is available to modprobe
// inside the chroot, because the host's /lib/modules is visible there.
//
// A per-run host directory, shared writable, carries the run's spec in and
// its results out: the command writes into FIFOs that L1 copies into files
// there, which the host follows (inotify) and streams to the caller live.
// 9p writes are synchronous, so once L1 has written the exit status the
// output before it is complete on the host; nothing is lost when L1 powers
// off. (QEMU's virtio-serial chardevs were not used for this because QEMU
// drops what it still holds for a non-blocking pipe when the guest powers
// off.) The serial console carries kernel messages, shown when L1 fails,
// and a heartbeat line every 2 s, which the host watches: an L1 silent for
// Config.HangAfter is stopped as hung rather than at the timeout. L1 has
// one vCPU unless Config.CPUs says otherwise (DefaultCPUs says why).
//
// Invariants:
//   - The QEMU process never outlives Run: it runs in its own process group
//     with Pdeathsig=SIGKILL, and the group is killed on timeout, on context
//     cancellation and on every error path before Run returns.
//   - The cached initramfs is only ever replaced by an atomic rename of a
//     complete file, so a concurrent run never boots a half-written one.
//   - Nothing in the host filesystem is written except the output directory,
//     the cache directory and a per-run temporary directory that Run removes
//     (a boxd killed by SIGKILL leaves it behind in $TMPDIR).
package nested
