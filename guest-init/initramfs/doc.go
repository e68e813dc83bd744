// Package initramfs builds the guest's initramfs: boxd's init as /bin/init
// (and /init, a link to it, which the kernel runs), the in-guest boxd CLI as
// /bin/boxd and a static busybox as /bin/busybox with a link per applet in
// /bin, so a shell is usable even without a root disk. Everything boxd needs
// after switching onto a root disk is in /bin, which init carries over as a
// bind mount.
// The archive is newc cpio, uncompressed or gzip, written with u-root's cpio
// package (u-root's mkuimage builder compiles Go commands into a busybox of
// its own; boxd needs only three prebuilt binaries laid out, so the cpio
// writer is the part that fits).
//
// Invariants:
//   - The archive is a pure function of the Spec: records are in a fixed
//     order with fixed inode numbers, owner root and mtime 0, so the same
//     inputs give the same bytes and Key names them.
//   - Key hashes the contents of every input file, not its name or mtime.
//   - The cache (Ensure) only ever holds complete archives: each is written
//     to a temporary file and renamed into place.
//   - Binaries must be statically linked: the initramfs has no libc.
package initramfs
