package switchroot

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// deleteTree empties the directory dir (the old root, reached through a
// descriptor because it is no longer "/"), staying on dir's filesystem: it
// never descends into a mount point, so carried mounts and the new root are
// safe even if they were still attached below it. Top-level names in skip are
// left alone. Entries that cannot be removed are logged and left; the count of
// removed entries is returned.
func deleteTree(dir *os.File, skip map[string]bool, logf Logf) (int, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(dir.Fd()), &st); err != nil {
		return 0, fmt.Errorf("stat old root: %w", err)
	}
	return deleteIn(int(dir.Fd()), st.Dev, skip, logf), nil
}

func deleteIn(dirfd int, dev uint64, skip map[string]bool, logf Logf) int {
	// Readdirnames on a dup, so closing d's duplicate leaves dirfd open for
	// the caller.
	dupfd, err := unix.Dup(dirfd)
	if err != nil {
		logf("switch root: dup: %v", err)
		return 0
	}
	d := os.NewFile(uintptr(dupfd), "old-root")
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		logf("switch root: read old root: %v", err)
	}
	n := 0
	for _, name := range names {
		if skip[name] {
			continue
		}
		// O_NOFOLLOW|O_DIRECTORY fails on files and symlinks, which are unlinked.
		fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			if err := unix.Unlinkat(dirfd, name, 0); err != nil {
				logf("switch root: remove %s: %v", name, err)
				continue
			}
			n++
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil || st.Dev != dev {
			unix.Close(fd) // another filesystem: a mount point, not ours to empty
			continue
		}
		n += deleteIn(fd, dev, nil, logf)
		unix.Close(fd)
		if err := unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR); err != nil {
			logf("switch root: remove %s: %v", name, err)
			continue
		}
		n++
	}
	return n
}
