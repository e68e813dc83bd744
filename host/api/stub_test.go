package api

import (
	"context"
	"io"
	"io/fs"
	"strings"
	"sync"
	"syscall"
)

// stub is an in-memory Backend: VMs are names; exec echoes its shell string
// (or argv joined) to stdout, or copies stdin when the command is "cat".
type stub struct {
	mu  sync.Mutex
	vms map[string]bool
}

func newStub(names ...string) *stub {
	s := &stub{vms: map[string]bool{}}
	for _, n := range names {
		s.vms[n] = true
	}
	return s
}

func (s *stub) has(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.vms[name] {
		return NotFound(name)
	}
	return nil
}

func (s *stub) Create(_ context.Context, req CreateRequest) (VM, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.vms[req.Name] {
		return VM{}, Errorf(CodeExists, "exists")
	}
	s.vms[req.Name] = true
	return VM{Name: req.Name, State: "running", CPUs: req.CPUs}, nil
}

func (s *stub) List(context.Context) ([]VM, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []VM
	for n := range s.vms {
		out = append(out, VM{Name: n})
	}
	return out, nil
}

func (s *stub) Get(_ context.Context, name string) (VM, error) {
	return VM{Name: name}, s.has(name)
}

func (s *stub) Destroy(_ context.Context, name string) error {
	if err := s.has(name); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.vms, name)
	s.mu.Unlock()
	return nil
}

func (s *stub) Reboot(_ context.Context, name string) (VM, error) {
	return VM{Name: name, Restarts: 1}, s.has(name)
}

func (s *stub) Exec(_ context.Context, name string, req ExecRequest, openStdin bool) (Process, error) {
	if err := s.has(name); err != nil {
		return nil, err
	}
	p := &stubProc{code: len(req.Argv)}
	text := req.Shell + strings.Join(req.Argv, " ")
	var in io.Reader = strings.NewReader(req.Stdin)
	if openStdin {
		pr, pw := io.Pipe()
		p.stdin, in = pw, pr
	}
	if text != "cat" {
		in = strings.NewReader(text)
	}
	p.out = in
	return p, nil
}

func (s *stub) Logs(_ context.Context, name string, _ bool, w io.Writer) error {
	if err := s.has(name); err != nil {
		return err
	}
	_, err := io.WriteString(w, "console of "+name+"\n")
	return err
}

func (s *stub) ReadFile(_ context.Context, name, path string) (io.ReadCloser, FileInfo, error) {
	if err := s.has(name); err != nil {
		return nil, FileInfo{}, err
	}
	return io.NopCloser(strings.NewReader("content of " + path)), FileInfo{Size: int64(len("content of " + path)), Mode: 0o600}, nil
}

func (s *stub) WriteFile(_ context.Context, name, _ string, _ fs.FileMode, r io.Reader) (int64, error) {
	if err := s.has(name); err != nil {
		return 0, err
	}
	return io.Copy(io.Discard, r)
}

func (s *stub) Suspend(_ context.Context, name string, req SuspendRequest) (VM, error) {
	if err := s.has(name); err != nil {
		return VM{}, err
	}
	state := "suspended"
	if req.ToDisk {
		state = "suspended-to-disk"
	}
	return VM{Name: name, State: state}, nil
}

func (s *stub) Resume(_ context.Context, name string) (VM, error) {
	if err := s.has(name); err != nil {
		return VM{}, err
	}
	return VM{Name: name, State: "running"}, nil
}

func (s *stub) Fork(_ context.Context, name string, req ForkRequest) (ForkResult, error) {
	if err := s.has(name); err != nil {
		return ForkResult{}, err
	}
	res := ForkResult{Source: name, Kind: "fork"}
	for _, n := range req.Names() {
		res.VMs = append(res.VMs, VM{Name: n, State: "running"})
	}
	return res, nil
}

func (s *stub) Version() VersionInfo { return VersionInfo{Version: "stub", API: Version} }

type stubProc struct {
	stdin io.WriteCloser
	out   io.Reader
	code  int
}

func (p *stubProc) Stdin() io.WriteCloser       { return p.stdin }
func (p *stubProc) Stdout() io.Reader           { return p.out }
func (p *stubProc) Stderr() io.Reader           { return strings.NewReader("") }
func (p *stubProc) Resize(uint16, uint16) error { return nil }
func (p *stubProc) Signal(syscall.Signal) error { return nil }
func (p *stubProc) Wait() (ExecResult, error)   { return ExecResult{ExitCode: p.code}, nil }
func (p *stubProc) Close() error {
	if p.stdin != nil {
		p.stdin.Close()
	}
	return nil
}
