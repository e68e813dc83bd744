// Package switchroot moves guest init from the initramfs onto the root disk
// while staying PID 1: init mounts the disk, moves its special mounts under
// it, bind-mounts the initramfs's /bin (init, boxd, busybox) read-only at the
// disk's /run/boxd/bin (inside the /run tmpfs, so nothing is written to the
// disk and nothing is copied), makes the disk the root, frees the rest of the
// initramfs and re-executes itself from /run/boxd/bin. exec(2) keeps the
// PID, so the process the kernel started as PID 1 is still boxd's init; the
// root disk's own /sbin/init is never run.
//
// The work is a Plan (a list of Ops, pure data, unit-tested) carried out by
// Execute through the Sys interface, so the same code runs against real
// mounts in a guest and against a temporary directory with a fake Sys in
// tests.
//
// Invariants:
//   - Until the root moves (OpMoveRoot) every step can be undone: on failure
//     Execute moves carried mounts back, unmounts the disk and returns an
//     error wrapping ErrNotSwitched, and init carries on from the initramfs.
//     After it, a failure is reported with ErrHalfSwitched.
//   - Deleting the old root never crosses into another filesystem (the
//     moved mounts and the new root are never touched) and keeps Spec.Bin,
//     which the new root still shows.
//   - Nothing is written to the root disk except the mount-point directories
//     that must exist (dev, proc, sys, run, tmp), created only if missing.
package switchroot
