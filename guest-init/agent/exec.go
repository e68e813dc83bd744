package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/boxd-dev/boxd/agent/wire"
)

// readChunk is the read size for process output: one Data frame at most.
const readChunk = 32 << 10

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// proc is a started process in its own process group (its own session with a
// PTY), so signals, timeouts and disconnects reach the whole tree.
type proc struct {
	pid   int
	pidfd *os.File   // reaps pid; nil without pidfd support
	tty   *os.File   // PTY master, or nil
	stdin *os.File   // write end of the stdin pipe, or nil
	outs  []*os.File // read ends: stdout, stderr (or the PTY master alone)

	timedOut atomic.Bool
	exited   chan struct{} // closed once the process has been reaped
	status   wire.ExitStatus
}

// start starts argv as described by a, returning once it runs.
func (s *Server) start(a wire.ExecArgs, withStdin bool) (*proc, error) {
	if len(a.Argv) == 0 || a.Argv[0] == "" {
		return nil, wire.Errorf(wire.CodeInvalid, "empty argv")
	}
	if a.TimeoutNS < 0 || a.GraceNS < 0 {
		return nil, wire.Errorf(wire.CodeInvalid, "negative timeout")
	}
	u, err := lookupUser(a.User)
	if err != nil {
		return nil, err
	}
	env := []string{"PATH=" + defaultPath, "HOME=" + u.home, "USER=" + u.name, "LOGNAME=" + u.name, "SHELL=/bin/sh"}
	if a.PTY != nil {
		term := a.PTY.Term
		if term == "" {
			term = "xterm-256color"
		}
		env = append(env, "TERM="+term)
	}
	env = append(env, a.Env...)
	path, err := lookPath(a.Argv[0], envValue(env, "PATH"))
	if err != nil {
		return nil, err
	}
	dir := a.Dir
	if dir == "" {
		dir = "/"
		if fi, err := os.Stat(u.home); err == nil && fi.IsDir() {
			dir = u.home
		}
	}
	sys := &syscall.SysProcAttr{Credential: u.cred}
	var files [3]*os.File // the child's stdin, stdout, stderr
	p := &proc{exited: make(chan struct{})}
	var childEnds []*os.File
	defer func() {
		for _, f := range childEnds {
			f.Close()
		}
	}()
	if a.PTY != nil {
		master, slave, err := openPTY()
		if err != nil {
			return nil, fmt.Errorf("open pty: %w", err)
		}
		if err := setWinsize(master, a.PTY.Rows, a.PTY.Cols); err != nil {
			master.Close()
			slave.Close()
			return nil, fmt.Errorf("size pty: %w", err)
		}
		childEnds = append(childEnds, slave)
		files = [3]*os.File{slave, slave, slave}
		sys.Setsid = true // a session of its own: job control, SIGHUP on hangup
		sys.Setctty = true
		sys.Ctty = 0
		p.tty = master
		p.outs = []*os.File{master}
	} else {
		sys.Setpgid = true
		for i := 0; i < 2; i++ {
			r, w, err := os.Pipe()
			if err != nil {
				p.closeFiles()
				return nil, fmt.Errorf("pipe: %w", err)
			}
			childEnds = append(childEnds, w)
			p.outs = append(p.outs, r)
		}
		files[1], files[2] = childEnds[0], childEnds[1]
		if withStdin {
			r, w, err := os.Pipe()
			if err != nil {
				p.closeFiles()
				return nil, fmt.Errorf("pipe: %w", err)
			}
			childEnds = append(childEnds, r)
			files[0] = r
			p.stdin = w
		} else {
			null, err := os.Open(os.DevNull)
			if err != nil {
				p.closeFiles()
				return nil, err
			}
			childEnds = append(childEnds, null)
			files[0] = null
		}
	}
	p.pid, p.pidfd, err = spawn(path, a.Argv, env, dir, files, sys)
	if err != nil {
		p.closeFiles()
		return nil, startError(err)
	}
	go p.reap()
	if a.TimeoutNS > 0 {
		go p.enforceTimeout(time.Duration(a.TimeoutNS), time.Duration(a.GraceNS))
	}
	return p, nil
}

func (p *proc) closeFiles() {
	for _, f := range p.outs {
		f.Close()
	}
	if p.stdin != nil {
		p.stdin.Close()
	}
}

func startError(err error) error {
	switch {
	case errors.Is(err, os.ErrNotExist):
		return wire.Errorf(wire.CodeNotFound, "start: %v", err)
	case errors.Is(err, os.ErrPermission):
		return wire.Errorf(wire.CodePermission, "start: %v", err)
	}
	return fmt.Errorf("start: %w", err)
}

func (p *proc) reap() {
	ws, err := waitPid(p.pid, p.pidfd)
	var st wire.ExitStatus
	switch {
	case err != nil:
		st.Code = -1
	case ws.Signaled():
		st = wire.ExitStatus{Code: -1, Signal: ws.Signal(), CoreDumped: ws.CoreDump()}
	default:
		st.Code = ws.ExitStatus()
	}
	st.TimedOut = p.timedOut.Load()
	p.status = st
	close(p.exited)
}

// signal sends sig to the process group. After the leader is reaped the group
// may live on in descendants; they are what a kill is meant to reach.
func (p *proc) signal(sig syscall.Signal) error {
	if err := syscall.Kill(-p.pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %v: %w", sig, err)
	}
	return nil
}

func (p *proc) enforceTimeout(timeout, grace time.Duration) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.exited:
		return
	case <-t.C:
	}
	p.timedOut.Store(true)
	if grace > 0 {
		p.signal(syscall.SIGTERM)
		t.Reset(grace)
		select {
		case <-p.exited:
			return
		case <-t.C:
		}
	}
	p.signal(syscall.SIGKILL)
}

// pump copies one output file to w until EOF, a failed w, or — once the
// process has exited — WaitDelay without any output. Then it closes f.
func (s *Server) pump(p *proc, f *os.File, w io.Writer) error {
	defer f.Close()
	buf := make([]byte, readChunk)
	for {
		select {
		case <-p.exited:
			f.SetReadDeadline(time.Now().Add(s.opts.WaitDelay))
		default:
		}
		n, err := f.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err != nil {
			// EIO: a PTY master whose slave side is gone. Deadline: only
			// descendants hold the pipe open and they are quiet.
			if errors.Is(err, os.ErrDeadlineExceeded) {
				// Go fails a read whose deadline has passed without trying
				// it: on a loaded machine the process's last output may
				// still be in the pipe. Take what is there, without waiting.
				return drain(f, w, buf)
			}
			if err == io.EOF || errors.Is(err, syscall.EIO) {
				return nil
			}
			return err
		}
	}
}

// drain copies what f holds right now to w, never blocking.
func drain(f *os.File, w io.Writer, buf []byte) error {
	// RawConn.Read also refuses to run once the deadline has passed; the
	// callback below never waits, so no deadline is needed.
	f.SetReadDeadline(time.Time{})
	rc, err := f.SyscallConn()
	if err != nil {
		return nil
	}
	for {
		var n int
		var rerr error
		if err := rc.Read(func(fd uintptr) bool {
			n, rerr = syscall.Read(int(fd), buf)
			return true // never wait for readiness
		}); err != nil {
			return nil
		}
		if n <= 0 || rerr != nil {
			return nil
		}
		if _, err := w.Write(buf[:n]); err != nil {
			return err
		}
	}
}

// watchExit arms the pumps' idle deadline as soon as the process exits, for a
// pump blocked in Read when it happens.
func (s *Server) watchExit(p *proc) {
	<-p.exited
	for _, f := range p.outs {
		f.SetReadDeadline(time.Now().Add(s.opts.WaitDelay))
	}
}

// execForeground runs exec: the process lives as long as its channel.
func (s *Server) execForeground(ch *wire.Channel, raw json.RawMessage) {
	var a wire.ExecArgs
	if err := decodeArgs(raw, &a); err != nil {
		ch.Close(wire.EncodeResult(nil, err))
		return
	}
	p, err := s.start(a, a.Stdin)
	if err != nil {
		ch.Close(wire.EncodeResult(nil, err))
		return
	}
	ctx := ch.Context()
	// Whatever ends the channel first — client abort, disconnect — kills the
	// group; a foreground process never outlives its client.
	stopKill := context.AfterFunc(ctx, func() { p.signal(syscall.SIGKILL) })
	// An interactive process (stdin, PTY) waits for its client, which waits
	// for the Reply: no reason to hold it. See coalesce.go.
	hold := s.opts.Coalesce
	if a.Stdin || p.tty != nil {
		hold = 0
	}
	reply := newLazyReply(ch, wire.EncodeResult(wire.Started{Pid: p.pid}, nil), hold)

	go s.watchExit(p)
	var wg sync.WaitGroup
	streams := []wire.Stream{wire.StreamStdout, wire.StreamStderr}
	for i, f := range p.outs {
		w := ch.Writer(streams[i])
		wg.Go(func() {
			if err := s.pump(p, f, replyFirst{reply, w}); err == nil {
				holdEOF(p, reply, w, hold)
			}
		})
	}
	if p.tty != nil {
		ch.Writer(wire.StreamStderr).CloseWrite()
	}
	if a.Stdin {
		go s.feedStdin(p, ch.Reader(wire.StreamStdin))
	}
	go s.controls(ctx, p, ch.Controls())

	<-p.exited
	wg.Wait()
	stopKill()
	if p.stdin != nil {
		p.stdin.Close()
	}
	s.hub.publish(wire.Event{Type: wire.EventProcessExit, Process: &wire.ProcessExit{Pid: p.pid, Exit: p.status}})
	reply.close(wire.EncodeResult(p.status, nil))
}

// feedStdin copies the client's stdin stream to the process. At the client's
// EOF it closes the pipe, or with a PTY types the EOF character (^D).
func (s *Server) feedStdin(p *proc, r io.Reader) {
	dst := p.stdin
	if p.tty != nil {
		dst = p.tty
	}
	_, err := io.Copy(dst, r)
	if err != nil {
		return // the process stopped reading or the channel ended
	}
	if p.tty != nil {
		dst.Write([]byte{4})
		return
	}
	dst.Close()
}

// controls applies signal and resize requests until the channel ends.
func (s *Server) controls(ctx context.Context, p *proc, ctl <-chan []byte) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.exited:
			return
		case b := <-ctl:
			var c wire.Control
			if decodeArgs(b, &c) != nil {
				continue
			}
			if c.Signal > 0 && c.Signal < 65 {
				p.signal(syscall.Signal(c.Signal))
			}
			if c.Resize != nil && p.tty != nil {
				setWinsize(p.tty, c.Resize.Rows, c.Resize.Cols)
			}
		}
	}
}

// setWinsize sets a terminal's size through SyscallConn rather than Fd: Fd
// would switch the master to blocking mode (losing read deadlines) and races
// with Close.
func setWinsize(f *os.File, rows, cols uint16) error {
	if rows == 0 {
		rows = 24
	}
	if cols == 0 {
		cols = 80
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		ierr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
	}); err != nil {
		return err
	}
	return ierr
}

// lookPath resolves name against the command's PATH, not the agent's: the
// agent may run with a bare environment.
func lookPath(name, path string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", wire.Errorf(wire.CodeNotFound, "%s: executable not found in PATH", name)
}

// envValue returns the last value of key in env, as exec's deduplication does.
func envValue(env []string, key string) string {
	v := ""
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok && k == key {
			v = val
		}
	}
	return v
}
