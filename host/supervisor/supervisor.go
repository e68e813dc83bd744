package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Exit is how a monitor ended.
type Exit struct {
	// Monitor is the process that ended.
	Monitor Identity
	// Status is the exit status, or -1 if a signal killed the monitor or it
	// ended unwatched and left no result file.
	Status int
	Signal string // the signal that killed it, if one did
	// Result and Detail come from its result file, when it wrote one.
	Result, Detail string
	// Requested says Stop ended it.
	Requested bool
	At        time.Time
}

// Config configures a Supervisor.
type Config struct {
	// Exe is the boxd binary; Argv0 the arguments before the monitor's
	// flags (default ["vmm"]). Tests point Exe at a fake monitor.
	Exe   string
	Argv0 []string
	// Env is added to the daemon's environment for monitors.
	Env []string
	// OnExit is called once per monitor end, from a goroutine of the
	// supervisor, while it is open.
	OnExit func(vmID string, e Exit)
}

// Supervisor starts, adopts, watches and stops monitors.
type Supervisor struct {
	cfg Config

	mu     sync.Mutex
	mons   map[string]*monitor // guarded by mu; by VM ID, while running
	closed bool                // guarded by mu
}

type monitor struct {
	vmID   string
	id     Identity
	spec   Spec
	done   chan struct{} // closed once exit is set
	exit   Exit
	signal func(syscall.Signal) error
	// stopping is set by Stop before it signals; guarded by Supervisor.mu.
	stopping bool
	// unwatch stops the pidfd watch of an adopted monitor (nil for children).
	unwatch func()
}

// New returns a Supervisor.
func New(cfg Config) (*Supervisor, error) {
	if cfg.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("supervisor: find boxd binary: %w", err)
		}
		cfg.Exe = exe
	}
	if cfg.Argv0 == nil {
		cfg.Argv0 = []string{"vmm"}
	}
	if cfg.OnExit == nil {
		cfg.OnExit = func(string, Exit) {}
	}
	return &Supervisor{cfg: cfg, mons: map[string]*monitor{}}, nil
}

// free fails if the supervisor is closed or already watches a monitor of vmID.
func (s *Supervisor) free(vmID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("supervisor closed")
	}
	if _, ok := s.mons[vmID]; ok {
		return fmt.Errorf("monitor of %s already runs", vmID)
	}
	return nil
}

// Start starts the monitor of spec in its own session, with a fresh result
// file, and returns its identity.
func (s *Supervisor) Start(spec Spec) (Identity, error) {
	if err := spec.validate(); err != nil {
		return Identity{}, err
	}
	if err := s.free(spec.ID); err != nil {
		return Identity{}, err
	}
	id, cmd, err := s.spawn(spec)
	if err != nil {
		return Identity{}, err
	}
	m := &monitor{vmID: spec.ID, id: id, spec: spec, done: make(chan struct{})}
	m.signal = func(sig syscall.Signal) error { return cmd.Process.Signal(sig) }
	s.mu.Lock()
	s.mons[spec.ID] = m // free said no monitor of this VM runs; callers serialise per VM
	s.mu.Unlock()
	go func() {
		err := cmd.Wait()
		e := Exit{Status: cmd.ProcessState.ExitCode(), At: time.Now().UTC()}
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			e.Signal = unix.SignalName(ws.Signal())
		} else if err != nil && e.Status < 0 {
			e.Detail = err.Error()
		}
		s.finish(m, e)
	}()
	return id, nil
}

func (s *Supervisor) spawn(spec Spec) (Identity, *exec.Cmd, error) {
	if err := os.Remove(spec.ResultPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return Identity{}, nil, fmt.Errorf("start %s: stale result: %w", spec.ID, err)
	}
	log, err := os.OpenFile(spec.LogPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return Identity{}, nil, fmt.Errorf("start %s: %w", spec.ID, err)
	}
	defer log.Close()
	fmt.Fprintf(log, "boxd: starting monitor at %s\n", time.Now().UTC().Format(time.RFC3339Nano))
	cmd := exec.Command(s.cfg.Exe, append(append([]string{}, s.cfg.Argv0...), spec.Args()...)...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), s.cfg.Env...)
	// Its own session: no signal meant for the daemon's terminal or process
	// group reaches it, and it outlives the daemon.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return Identity{}, nil, fmt.Errorf("start %s: %w", spec.ID, err)
	}
	// Not yet reaped (only our Wait reaps it), so /proc/PID is there even if
	// it already exited.
	id, err := identifyChild(cmd.Process.Pid)
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return Identity{}, nil, fmt.Errorf("start %s: %w", spec.ID, err)
	}
	return id, cmd, nil
}

// identifyChild is Identify that accepts a zombie: a child that already
// exited is still the one we started.
func identifyChild(pid int) (Identity, error) {
	id, err := Identify(pid)
	if errors.Is(err, ErrGone) {
		boot, berr := bootID()
		if berr != nil {
			return Identity{}, berr
		}
		data, rerr := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if rerr != nil {
			return Identity{}, rerr
		}
		_, start, perr := parseStat(string(data))
		if perr != nil {
			return Identity{}, perr
		}
		return Identity{PID: pid, StartTime: start, BootID: boot}, nil
	}
	return id, err
}

// Adopt watches a monitor this supervisor did not start (one that outlived
// a previous daemon). It fails with ErrGone if id no longer runs.
func (s *Supervisor) Adopt(spec Spec, id Identity) error {
	// Open the pidfd first and check the identity after: a pidfd names one
	// process for good, so if the check passes the pidfd is the monitor's.
	fd, err := unix.PidfdOpen(id.PID, unix.PIDFD_NONBLOCK)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("adopt %s: pid %d: %w", spec.ID, id.PID, ErrGone)
		}
		return fmt.Errorf("adopt %s: pidfd_open: %w", spec.ID, err)
	}
	pidfd := os.NewFile(uintptr(fd), fmt.Sprintf("pidfd:%d", id.PID))
	if err := check(id); err != nil {
		pidfd.Close()
		return fmt.Errorf("adopt %s: %w", spec.ID, err)
	}
	m := &monitor{vmID: spec.ID, id: id, spec: spec, done: make(chan struct{})}
	m.signal = func(sig syscall.Signal) error {
		return unix.PidfdSendSignal(fd, sig, nil, 0)
	}
	var once sync.Once
	m.unwatch = func() { once.Do(func() { pidfd.Close() }) }
	if err := s.free(spec.ID); err != nil {
		pidfd.Close()
		return fmt.Errorf("adopt: %w", err)
	}
	s.mu.Lock()
	s.mons[spec.ID] = m
	s.mu.Unlock()

	go func() {
		if err := waitReadable(pidfd); err != nil {
			return // unwatched (Close): the monitor keeps running
		}
		// Not our child: no status from the kernel. The result file is
		// the monitor's own account; without one it died unexplained.
		e := Exit{Status: -1, At: time.Now().UTC()}
		if r, err := ReadResult(spec.ResultPath); err == nil {
			e.Status, e.Result, e.Detail = r.ExitStatus, r.Result, r.Detail
		} else {
			e.Detail = "monitor ended without a result file (killed, or failed before it could write one)"
		}
		m.unwatch()
		s.finish(m, e)
	}()
	return nil
}

// waitReadable blocks until the pidfd polls readable (the process exited),
// using the runtime's poller so no thread is held; it fails once f is closed.
func waitReadable(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var perr error
	err = rc.Read(func(fd uintptr) bool {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		if err != nil && !errors.Is(err, unix.EINTR) {
			perr = err
			return true
		}
		return n > 0
	})
	if err != nil {
		return err
	}
	return perr
}

// finish records e and reports it, once.
func (s *Supervisor) finish(m *monitor, e Exit) {
	if e.Result == "" {
		if r, err := ReadResult(m.spec.ResultPath); err == nil {
			e.Result, e.Detail = r.Result, r.Detail
		}
	}
	e.Monitor = m.id
	s.mu.Lock()
	e.Requested = m.stopping
	m.exit = e
	if s.mons[m.vmID] == m {
		delete(s.mons, m.vmID)
	}
	closed := s.closed
	s.mu.Unlock()
	close(m.done)
	if !closed {
		s.cfg.OnExit(m.vmID, e)
	}
}

// Done returns a channel closed when the monitor of vmID ends, or nil if
// none is watched.
func (s *Supervisor) Done(vmID string) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m, ok := s.mons[vmID]; ok {
		return m.done
	}
	return nil
}

// Running reports whether the monitor of vmID is watched and running.
func (s *Supervisor) Running(vmID string) bool { return s.Done(vmID) != nil }

// Stop asks the monitor of vmID to stop (SIGTERM: the guest is stopped at
// once, the monitor exits 0), kills it (SIGKILL) if it has not ended when
// ctx ends, and returns how it ended. OnExit still sees the exit, with
// Requested set. A VM with no monitor returns ErrGone.
func (s *Supervisor) Stop(ctx context.Context, vmID string) (Exit, error) {
	s.mu.Lock()
	m, ok := s.mons[vmID]
	if ok {
		m.stopping = true
	}
	s.mu.Unlock()
	if !ok {
		return Exit{}, fmt.Errorf("stop %s: %w", vmID, ErrGone)
	}
	if err := m.signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) && !errors.Is(err, unix.ESRCH) {
		return Exit{}, fmt.Errorf("stop %s: %w", vmID, err)
	}
	select {
	case <-m.done:
		return m.exit, nil
	case <-ctx.Done():
	}
	m.signal(syscall.SIGKILL)
	<-m.done // SIGKILL cannot be caught: the end is near
	return m.exit, nil
}

// Close stops watching every monitor and leaves them running; OnExit is
// not called anymore.
func (s *Supervisor) Close() {
	s.mu.Lock()
	s.closed = true
	var unwatch []func()
	for _, m := range s.mons {
		if m.unwatch != nil {
			unwatch = append(unwatch, m.unwatch)
		}
	}
	s.mu.Unlock()
	for _, f := range unwatch {
		f()
	}
}
