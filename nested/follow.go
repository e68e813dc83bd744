package nested

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// follower copies what L1 appends to the run directory's stdout and stderr
// files to the caller as it arrives, and reports the ready file once. It
// wakes on inotify events for the directory and, should those not come (a
// file system without inotify), every followPoll.
type follower struct {
	dir     string
	outs    []followed
	ready   func(uptime float64) // called once, from the follower's goroutine
	isReady bool
	watch   *os.File // inotify descriptor; nil when unavailable
}

type followed struct {
	f *os.File
	w io.Writer // nil once it failed: the rest is read and dropped
}

const followPoll = 250 * time.Millisecond

// newFollower opens dir's stdout and stderr files, which must exist.
func newFollower(dir string, stdout, stderr io.Writer, ready func(float64)) (*follower, error) {
	fl := &follower{dir: dir, ready: ready}
	for _, o := range []struct {
		name string
		w    io.Writer
	}{{fileStdout, stdout}, {fileStderr, stderr}} {
		f, err := os.Open(filepath.Join(dir, o.name))
		if err != nil {
			fl.close()
			return nil, err
		}
		fl.outs = append(fl.outs, followed{f: f, w: o.w})
	}
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err == nil {
		if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_MODIFY|unix.IN_CLOSE_WRITE|unix.IN_MOVED_TO); err != nil {
			unix.Close(fd)
		} else {
			// Non-blocking, so the runtime poller serves it and read
			// deadlines work.
			fl.watch = os.NewFile(uintptr(fd), "inotify")
		}
	}
	return fl, nil
}

// run follows until stop is closed, then copies what is left and returns.
func (fl *follower) run(stop <-chan struct{}) {
	defer fl.close()
	if w := fl.watch; w != nil {
		go func() {
			<-stop
			w.SetReadDeadline(time.Now()) // wake the wait below
		}()
	}
	buf := make([]byte, 4096)
	for {
		fl.pump()
		select {
		case <-stop:
			fl.pump()
			return
		default:
		}
		fl.wait(stop, buf)
	}
}

// wait returns after an inotify event, followPoll, or stop.
func (fl *follower) wait(stop <-chan struct{}, buf []byte) {
	if fl.watch != nil {
		if err := fl.watch.SetReadDeadline(time.Now().Add(followPoll)); err == nil {
			// Events are not parsed: any of them means "look again".
			_, err := fl.watch.Read(buf)
			if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
				return
			}
		}
		fl.watch.Close()
		fl.watch = nil
	}
	t := time.NewTimer(followPoll)
	defer t.Stop()
	select {
	case <-stop:
	case <-t.C:
	}
}

// pump copies new output and looks for the ready file.
func (fl *follower) pump() {
	buf := make([]byte, 32<<10)
	for i := range fl.outs {
		o := &fl.outs[i]
		for {
			n, err := o.f.Read(buf)
			if n > 0 && o.w != nil {
				if _, werr := o.w.Write(buf[:n]); werr != nil {
					o.w = nil
				}
			}
			if err != nil || n == 0 {
				break
			}
		}
	}
	if !fl.isReady {
		if b, err := os.ReadFile(filepath.Join(fl.dir, fileReady)); err == nil {
			if up, err := parseReady(b); err == nil {
				fl.isReady = true
				fl.ready(up)
			}
		}
	}
}

func (fl *follower) close() {
	for _, o := range fl.outs {
		o.f.Close()
	}
	if fl.watch != nil {
		fl.watch.Close()
	}
}
