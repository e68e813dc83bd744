package daemon

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/boxd-dev/boxd/host/store"
)

// Logs copies the VM's serial console log to w and, with follow, keeps
// copying what is appended — woken by inotify, not by a timer — until ctx
// ends or the VM is destroyed.
func (d *Daemon) Logs(ctx context.Context, name string, follow bool, w io.Writer) error {
	rt, err := d.runtime(name)
	if err != nil {
		return err
	}
	vm, err := d.st.Get(name)
	if err != nil {
		return d.storeErr(name, err)
	}
	path := consolePath(vm)
	var watch *os.File
	if follow {
		// Watch before the first read, so nothing appended in between is
		// missed. The folder is watched (not the file) so a console that
		// does not exist yet is seen when the monitor creates it.
		if watch, err = watchDir(vm); err != nil {
			return err
		}
		defer watch.Close()
		stop := context.AfterFunc(ctx, func() { watch.Close() })
		defer stop()
		go func() {
			select {
			case <-rt.gone:
				watch.Close()
			case <-ctx.Done():
			}
		}()
	}
	var off int64
	for {
		n, err := copyFrom(w, path, off)
		off += n
		if err != nil {
			return err
		}
		if !follow {
			return nil
		}
		if err := waitEvent(watch); err != nil {
			// Closed: the client left or the VM was destroyed. Copy what
			// was written last, if the file is still there.
			copyFrom(w, path, off)
			return nil
		}
	}
}

// copyFrom copies path from offset off to w and returns how much it copied;
// a missing file is empty.
func copyFrom(w io.Writer, path string, off int64) (int64, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return 0, err
	}
	return io.Copy(w, f)
}

// watchDir returns an inotify descriptor watching the VM's folder for
// writes and for its own deletion. It is non-blocking, so the runtime's
// poller waits on it and Close interrupts a read.
func watchDir(vm store.VM) (*os.File, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "inotify")
	mask := uint32(unix.IN_MODIFY | unix.IN_CREATE | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF)
	if _, err := unix.InotifyAddWatch(fd, vm.Dir, mask); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// waitEvent blocks until inotify reports something (any event: the caller
// just copies what is new) or f is closed. Deletion of the folder is an end.
func waitEvent(f *os.File) error {
	buf := make([]byte, 4096)
	n, err := f.Read(buf)
	if err != nil {
		return err
	}
	for off := 0; off+unix.SizeofInotifyEvent <= n; {
		// struct inotify_event: wd int32, mask uint32, cookie uint32, len uint32, name.
		mask := binary.NativeEndian.Uint32(buf[off+4:])
		if mask&(unix.IN_DELETE_SELF|unix.IN_MOVE_SELF|unix.IN_IGNORED) != 0 {
			return io.EOF
		}
		nameLen := int(binary.NativeEndian.Uint32(buf[off+12:]))
		off += unix.SizeofInotifyEvent + nameLen
	}
	return nil
}
