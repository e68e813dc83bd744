package agent

import (
	"context"
	"fmt"
	"io"
	"sync"
	"syscall"
	"time"

	"github.com/boxd-dev/boxd/agent/wire"
)

// ExecRequest describes a command to run in the guest.
type ExecRequest struct {
	// Argv is the program and its arguments, run without a shell (PATH is
	// searched). Exactly one of Argv and Shell is set.
	Argv []string
	// Shell is a command line for /bin/sh -c.
	Shell string
	// Env adds or overrides "KEY=value" entries of the agent's base
	// environment (PATH, HOME, USER, LOGNAME, SHELL, and TERM with a PTY).
	Env []string
	// Dir is the working directory; default the user's home, else "/".
	Dir string
	// User runs the command as a user name, "uid" or "uid:gid"; default the
	// agent's own user (root).
	User string

	// Stdin, if set, is copied to the process's standard input, which is then
	// closed. With OpenStdin instead, Process.Stdin is a writer. With neither,
	// the process reads /dev/null.
	Stdin     io.Reader
	OpenStdin bool
	// Stdout and Stderr, if set, receive the process's output, and Wait
	// returns only once it is all copied. Otherwise Process.Stdout and
	// Process.Stderr are readers that the caller must drain concurrently with
	// Wait: output is flow-controlled end to end, so an unread stream stalls
	// the process, as a full pipe would.
	Stdout, Stderr io.Writer

	// Timeout, if positive, kills the process group when it expires; Wait
	// then reports TimedOut. With KillGrace, SIGTERM comes first and SIGKILL
	// KillGrace later.
	Timeout   time.Duration
	KillGrace time.Duration

	// PTY runs the process on a pseudo-terminal; stdout carries the terminal's
	// output and stderr is empty.
	PTY *PTY
}

// PTY asks for a pseudo-terminal of the given size.
type PTY struct {
	Rows, Cols uint16
	// Term is TERM; default "xterm-256color".
	Term string
}

func (r *ExecRequest) args() (wire.ExecArgs, error) {
	a := wire.ExecArgs{
		Argv:      r.Argv,
		Env:       r.Env,
		Dir:       r.Dir,
		User:      r.User,
		Stdin:     r.Stdin != nil || r.OpenStdin,
		TimeoutNS: int64(r.Timeout),
		GraceNS:   int64(r.KillGrace),
	}
	switch {
	case len(r.Argv) > 0 && r.Shell != "":
		return a, fmt.Errorf("%w: both Argv and Shell set", errBadRequest)
	case r.Shell != "":
		a.Argv = []string{"/bin/sh", "-c", r.Shell}
	case len(r.Argv) == 0:
		return a, fmt.Errorf("%w: neither Argv nor Shell set", errBadRequest)
	}
	if r.Stdin != nil && r.OpenStdin {
		return a, fmt.Errorf("%w: both Stdin and OpenStdin set", errBadRequest)
	}
	if r.Timeout < 0 || r.KillGrace < 0 {
		return a, fmt.Errorf("%w: negative timeout", errBadRequest)
	}
	if r.PTY != nil {
		a.PTY = &wire.PTYArgs{Rows: r.PTY.Rows, Cols: r.PTY.Cols, Term: r.PTY.Term}
	}
	return a, nil
}

// Process is a running command: one started by Exec, or a background process
// followed by Attach.
type Process struct {
	// Pid is the process's pid in the guest.
	Pid int
	// ID is the background process ID (Attach only).
	ID string
	// Stdout and Stderr stream the output live, separately; nil where the
	// request supplied a writer. With a PTY all output is on Stdout.
	Stdout, Stderr io.Reader
	// Stdin is the process's standard input (ExecRequest.OpenStdin only).
	// Closing it is CloseStdin.
	Stdin io.WriteCloser

	ch      *wire.Channel
	ctx     context.Context
	stop    func() bool // stops the ctx watcher
	copies  sync.WaitGroup
	copyErr error // guarded by copyMu
	copyMu  sync.Mutex

	waitOnce sync.Once
	exit     ExitStatus
	dropped  int64
	err      error
}

// Exec starts a command and returns once it runs (or failed to start: a
// missing program, a bad user or directory). ctx covers the whole life of the
// process: cancelling it kills the process group, as does closing the client
// or losing the connection. A disconnected client never leaves a foreground
// process behind.
func (c *Client) Exec(ctx context.Context, req ExecRequest) (*Process, error) {
	args, err := req.args()
	if err != nil {
		return nil, fmt.Errorf("exec: %w", err)
	}
	var st wire.Started
	ch, err := c.open(ctx, wire.OpExec, args, &st)
	if err != nil {
		return nil, err
	}
	p := newProcess(ctx, ch, st.Pid, req.Stdout, req.Stderr)
	in := ch.Writer(wire.StreamStdin)
	switch {
	case req.Stdin != nil:
		go func() {
			if _, err := io.Copy(in, req.Stdin); err == nil {
				in.CloseWrite()
			}
		}()
	case req.OpenStdin:
		p.Stdin = stdinWriter{in}
	}
	return p, nil
}

// AttachOptions says where attached output goes; nil writers give readers
// (Process.Stdout, Process.Stderr) as in ExecRequest.
type AttachOptions struct {
	Stdout, Stderr io.Writer
}

// Attach follows background process id: it first replays the output still in
// the process's ring buffer (oldest bytes are dropped past its capacity), then
// streams new output until the process ends; Wait returns its status.
// Cancelling ctx or Close detaches without touching the process.
func (c *Client) Attach(ctx context.Context, id string, opts AttachOptions) (*Process, error) {
	var info ProcessInfo
	ch, err := c.open(ctx, wire.OpAttach, wire.IDArgs{ID: id}, &info)
	if err != nil {
		return nil, err
	}
	p := newProcess(ctx, ch, info.Pid, opts.Stdout, opts.Stderr)
	p.ID = info.ID
	return p, nil
}

// Spawn starts a background process: it outlives this connection, its output
// goes to a bounded ring buffer, and it is addressed by the returned ID.
// Stdin, OpenStdin, Stdout, Stderr and PTY must be unset.
func (c *Client) Spawn(ctx context.Context, req ExecRequest) (ProcessInfo, error) {
	if req.Stdin != nil || req.OpenStdin || req.Stdout != nil || req.Stderr != nil || req.PTY != nil {
		return ProcessInfo{}, fmt.Errorf("spawn: %w: background processes have no stdin, writers or pty", errBadRequest)
	}
	args, err := req.args()
	if err != nil {
		return ProcessInfo{}, fmt.Errorf("spawn: %w", err)
	}
	var info ProcessInfo
	err = c.call(ctx, wire.OpSpawn, args, &info)
	return info, err
}

func newProcess(ctx context.Context, ch *wire.Channel, pid int, stdout, stderr io.Writer) *Process {
	p := &Process{Pid: pid, ch: ch, ctx: ctx}
	p.stop = context.AfterFunc(ctx, ch.Abort)
	out, errs := ch.Reader(wire.StreamStdout), ch.Reader(wire.StreamStderr)
	p.Stdout, p.Stderr = out, errs
	if stdout != nil {
		p.Stdout = nil
		p.copy(stdout, out)
	}
	if stderr != nil {
		p.Stderr = nil
		p.copy(stderr, errs)
	}
	return p
}

func (p *Process) copy(w io.Writer, r io.Reader) {
	p.copies.Add(1)
	go func() {
		defer p.copies.Done()
		if _, err := io.Copy(w, r); err != nil {
			p.copyMu.Lock()
			if p.copyErr == nil {
				p.copyErr = err
				p.ch.Abort() // a writer that fails would otherwise stall the process
			}
			p.copyMu.Unlock()
		}
	}()
}

type stdinWriter struct{ s *wire.SendStream }

func (w stdinWriter) Write(p []byte) (int, error) { return w.s.Write(p) }
func (w stdinWriter) Close() error                { return w.s.CloseWrite() }

// CloseStdin closes the process's standard input (with a PTY: sends the
// terminal's EOF character).
func (p *Process) CloseStdin() error {
	if w := p.ch.Writer(wire.StreamStdin); w != nil {
		return w.CloseWrite()
	}
	return nil
}

// Resize changes the PTY's window size (SIGWINCH reaches the process).
func (p *Process) Resize(rows, cols uint16) error {
	return p.ch.SendControl(wire.Control{Resize: &wire.WinSize{Rows: rows, Cols: cols}})
}

// Signal sends sig to the process's process group.
func (p *Process) Signal(sig syscall.Signal) error {
	if sig <= 0 {
		return fmt.Errorf("signal %d: %w", sig, errBadRequest)
	}
	return p.ch.SendControl(wire.Control{Signal: int(sig)})
}

// Close stops following the process: an Exec'd process is killed, an
// attached background process is left running. Wait then returns an error.
func (p *Process) Close() error {
	p.ch.Abort()
	return nil
}

// Wait waits for the process to end and its output (to writers given in the
// request) to be copied, and returns how it ended. An error means the status
// is unknown: the connection or ctx ended first, or a writer failed.
func (p *Process) Wait() (ExitStatus, error) {
	p.waitOnce.Do(func() {
		msg, err := p.ch.Next(context.Background())
		p.stop()
		if err != nil {
			if p.ctx.Err() != nil {
				err = p.ctx.Err()
			}
			p.err = fmt.Errorf("wait: %w", err)
		} else if msg.Type != wire.TypeClose {
			p.err = fmt.Errorf("wait: %w: second reply", ErrProtocol)
			p.ch.Abort()
		} else if p.ID != "" {
			var end wire.AttachEnd
			p.err = wire.DecodeResult(msg.Payload, &end)
			p.exit, p.dropped = end.Exit, end.Dropped
		} else {
			p.err = wire.DecodeResult(msg.Payload, &p.exit)
		}
		p.copies.Wait()
		p.copyMu.Lock()
		if p.err == nil && p.copyErr != nil {
			p.err = fmt.Errorf("copy output: %w", p.copyErr)
		}
		p.copyMu.Unlock()
	})
	return p.exit, p.err
}

// Dropped reports, after Wait of an attached process, how many output bytes
// had left the ring buffer before they could be replayed.
func (p *Process) Dropped() int64 { return p.dropped }
