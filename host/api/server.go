package api

import (
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"strings"
	"sync"
	"syscall"
)

// Backend does what the API asks: the daemon implements it. Names reaching
// it are valid; requests are validated. Errors that are not *Error are
// reported as internal errors.
type Backend interface {
	Create(ctx context.Context, req CreateRequest) (VM, error)
	List(ctx context.Context) ([]VM, error)
	Get(ctx context.Context, name string) (VM, error)
	Destroy(ctx context.Context, name string) error
	Reboot(ctx context.Context, name string) (VM, error)
	// Suspend pauses a running VM in memory or saves it to disk; Resume
	// runs a suspended VM again.
	Suspend(ctx context.Context, name string, req SuspendRequest) (VM, error)
	Resume(ctx context.Context, name string) (VM, error)
	// Fork copies a VM (see ForkRequest). An error means no copy was
	// attempted; copies that failed are in ForkResult.Errors.
	Fork(ctx context.Context, name string, req ForkRequest) (ForkResult, error)
	// Exec starts a command. With openStdin the Process has a Stdin;
	// otherwise the command's stdin is empty (req.Stdin, if set, is it).
	Exec(ctx context.Context, name string, req ExecRequest, openStdin bool) (Process, error)
	// Logs copies the VM's console log to w; with follow it then copies
	// what is appended until ctx ends or the VM is destroyed.
	Logs(ctx context.Context, name string, follow bool, w io.Writer) error
	ReadFile(ctx context.Context, name, path string) (io.ReadCloser, FileInfo, error)
	WriteFile(ctx context.Context, name, path string, mode fs.FileMode, r io.Reader) (int64, error)
	Version() VersionInfo
}

// Process is a command started by Backend.Exec. Stdout and Stderr must be
// drained concurrently with Wait.
type Process interface {
	Stdin() io.WriteCloser // nil unless the exec opened stdin
	Stdout() io.Reader
	Stderr() io.Reader
	Resize(rows, cols uint16) error
	Signal(sig syscall.Signal) error
	// Wait returns how the command ended (ExitCode, Signal, TimedOut,
	// DurationMs), after its output reached EOF on Stdout and Stderr.
	Wait() (ExecResult, error)
	// Close kills the command if it still runs.
	Close() error
}

// Server is the API's http.Handler.
type Server struct {
	b    Backend
	mux  *http.ServeMux
	logf func(format string, args ...any)
}

// NewServer returns the handler serving b. logf receives internal errors
// (nil discards them).
func NewServer(b Backend, logf func(format string, args ...any)) *Server {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	s := &Server{b: b, mux: http.NewServeMux(), logf: logf}
	s.route("/v1/version", map[string]http.HandlerFunc{"GET": s.version})
	s.route("/v1/vms", map[string]http.HandlerFunc{"GET": s.list, "POST": s.create, "DELETE": s.destroyMany})
	s.route("/v1/vms/{name}", map[string]http.HandlerFunc{"GET": s.inspect, "DELETE": s.destroyOne})
	s.route("/v1/vms/{name}/reboot", map[string]http.HandlerFunc{"POST": s.reboot})
	s.route("/v1/vms/{name}/suspend", map[string]http.HandlerFunc{"POST": s.suspend})
	s.route("/v1/vms/{name}/resume", map[string]http.HandlerFunc{"POST": s.resume})
	s.route("/v1/vms/{name}/fork", map[string]http.HandlerFunc{"POST": s.fork})
	s.route("/v1/vms/{name}/exec", map[string]http.HandlerFunc{"POST": s.exec})
	s.route("/v1/vms/{name}/logs", map[string]http.HandlerFunc{"GET": s.logs})
	s.route("/v1/vms/{name}/files", map[string]http.HandlerFunc{"GET": s.download, "PUT": s.upload})
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, Errorf(CodeNotFound, "no API route %s %s", r.Method, r.URL.Path).WithHint("see docs/api.md; this daemon serves /v1"))
	})
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// route registers a path whose handlers differ by method, validating the
// {name} wildcard once for all of them, and answering other methods with a
// JSON error.
func (s *Server) route(pattern string, methods map[string]http.HandlerFunc) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		h, ok := methods[r.Method]
		if !ok {
			allowed := make([]string, 0, len(methods))
			for m := range methods {
				allowed = append(allowed, m)
			}
			w.Header().Set("Allow", strings.Join(allowed, ", "))
			e := Errorf(CodeInvalid, "method %s not allowed on %s", r.Method, r.URL.Path)
			writeJSON(w, http.StatusMethodNotAllowed, errorBody{e})
			return
		}
		if strings.Contains(pattern, "{name}") {
			if err := ValidName(r.PathValue("name")); err != nil {
				writeError(w, err)
				return
			}
		}
		h(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, err error) {
	e := AsError(err)
	writeJSON(w, e.Status(), errorBody{e})
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	e := AsError(err)
	if e.Code == CodeInternal {
		s.logf("%s %s: %v", r.Method, r.URL.Path, err)
	}
	writeError(w, e)
}

func (s *Server) version(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.b.Version())
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	vms, err := s.b.List(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if vms == nil {
		vms = []VM{}
	}
	writeJSON(w, http.StatusOK, VMList{VMs: vms})
}

func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	req, err := DecodeCreate(r.Body)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	vm, err := s.b.Create(r.Context(), req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, vm)
}

func (s *Server) inspect(w http.ResponseWriter, r *http.Request) {
	vm, err := s.b.Get(r.Context(), r.PathValue("name"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, vm)
}

func (s *Server) reboot(w http.ResponseWriter, r *http.Request) {
	vm, err := s.b.Reboot(r.Context(), r.PathValue("name"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, vm)
}

func (s *Server) suspend(w http.ResponseWriter, r *http.Request) {
	req, err := DecodeSuspend(r.Body)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	vm, err := s.b.Suspend(r.Context(), r.PathValue("name"), req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, vm)
}

func (s *Server) resume(w http.ResponseWriter, r *http.Request) {
	vm, err := s.b.Resume(r.Context(), r.PathValue("name"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, vm)
}

func (s *Server) fork(w http.ResponseWriter, r *http.Request) {
	req, err := DecodeFork(r.Body)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	res, err := s.b.Fork(r.Context(), r.PathValue("name"), req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if res.VMs == nil {
		res.VMs = []VM{}
	}
	status := http.StatusCreated
	if len(res.VMs) == 0 {
		status = http.StatusOK // nothing was created; Errors say why
	}
	writeJSON(w, status, res)
}

func (s *Server) destroyOne(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := s.b.Destroy(r.Context(), name); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, DestroyResult{Destroyed: []string{name}})
}

// destroyMany destroys ?name=A&name=B... or, with ?all=true, every VM, in
// parallel; one failure does not stop the others.
func (s *Server) destroyMany(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	names := q["name"]
	all := q.Get("all")
	switch {
	case all != "" && all != "true" && all != "false":
		s.fail(w, r, Errorf(CodeInvalid, "all=%q: want true or false", all))
		return
	case all == "true" && len(names) > 0:
		s.fail(w, r, Errorf(CodeInvalid, "both all=true and names given"))
		return
	case all == "true":
		vms, err := s.b.List(r.Context())
		if err != nil {
			s.fail(w, r, err)
			return
		}
		for _, vm := range vms {
			names = append(names, vm.Name)
		}
	case len(names) == 0:
		s.fail(w, r, Errorf(CodeInvalid, "no VMs named").WithHint("give ?name=NAME (repeatable) or ?all=true"))
		return
	}
	seen := map[string]bool{}
	for _, n := range names {
		if err := ValidName(n); err != nil {
			s.fail(w, r, err)
			return
		}
		if seen[n] {
			s.fail(w, r, Errorf(CodeInvalid, "VM %q named twice", n))
			return
		}
		seen[n] = true
	}
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Go(func() { errs[i] = s.b.Destroy(r.Context(), n) })
	}
	wg.Wait()
	res := DestroyResult{Destroyed: []string{}}
	for i, n := range names {
		if errs[i] != nil {
			e := AsError(errs[i])
			if e.Code == CodeInternal {
				s.logf("destroy %s: %v", n, errs[i])
			}
			res.Errors = append(res.Errors, DestroyError{Name: n, Error: *e})
			continue
		}
		res.Destroyed = append(res.Destroyed, n)
	}
	writeJSON(w, http.StatusOK, res)
}
