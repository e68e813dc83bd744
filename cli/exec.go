package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/boxd-dev/boxd/host/api"
	"github.com/boxd-dev/boxd/host/client"
)

// execExitBoxd is exec's status when boxd itself failed (the command's own
// status is unknown), as container runners do.
const execExitBoxd = 125

type execFlags struct {
	host       hostFlags
	tty, stdin bool
	env        []string
	workdir    string
	user       string
	timeout    time.Duration
}

func newExecCmd() *cobra.Command {
	var f execFlags
	cmd := &cobra.Command{
		Use:   "exec NAME [flags] CMD [ARG...]",
		Short: "Run a command in a VM",
		Long: `Run a command in a VM. One CMD argument is a shell command line (sh -c);
several are a program and its arguments, run without a shell. Flags go
before CMD; everything from CMD on is the command's.

Output streams live and boxd exits with the command's exit status (128+N if
signal N killed it, 125 if boxd itself failed). With --json, boxd prints one
document when the command ends — output, stderr, exit_code, duration_ms — and
exits 0 (1 if boxd failed).

Standard input is forwarded when it is not a terminal (a pipe or a file), or
with -i; otherwise the command's stdin is empty.`,
		Example: `  boxd exec task-1 'python3 -c "print(6*7)"'
  boxd exec task-1 --json 'ls /'
  boxd exec task-1 --env FOO=1 --workdir /srv -- ls -l
  tar c . | boxd exec task-1 tar x -C /srv`,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			name, argv, err := parseExecArgs(cmd, args)
			if err != nil || name == "" {
				return err
			}
			return hostCmd(&f.host, func(ctx context.Context, cmd *cobra.Command, _ []string) error {
				return runExec(ctx, cmd, f, name, argv)
			})(cmd, nil)
		},
	}
	f.host.add(cmd)
	fl := cmd.Flags()
	fl.BoolVarP(&f.tty, "tty", "t", false, "run the command on a pseudo-terminal (stdin raw when it is a terminal)")
	fl.BoolVarP(&f.stdin, "interactive", "i", false, "forward standard input even when it is a terminal")
	fl.StringArrayVarP(&f.env, "env", "e", nil, "set an environment variable, KEY=VALUE (repeatable)")
	fl.StringVarP(&f.workdir, "workdir", "w", "", "working directory (default: the user's home)")
	fl.StringVarP(&f.user, "user", "u", "", "run as this user, uid or uid:gid (default: root)")
	fl.DurationVar(&f.timeout, "timeout", 0, "kill the command after this long, e.g. 30s or 5m (0: none)")
	return cmd
}

// parseExecArgs splits "NAME [flags] CMD..." (flags may also come before
// NAME): flags stop at CMD, so the command's own flags are left alone. An
// empty name with a nil error means help was printed.
func parseExecArgs(cmd *cobra.Command, args []string) (string, []string, error) {
	fs := cmd.Flags()
	fs.SetInterspersed(false)
	if err := fs.Parse(args); err != nil {
		return "", nil, err
	}
	if h, _ := fs.GetBool("help"); h {
		return "", nil, cmd.Help()
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return "", nil, errors.New("name the VM: boxd exec NAME CMD [ARG...]")
	}
	if err := fs.Parse(rest[1:]); err != nil {
		return "", nil, err
	}
	if h, _ := fs.GetBool("help"); h {
		return "", nil, cmd.Help()
	}
	if len(fs.Args()) == 0 {
		return "", nil, fmt.Errorf("no command: boxd exec %s CMD [ARG...]", rest[0])
	}
	return rest[0], fs.Args(), nil
}

func runExec(ctx context.Context, cmd *cobra.Command, f execFlags, name string, argv []string) error {
	if err := nameArg(name); err != nil {
		return execFailed(f.host.json, err)
	}
	req := api.ExecRequest{Env: f.env, Workdir: f.workdir, User: f.user, TimeoutMs: f.timeout.Milliseconds(), TTY: f.tty}
	if f.timeout < 0 {
		return execFailed(f.host.json, fmt.Errorf("--timeout %v: want a positive duration", f.timeout))
	}
	if len(argv) == 1 {
		req.Shell = argv[0]
	} else {
		req.Argv = argv
	}
	in := cmd.InOrStdin()
	_, inTerm := terminal(in)
	forward := f.stdin || !inTerm
	c := f.host.client()
	if f.host.json {
		var out, errs bytes.Buffer
		res, err := runSession(ctx, c, name, req, in, forward, &out, &errs)
		if err != nil {
			return execFailed(true, err)
		}
		res.Output, res.Stderr = out.String(), errs.String()
		return printJSON(cmd.OutOrStdout(), res)
	}
	res, err := runSession(ctx, c, name, req, in, forward, cmd.OutOrStdout(), cmd.ErrOrStderr())
	if err != nil {
		return execFailed(false, err)
	}
	if res.TimedOut {
		warnf(cmd, "command timed out after %v", f.timeout)
	}
	if res.ExitCode != 0 {
		return &exitError{code: res.ExitCode}
	}
	return nil
}

// execFailed is boxd's own failure in exec: status 125 without --json (the
// command's statuses own the rest), 1 with it (hostCmd prints the document).
func execFailed(asJSON bool, err error) error {
	if asJSON {
		return err
	}
	return &exitError{code: execExitBoxd, err: err}
}

// terminal returns r's descriptor if r is a terminal.
func terminal(r any) (int, bool) {
	f, ok := r.(*os.File)
	if !ok {
		return 0, false
	}
	fd := int(f.Fd())
	return fd, term.IsTerminal(fd)
}

// runSession runs one streamed exec: stdin forwarded (or closed at once),
// output copied, and, with a TTY on a local terminal, the terminal in raw
// mode and its size followed.
func runSession(ctx context.Context, c *client.Client, name string, req api.ExecRequest, in io.Reader, forward bool, stdout, stderr io.Writer) (api.ExecResult, error) {
	inFd, inTerm := terminal(in)
	if req.TTY {
		if req.Term == "" {
			req.Term = os.Getenv("TERM")
		}
		if fd, ok := terminal(stdout); ok {
			if cols, rows, err := term.GetSize(fd); err == nil && rows > 0 && cols > 0 {
				req.Rows, req.Cols = uint16(rows), uint16(cols)
			}
		}
	}
	s, err := c.StartExec(ctx, name, req)
	if err != nil {
		return api.ExecResult{}, err
	}
	if req.TTY && inTerm && forward {
		old, err := term.MakeRaw(inFd)
		if err == nil {
			defer term.Restore(inFd, old)
		}
	}
	if req.TTY {
		if fd, ok := terminal(stdout); ok {
			winch := make(chan os.Signal, 1)
			signal.Notify(winch, syscall.SIGWINCH)
			defer signal.Stop(winch)
			go func() {
				for range winch {
					if cols, rows, err := term.GetSize(fd); err == nil && rows > 0 && cols > 0 {
						s.Resize(uint16(rows), uint16(cols))
					}
				}
			}()
		}
	}
	if forward {
		// A read of stdin cannot be interrupted; the goroutine ends with
		// the process if the command exits first.
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := in.Read(buf)
				if n > 0 {
					if _, werr := s.WriteStdin(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					if err == io.EOF {
						s.CloseStdin()
					}
					return
				}
			}
		}()
	} else {
		s.CloseStdin()
	}
	res, err := s.Wait(stdout, stderr)
	if err != nil && ctx.Err() != nil {
		return res, fmt.Errorf("interrupted: %w", ctx.Err())
	}
	return res, err
}

func newShellCmd() *cobra.Command {
	var f hostFlags
	cmd := &cobra.Command{
		Use:   "shell NAME",
		Short: "Open an interactive shell in a VM (like ssh)",
		Long: `Open a login shell (bash if the guest has it, else sh) on a pseudo-terminal
in the VM, with the local terminal in raw mode. boxd exits with the shell's
exit status.`,
		Args: cobra.ExactArgs(1),
		RunE: hostCmd(&f, func(ctx context.Context, cmd *cobra.Command, args []string) error {
			if f.json {
				return errors.New("shell is interactive and prints no JSON: use `boxd exec NAME --json CMD`")
			}
			if err := nameArg(args[0]); err != nil {
				return err
			}
			req := api.ExecRequest{
				Shell: "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi",
				TTY:   true,
			}
			if req.Term = os.Getenv("TERM"); req.Term == "" {
				req.Term = "xterm-256color"
			}
			res, err := runSession(ctx, f.client(), args[0], req, cmd.InOrStdin(), true, cmd.OutOrStdout(), cmd.ErrOrStderr())
			if err != nil {
				return &exitError{code: execExitBoxd, err: err}
			}
			if res.ExitCode != 0 {
				return &exitError{code: res.ExitCode}
			}
			return nil
		}),
	}
	f.add(cmd)
	return cmd
}
