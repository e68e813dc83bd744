package initsteps

import (
	"errors"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"
	"time"
)

// Environ is the environment of the re-executed init, the agent and what
// the agent starts (the agent sets its own PATH for commands as well).
var Environ = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"HOME=/root",
	"TERM=linux",
}

// Main is PID 1. args is init's argv; log lines go to console. It returns
// only on a fatal boot failure (the caller exits, and the kernel panics).
func Main(args []string, console io.Writer) error {
	if os.Getpid() != 1 {
		return errors.New("boxd init must run as PID 1; it mounts filesystems and signals every process")
	}
	t0 := time.Now()
	logf := consoleLog(console)
	self := "/init"
	if len(args) > 0 && filepath.IsAbs(args[0]) {
		self = args[0]
	}
	switched := slices.Contains(args[1:], switchedArg)
	sys := &Linux{}
	env := &Env{
		Root:              "/",
		Sys:               sys,
		Logf:              logf,
		Switched:          switched,
		Environ:           Environ,
		DeviceWait:        5 * time.Second,
		AgentReadyTimeout: 10 * time.Second,
	}
	env.Agent = NewSupervisor(self, Environ, logf)
	p := startPID1(env.Agent)

	if switched {
		if err := readCmdline(env); err != nil {
			logf("cmdline: %v", err)
		}
		if !env.Quiet {
			logf("running from the root disk as PID 1 (%s)", self)
		}
	} else if err := Run(Early(), env); err != nil {
		return err
	}
	if err := Run(Late(), env); err != nil {
		return err
	}
	logf("boot done in %s", fmtDur(time.Since(t0)))

	a := Poweroff
	if env.Config.TestPoweroff {
		logf("%s=1: powering off", "boxd.test_poweroff")
	} else {
		a = <-p.requests
	}
	env.Agent.Stop()
	return Shutdown(sys, a, ShutdownConfig{Root: "/", Logf: logf, TermWait: 5 * time.Second, KillWait: 2 * time.Second})
}

// pid1 is the signal side of PID 1: it reaps children and turns the
// poweroff/reboot signals into requests.
type pid1 struct {
	agent    *Supervisor
	requests chan Action
}

func startPID1(agent *Supervisor) *pid1 {
	p := &pid1{agent: agent, requests: make(chan Action, 1)}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGCHLD, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1, syscall.SIGUSR2)
	// Children of the init that exec'd into this one may be zombies already.
	p.reap()
	go p.loop(sigs)
	return p
}

func (p *pid1) loop(sigs <-chan os.Signal) {
	for sig := range sigs {
		if a, ok := signalAction(sig); ok {
			select {
			case p.requests <- a:
			default: // a shutdown is already under way
			}
			continue
		}
		p.reap()
	}
}

// signalAction maps the busybox init conventions: poweroff sends SIGUSR2,
// halt SIGUSR1, reboot SIGTERM; Ctrl-Alt-Del is SIGINT.
func signalAction(sig os.Signal) (Action, bool) {
	switch sig {
	case syscall.SIGUSR1, syscall.SIGUSR2:
		return Poweroff, true
	case syscall.SIGTERM, syscall.SIGINT:
		return Reboot, true
	}
	return 0, false
}

// reap collects every exited child (orphans are re-parented to PID 1) and
// tells the supervisor, which restarts the agent if it was the agent.
func (p *pid1) reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		p.agent.Exited(pid, ws)
	}
}
