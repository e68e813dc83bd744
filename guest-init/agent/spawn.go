package agent

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// spawn starts path with the child's stdin, stdout and stderr set to files
// and returns its pid and a pidfd for it. It is os/exec's Start without
// what the agent does not use (goroutines for non-file I/O, a blocking
// Wait): a pidfd in the runtime's poller tells of the exit, so reaping
// holds no thread in waitid. Like exec.Cmd.Start it returns once the exec
// succeeded, or with its error.
func spawn(path string, argv, env []string, dir string, files [3]*os.File, sys *syscall.SysProcAttr) (int, *os.File, error) {
	fds := make([]uintptr, len(files))
	for i, f := range files {
		fds[i] = f.Fd() // the child's ends: blocking mode is what it expects
	}
	pidfd := -1
	sys.PidFD = &pidfd
	pid, err := syscall.ForkExec(path, argv, &syscall.ProcAttr{Dir: dir, Env: env, Files: fds, Sys: sys})
	if err != nil {
		return 0, nil, &os.PathError{Op: "fork/exec", Path: path, Err: err}
	}
	if pidfd < 0 {
		return pid, nil, nil // no pidfd (kernel < 5.2): wait blocks a thread
	}
	if err := unix.SetNonblock(pidfd, true); err != nil {
		syscall.Close(pidfd)
		return pid, nil, nil
	}
	return pid, os.NewFile(uintptr(pidfd), "pidfd"), nil
}

// waitPid reaps pid: through pidfd, readable once the process has exited,
// without a blocked thread; else with a blocking wait4.
func waitPid(pid int, pidfd *os.File) (syscall.WaitStatus, error) {
	var ws syscall.WaitStatus
	if pidfd == nil {
		for {
			_, err := syscall.Wait4(pid, &ws, 0, nil)
			if !errors.Is(err, syscall.EINTR) {
				return ws, err
			}
		}
	}
	defer pidfd.Close()
	rc, err := pidfd.SyscallConn()
	if err != nil {
		return ws, err
	}
	var werr error
	err = rc.Read(func(uintptr) bool {
		wpid, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		switch {
		case errors.Is(err, syscall.EINTR):
			return false
		case err != nil:
			werr = err
			return true
		}
		return wpid == pid // 0: still running, wait for the pidfd
	})
	if err == nil {
		err = werr
	}
	if err != nil {
		return ws, fmt.Errorf("wait %d: %w", pid, err)
	}
	return ws, nil
}
