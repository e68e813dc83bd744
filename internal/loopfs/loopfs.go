// Package loopfs gives tests a fresh filesystem of a given kind, made in a
// sparse file and mounted from a loop device, undone when the test ends.
// Tests use it where behaviour depends on the filesystem (reflink on XFS).
// Without root, loop devices or the mkfs tool, the test is skipped with the
// reason.
package loopfs

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// XFS mounts a new XFS filesystem of size bytes with reflink on, and returns
// its mount point.
func XFS(t testing.TB, size int64) string {
	t.Helper()
	return mount(t, "xfs", size, "mkfs.xfs", "-q", "-m", "reflink=1")
}

func mount(t testing.TB, fstype string, size int64, mkfs ...string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("needs root to set up a loop device and mount %s", fstype)
	}
	for _, tool := range []string{mkfs[0], "losetup"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skip("no loop devices (/dev/loop-control)")
	}
	img := filepath.Join(t.TempDir(), fstype+".img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs[0], append(mkfs[1:], img)...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(mkfs, " "), err, out)
	}
	out, err := exec.Command("losetup", "--find", "--show", img).CombinedOutput()
	if err != nil {
		t.Skipf("no free loop device: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	mnt := t.TempDir()
	if err := unix.Mount(dev, mnt, fstype, 0, ""); err != nil {
		t.Skipf("cannot mount %s: %v", fstype, err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	return mnt
}
