// Package image owns boxd's default root filesystem: the script that builds
// it (build.sh, run by `make image`: debootstrap of Debian bookworm minbase
// plus a few tools, turned into a sparse ext4 image by mkfs.ext4 -d) into a
// content-addressed cache, and Path, which finds the cached image for the
// script in this tree.
//
// The image holds Debian only. boxd's init, agent and in-guest CLI come from
// the initramfs: init mounts the image (boxd.root=/dev/vda), switches root
// onto it and stays PID 1 (see guest-init/switchroot).
//
// Invariants:
//   - The cache key covers what shapes the image (script version, Debian
//     release, package list, size, architecture), so Path never returns an
//     image built for other inputs.
//   - Finding an image never builds one: callers get ErrNotBuilt.
package image
