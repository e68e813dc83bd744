package daemon

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/boxd-dev/boxd/agent"
	"github.com/boxd-dev/boxd/host/api"
	"github.com/boxd-dev/boxd/host/store"
)

var execSync = agent.ExecRequest{Argv: []string{"sync"}}

// view is the public form of a record.
func view(vm store.VM) api.VM {
	v := api.VM{
		Name: vm.Name, ID: vm.ID, State: string(vm.State),
		CPUs: vm.CPUs, MemMiB: vm.MemMiB, DiskGiB: vm.DiskGiB, VsockCID: vm.CID,
		Created: vm.Created, Restarts: vm.Restarts, Error: vm.Error, Snapshot: vm.Snapshot,
	}
	if o := vm.Origin; o != nil {
		v.Origin = &api.Origin{Kind: o.Kind, Parent: o.Parent, ParentID: o.ParentID, At: o.At}
	}
	if l := vm.Lease; l != nil {
		v.IP, v.MAC, v.TAP = l.Address.Addr().String(), l.MAC, l.TAP
	}
	if vm.Monitor != nil {
		v.PID = vm.Monitor.PID
	}
	if !vm.Started.IsZero() {
		t := vm.Started
		v.Started = &t
	}
	if e := vm.LastExit; e != nil {
		v.LastExit = &api.Exit{Status: e.Status, Signal: e.Signal, Result: e.Result, Detail: e.Detail, At: e.At}
	}
	return v
}

// List returns every VM, in name order.
func (d *Daemon) List(ctx context.Context) ([]api.VM, error) {
	vms, err := d.st.List()
	if err != nil {
		return nil, err
	}
	out := make([]api.VM, len(vms))
	for i, vm := range vms {
		out[i] = view(vm)
	}
	return out, nil
}

// Get returns one VM.
func (d *Daemon) Get(ctx context.Context, name string) (api.VM, error) {
	vm, err := d.st.Get(name)
	if err != nil {
		return api.VM{}, d.storeErr(name, err)
	}
	return view(vm), nil
}

// Version reports the daemon's version.
func (d *Daemon) Version() api.VersionInfo {
	v := d.cfg.Version
	v.API = api.Version
	return v
}

// Exec starts a command in a running VM.
func (d *Daemon) Exec(ctx context.Context, name string, req api.ExecRequest, openStdin bool) (api.Process, error) {
	c, _, err := d.agent(ctx, name)
	if err != nil {
		return nil, err
	}
	ar := agent.ExecRequest{
		Argv: req.Argv, Shell: req.Shell, Env: req.Env, Dir: req.Workdir, User: req.User,
		Timeout: time.Duration(req.TimeoutMs) * time.Millisecond, OpenStdin: openStdin,
	}
	if !openStdin && req.Stdin != "" {
		ar.Stdin = strings.NewReader(req.Stdin)
	}
	if req.TTY {
		ar.PTY = &agent.PTY{Rows: req.Rows, Cols: req.Cols, Term: req.Term}
		if ar.PTY.Rows == 0 || ar.PTY.Cols == 0 {
			ar.PTY.Rows, ar.PTY.Cols = 24, 80
		}
	}
	start := time.Now()
	p, err := c.Exec(ctx, ar)
	if err != nil {
		return startFailure(name, err, start)
	}
	return &process{p: p, start: start}, nil
}

// startFailure turns a command that could not start into what a shell would
// report — exit status 127 (not found) or 126 (not executable) with the
// reason on stderr — and anything else into an error.
func startFailure(name string, err error, start time.Time) (api.Process, error) {
	code := 0
	switch {
	case errors.Is(err, fs.ErrNotExist):
		code = 127
	case errors.Is(err, fs.ErrPermission):
		code = 126
	default:
		return nil, agentErr(name, err)
	}
	msg := "boxd: " + err.Error() + "\n"
	return &failedProcess{stderr: strings.NewReader(msg), res: api.ExecResult{ExitCode: code, DurationMs: ms(time.Since(start))}}, nil
}

// agentErr maps an error of the guest agent to an API error: the agent's own
// refusals are the request's fault, a lost connection is unavailability.
func agentErr(name string, err error) error {
	var re *agent.RemoteError
	switch {
	case errors.As(err, &re) && errors.Is(err, fs.ErrNotExist):
		return api.Errorf(api.CodeNotFound, "in VM %q: %s", name, re.Message)
	case errors.As(err, &re):
		return api.Errorf(api.CodeInvalid, "in VM %q: %s", name, re.Message)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	}
	return api.Errorf(api.CodeUnavailable, "VM %q: guest agent: %v", name, err).WithHint("see `boxd logs %s`", name)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// process adapts an agent.Process to api.Process.
type process struct {
	p     *agent.Process
	start time.Time
}

func (p *process) Stdin() io.WriteCloser {
	if p.p.Stdin == nil {
		return nil
	}
	return p.p.Stdin
}
func (p *process) Stdout() io.Reader               { return p.p.Stdout }
func (p *process) Stderr() io.Reader               { return p.p.Stderr }
func (p *process) Resize(rows, cols uint16) error  { return p.p.Resize(rows, cols) }
func (p *process) Signal(sig syscall.Signal) error { return p.p.Signal(sig) }
func (p *process) Close() error                    { return p.p.Close() }

func (p *process) Wait() (api.ExecResult, error) {
	st, err := p.p.Wait()
	if err != nil {
		return api.ExecResult{}, api.Errorf(api.CodeUnavailable, "exec: %v", err)
	}
	res := api.ExecResult{ExitCode: st.Code, TimedOut: st.TimedOut, DurationMs: ms(time.Since(p.start))}
	if st.Signal != 0 {
		res.ExitCode = 128 + int(st.Signal)
		res.Signal = unix.SignalName(st.Signal)
	}
	return res, nil
}

// failedProcess is a command that never started.
type failedProcess struct {
	stderr io.Reader
	res    api.ExecResult
}

func (f *failedProcess) Stdin() io.WriteCloser         { return discardCloser{} }
func (f *failedProcess) Stdout() io.Reader             { return strings.NewReader("") }
func (f *failedProcess) Stderr() io.Reader             { return f.stderr }
func (f *failedProcess) Resize(uint16, uint16) error   { return nil }
func (f *failedProcess) Signal(syscall.Signal) error   { return nil }
func (f *failedProcess) Close() error                  { return nil }
func (f *failedProcess) Wait() (api.ExecResult, error) { return f.res, nil }

type discardCloser struct{}

func (discardCloser) Write(p []byte) (int, error) { return len(p), nil }
func (discardCloser) Close() error                { return nil }

// ReadFile opens a regular file of a running VM for download.
func (d *Daemon) ReadFile(ctx context.Context, name, path string) (io.ReadCloser, api.FileInfo, error) {
	c, _, err := d.agent(ctx, name)
	if err != nil {
		return nil, api.FileInfo{}, err
	}
	rc, info, err := c.ReadFile(ctx, path)
	if err != nil {
		return nil, api.FileInfo{}, agentErr(name, err)
	}
	if !info.FileMode().IsRegular() {
		rc.Close()
		return nil, api.FileInfo{}, api.Errorf(api.CodeInvalid, "%s in VM %q is not a regular file", path, name).WithHint("cp copies one file at a time")
	}
	return &agentFile{rc: rc, name: name}, api.FileInfo{Size: info.Size, Mode: uint32(info.FileMode().Perm())}, nil
}

type agentFile struct {
	rc   io.ReadCloser
	name string
}

func (f *agentFile) Read(p []byte) (int, error) {
	n, err := f.rc.Read(p)
	if err != nil && err != io.EOF {
		err = agentErr(f.name, err)
	}
	return n, err
}

func (f *agentFile) Close() error { return f.rc.Close() }

// WriteFile writes r to path in a running VM (replacing it once complete)
// and returns how many bytes it wrote.
func (d *Daemon) WriteFile(ctx context.Context, name, path string, mode fs.FileMode, r io.Reader) (int64, error) {
	c, _, err := d.agent(ctx, name)
	if err != nil {
		return 0, err
	}
	cr := &countingReader{r: r}
	if err := c.WriteFile(ctx, path, mode, cr); err != nil {
		return 0, agentErr(name, err)
	}
	return cr.n, nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
