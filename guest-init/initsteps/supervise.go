package initsteps

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// agentReadyLine is what the agent writes on its readiness pipe (fd 3) once
// it listens.
const agentReadyLine = "ready"

// backoff spaces agent restarts: Min after a run that lasted Stable or more,
// doubling up to Max while the agent keeps dying young.
type backoff struct {
	Min, Max, Stable time.Duration
	cur              time.Duration
}

// next returns the delay before the restart that follows a run of length ran.
func (b *backoff) next(ran time.Duration) time.Duration {
	if ran >= b.Stable || b.cur == 0 {
		b.cur = b.Min
	} else {
		b.cur = min(2*b.cur, b.Max)
	}
	return b.cur
}

// Supervisor runs the guest agent as a child process and restarts it when it
// dies. PID 1's reaper tells it about exits (Exited); it never waits for the
// process itself.
type Supervisor struct {
	Logf func(format string, args ...any)
	// start launches the agent and returns its pid and the read end of its
	// readiness pipe (nil if it has none). Tests replace it.
	start func(port uint32) (pid int, ready *os.File, err error)
	// after runs f after d; tests replace it.
	after func(d time.Duration, f func())

	mu       sync.Mutex
	backoff  backoff       // guarded by mu
	port     uint32        // guarded by mu
	pid      int           // guarded by mu; 0 when not running
	started  time.Time     // guarded by mu
	stopped  bool          // guarded by mu
	restarts int           // guarded by mu
	ready    chan struct{} // closed at the first readiness
	onReady  []func()      // guarded by mu; run once, at the first readiness
	isReady  bool          // guarded by mu
	// gateR and gateW are the gate pipe while Hold is in force: agents
	// started then get gateR and do not listen before Release closes gateW.
	gateR, gateW *os.File // guarded by mu
}

// NewSupervisor returns a Supervisor that runs "self agent --port=N" with
// env, stdin from /dev/null and stdout/stderr on init's own.
func NewSupervisor(self string, env []string, logf func(string, ...any)) *Supervisor {
	s := newSupervisor(logf)
	// s.start runs with s.mu held (launchLocked), so it may read the gate.
	s.start = func(port uint32) (int, *os.File, error) { return startAgentProcess(self, env, port, s.gateR) }
	return s
}

func newSupervisor(logf func(string, ...any)) *Supervisor {
	return &Supervisor{
		Logf:    logf,
		after:   func(d time.Duration, f func()) { time.AfterFunc(d, f) },
		backoff: backoff{Min: 100 * time.Millisecond, Max: 10 * time.Second, Stable: 30 * time.Second},
		ready:   make(chan struct{}),
	}
}

// startAgentProcess starts the agent with the write end of its readiness
// pipe as fd 3 and, if gate is set, gate as fd 4: it then starts up (exec,
// runtime) but listens only once gate reads EOF.
func startAgentProcess(self string, env []string, port uint32, gate *os.File) (int, *os.File, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return 0, nil, err
	}
	defer w.Close()
	null, err := os.Open(os.DevNull)
	if err != nil {
		r.Close()
		return 0, nil, err
	}
	defer null.Close()
	argv := []string{self, "agent", "--port=" + strconv.FormatUint(uint64(port), 10), "--ready-fd=" + strconv.Itoa(readyFD)}
	files := []*os.File{null, os.Stdout, os.Stderr, w} // w is readyFD
	if gate != nil {
		argv = append(argv, "--gate-fd="+strconv.Itoa(gateFD))
		files = append(files, gate)
	}
	p, err := os.StartProcess(self, argv, &os.ProcAttr{
		Env:   env,
		Files: files,
		// Its own session: signals for init's process group never reach it.
		Sys: &syscall.SysProcAttr{Setsid: true},
	})
	if err != nil {
		r.Close()
		return 0, nil, err
	}
	pid := p.Pid
	p.Release() // PID 1's reaper waits for it, not os.Process
	return pid, r, nil
}

// Hold makes the next agents start up without listening until Release:
// init starts the agent early, so that its exec and runtime start overlap
// the network setup, yet no host connects before the guest has its
// hostname and address.
func (s *Supervisor) Hold() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gateW != nil {
		return nil
	}
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("agent gate: %w", err)
	}
	s.gateR, s.gateW = r, w
	return nil
}

// Release lets held agents listen; agents started later are not held.
func (s *Supervisor) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gateW != nil {
		s.gateW.Close()
		s.gateR.Close()
		s.gateR, s.gateW = nil, nil
	}
}

// Start launches the agent for port.
func (s *Supervisor) Start(port uint32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.port = port
	return s.launchLocked()
}

func (s *Supervisor) launchLocked() error {
	if s.stopped {
		return errors.New("agent: stopped")
	}
	pid, ready, err := s.start(s.port)
	if err != nil {
		return fmt.Errorf("start agent: %w", err)
	}
	s.pid, s.started = pid, time.Now()
	if s.restarts > 0 {
		s.Logf("agent: restarted, pid %d, vsock port %d", pid, s.port)
	}
	if ready != nil {
		go s.watchReady(ready)
	}
	return nil
}

// watchReady reads the agent's readiness pipe until the agent closes it.
func (s *Supervisor) watchReady(r *os.File) {
	defer r.Close()
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if sc.Text() == agentReadyLine {
			s.markReady()
		}
	}
}

func (s *Supervisor) markReady() {
	s.mu.Lock()
	if s.isReady {
		s.mu.Unlock()
		return
	}
	s.isReady = true
	fs := s.onReady
	s.onReady = nil
	close(s.ready)
	s.mu.Unlock()
	for _, f := range fs {
		f()
	}
}

// WaitReady waits until the agent has been ready once, at most timeout.
func (s *Supervisor) WaitReady(timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-s.ready:
		return nil
	case <-t.C:
		return fmt.Errorf("agent not ready after %v", timeout)
	}
}

// WhenReady runs f now if the agent has been ready, else at its first
// readiness. It reports whether f ran now.
func (s *Supervisor) WhenReady(f func()) bool {
	s.mu.Lock()
	if !s.isReady {
		s.onReady = append(s.onReady, f)
		s.mu.Unlock()
		return false
	}
	s.mu.Unlock()
	f()
	return true
}

// Exited is called by the reaper for every reaped pid. It reports whether
// pid was the agent, and if so schedules a restart.
func (s *Supervisor) Exited(pid int, status syscall.WaitStatus) bool {
	s.mu.Lock()
	if pid == 0 || pid != s.pid {
		s.mu.Unlock()
		return false
	}
	ran := time.Since(s.started)
	s.pid = 0
	if s.stopped {
		s.mu.Unlock()
		return true
	}
	delay := s.backoff.next(ran)
	s.restarts++
	s.Logf("agent: pid %d %s after %v; restart %d in %v", pid, describe(status), ran.Round(time.Millisecond), s.restarts, delay)
	s.mu.Unlock()
	s.after(delay, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.pid != 0 || s.stopped {
			return
		}
		if err := s.launchLocked(); err != nil {
			s.Logf("%v", err)
		}
	})
	return true
}

// Stop ends restarts (for shutdown) and returns the running agent's pid, or 0.
func (s *Supervisor) Stop() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	return s.pid
}

func describe(ws syscall.WaitStatus) string {
	switch {
	case ws.Exited():
		return fmt.Sprintf("exited with status %d", ws.ExitStatus())
	case ws.Signaled():
		return fmt.Sprintf("killed by signal %d (%v)", int(ws.Signal()), ws.Signal())
	default:
		return fmt.Sprintf("ended (wait status %#x)", uint32(ws))
	}
}
