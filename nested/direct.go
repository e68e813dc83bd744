package nested

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
	// As in L1, the command is found through its own environment's PATH.
	path, err := lookPathIn(cfg.Cmd[0], envValue(env, "PATH"))
	if err != nil {
		return -1, fmt.Errorf("nested: %w", err)
	}
	cmd := exec.Command(path, cfg.Cmd[1:]...)
	cmd.Args[0] = cfg.Cmd[0]
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
	err = supervise(ctx, cmd)
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

// lookPathIn finds name like the shell does with PATH=pathList. A name with a
// slash is used as is (relative to the working directory).
func lookPathIn(name, pathList string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	for _, dir := range filepath.SplitList(pathList) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: %w in PATH %q", name, exec.ErrNotFound, pathList)
}
