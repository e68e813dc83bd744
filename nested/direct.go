package nested

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"syscall"
	"time"
)

// runDirect runs the command on the host, for hosts whose /dev/kvm already
// has hardware virtualization. It keeps L1's contract: stdin is /dev/null,
// EnvOut names the output directory, and nothing the command started
// outlives the run.
func runDirect(ctx context.Context, cfg Config) (int, error) {
	env := cfg.Env
	if cfg.OutDir != "" {
		env = overrideEnv(env, map[string]string{EnvOut: cfg.OutDir})
	}
	cmd := exec.Command(cfg.Cmd[0], cfg.Cmd[1:]...)
	cmd.Dir, cmd.Env = cfg.Dir, env
	cmd.Stdout, cmd.Stderr = cfg.Stdout, cfg.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// Output pipes held open by a process that escaped the group must not
	// hold Run forever.
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		return -1, fmt.Errorf("nested: %w", err)
	}
	if cfg.onStart != nil {
		cfg.onStart(cmd.Process.Pid)
	}
	err := supervise(ctx, cmd)
	// Whatever the command left running in its group goes too, as it would
	// when L1 powers off. The group's ID stays reserved while members remain.
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	if ctx.Err() != nil {
		return -1, stopErr(ctx, cfg.Timeout, false)
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ee.ExitCode(), nil
	case errors.Is(err, exec.ErrWaitDelay):
		return cmd.ProcessState.ExitCode(), nil
	}
	return -1, fmt.Errorf("nested: %w", err)
}
