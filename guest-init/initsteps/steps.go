package initsteps

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/boxd-dev/boxd/guest-init/cmdline"
)

// Step is one boot step.
type Step struct {
	Name string
	Run  func(*Env) error
	// Concurrent, set instead of Run, makes the step a group whose steps
	// run at the same time (see Parallel).
	Concurrent []Step
	// Fatal steps stop the boot when they fail. A non-fatal step can still
	// escalate one failure by returning an error wrapping ErrFatal.
	Fatal bool
}

// ErrFatal, wrapped by a step's error, stops the boot even if the step is
// not Fatal.
var ErrFatal = errors.New("fatal")

// skipped is returned by a step with nothing to do.
type skipped struct{ why string }

func (s skipped) Error() string { return "skipped: " + s.why }

// Skip returns the error a step returns when it has nothing to do.
func Skip(why string) error { return skipped{why} }

// Env is what steps act on.
type Env struct {
	// Root prefixes every path steps touch: "/" in a guest, a temporary
	// directory in tests.
	Root string
	Sys  System
	Logf func(format string, args ...any)

	// Config is the parsed command line (the cmdline step fills it).
	Config      cmdline.Config
	cmdlineRead bool
	// Quiet (the kernel's "quiet") logs failures only.
	Quiet bool
	// Switched is true in the init that was re-executed on the root disk.
	Switched bool
	// Environ is the environment of the re-executed init and of the agent.
	Environ []string
	// DeviceWait bounds the wait for the root disk's device node.
	DeviceWait time.Duration

	// Agent is started by the agent step; PID1 owns it afterwards.
	Agent *Supervisor
	// AgentReadyTimeout bounds the agent step's wait for readiness.
	AgentReadyTimeout time.Duration
	agentErr          atomic.Pointer[error] // why the agent start step failed

}

// Path joins a guest path onto env.Root.
func (e *Env) Path(p string) string { return filepath.Join(e.Root, p) }

// Run executes steps in order, logging one line per step, and stops at the
// first fatal failure, which it returns.
func Run(steps []Step, env *Env) error {
	for _, s := range steps {
		t0 := time.Now()
		var err error
		if s.Concurrent != nil {
			err = runConcurrent(s.Concurrent, env)
		} else {
			err = s.Run(env)
		}
		took := time.Since(t0)
		var sk skipped
		switch {
		case err == nil:
			if !env.Quiet {
				env.Logf("%s: ok (%s)", s.Name, fmtDur(took))
			}
		case errors.As(err, &sk):
			if !env.Quiet {
				env.Logf("%s: %v", s.Name, err)
			}
		case s.Fatal || errors.Is(err, ErrFatal):
			env.Logf("%s: FAILED (fatal): %v", s.Name, err)
			return fmt.Errorf("%s: %w", s.Name, err)
		default:
			env.Logf("%s: failed, continuing: %v", s.Name, err)
		}
	}
	return nil
}

// Parallel is one step that runs steps concurrently, each logged on its own
// line as Run does, and waits for all of them: for independent steps whose
// time is mostly waiting (on the disk, the kernel, a child starting up).
// The group fails, fatally, if one of them fails fatally. Its steps must
// not depend on each other and only read Env (Logf is called concurrently).
func Parallel(name string, steps ...Step) Step {
	return Step{Name: name, Concurrent: steps}
}

func runConcurrent(steps []Step, e *Env) error {
	errs := make([]error, len(steps))
	var wg sync.WaitGroup
	for i, s := range steps {
		wg.Go(func() { errs[i] = Run([]Step{s}, e) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrFatal, err)
	}
	return nil
}

func fmtDur(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}
