// Package bench measures boxd: boot of a Linux guest under boxd's monitor against
// QEMU's microvm machine on the same kernel and initramfs, and the monitor's own
// setup time on a tiny guest. It prints medians, p99 and ratios of runs made side
// by side, interleaved so that machine noise hits both alike; it never passes or
// fails on a time. Every report says which environment produced it.
package bench
