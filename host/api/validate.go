package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/boxd-dev/boxd/host/quota"
)

// Bounds on requests.
const (
	// MaxBody bounds a JSON request body. Larger stdin goes through a
	// streamed exec.
	MaxBody = 1 << 20
	// MaxNameLen is a DNS label's length limit.
	MaxNameLen = 63
	// MaxMemMiB and MaxDiskGiB bound sizes before any quota applies, so that
	// no arithmetic on them overflows.
	MaxMemMiB  = 1 << 20 // 1 TiB
	MaxDiskGiB = 1 << 16 // 64 TiB
	maxArgs    = 4096
	maxEnv     = 1024
	maxPath    = 4096
	maxUser    = 64
	maxTerm    = 64
	// MaxTimeoutMs bounds exec timeouts (30 days).
	MaxTimeoutMs = 30 * 24 * 3600 * 1000
	// MaxForkCount bounds one fork request's copies (quotas still apply).
	MaxForkCount = 64
)

// ValidName checks that name is a DNS label: 1 to 63 lowercase letters,
// digits and hyphens, neither starting nor ending with a hyphen. Names
// become guest hostnames and URL host labels, so they follow DNS rules.
func ValidName(name string) error {
	hint := "names are DNS labels: 1-63 lowercase letters, digits and '-', not starting or ending with '-' (e.g. task-1)"
	switch {
	case name == "":
		return Errorf(CodeInvalid, "empty VM name").WithHint("%s", hint)
	case len(name) > MaxNameLen:
		return Errorf(CodeInvalid, "VM name %.20q... is %d characters, the limit is %d", name, len(name), MaxNameLen).WithHint("%s", hint)
	case name[0] == '-' || name[len(name)-1] == '-':
		return Errorf(CodeInvalid, "VM name %q starts or ends with '-'", name).WithHint("%s", hint)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' {
			continue
		}
		if c >= 'A' && c <= 'Z' {
			return Errorf(CodeInvalid, "VM name %q has uppercase letters", name).WithHint("use %q", strings.ToLower(name))
		}
		return Errorf(CodeInvalid, "VM name %q has the character %q", name, string(rune(c))).WithHint("%s", hint)
	}
	return nil
}

// Validate checks r's fields against the hard bounds; quotas are the
// daemon's to check.
func (r *CreateRequest) Validate() error {
	if r.Name != "" {
		if err := ValidName(r.Name); err != nil {
			return err
		}
	}
	switch {
	case r.CPUs < 0 || r.CPUs > quota.MaxCPUs:
		return Errorf(CodeInvalid, "cpus %d: want 1..%d", r.CPUs, quota.MaxCPUs)
	case r.MemMiB < 0 || r.MemMiB > MaxMemMiB:
		return Errorf(CodeInvalid, "mem_mib %d: want %d..%d", r.MemMiB, quota.MinMemMiB, MaxMemMiB)
	case r.DiskGiB < 0 || r.DiskGiB > MaxDiskGiB:
		return Errorf(CodeInvalid, "disk_gib %d: want %d..%d", r.DiskGiB, quota.MinDiskGiB, MaxDiskGiB)
	}
	if r.From != "" {
		if err := ValidName(r.From); err != nil {
			return Errorf(CodeInvalid, "from: %s", AsError(err).Message)
		}
	}
	return nil
}

// Validate checks a fork request: the count, and the names it implies.
func (r *ForkRequest) Validate() error {
	if r.Count < 0 || r.Count > MaxForkCount {
		return Errorf(CodeInvalid, "count %d: want 1..%d", r.Count, MaxForkCount).WithHint("fork in several requests for more")
	}
	for _, n := range r.Names() {
		if n == "" {
			continue
		}
		if err := ValidName(n); err != nil {
			return err
		}
	}
	return nil
}

// Names returns the copies' names: Name for one, Name-1 ... Name-N for
// more, "" (generate one) for each when Name is empty.
func (r *ForkRequest) Names() []string {
	n := max(r.Count, 1)
	names := make([]string, n)
	for i := range names {
		switch {
		case r.Name == "":
		case n == 1:
			names[i] = r.Name
		default:
			names[i] = r.Name + "-" + strconv.Itoa(i+1)
		}
	}
	return names
}

// Validate checks an exec request; streaming says whether it opens a
// streamed session (which carries stdin in frames, not in the body).
func (r *ExecRequest) Validate(streaming bool) error {
	switch {
	case len(r.Argv) > 0 && r.Shell != "":
		return Errorf(CodeInvalid, "exec: both argv and shell given").WithHint("give one: argv runs a program, shell runs a sh -c string")
	case len(r.Argv) == 0 && r.Shell == "":
		return Errorf(CodeInvalid, "exec: no command").WithHint("give argv or shell")
	case len(r.Argv) > maxArgs:
		return Errorf(CodeInvalid, "exec: %d arguments, the limit is %d", len(r.Argv), maxArgs)
	case len(r.Argv) > 0 && r.Argv[0] == "":
		return Errorf(CodeInvalid, "exec: empty program name")
	case len(r.Env) > maxEnv:
		return Errorf(CodeInvalid, "exec: %d env entries, the limit is %d", len(r.Env), maxEnv)
	case r.TimeoutMs < 0 || r.TimeoutMs > MaxTimeoutMs:
		return Errorf(CodeInvalid, "exec: timeout_ms %d: want 0 (none)..%d", r.TimeoutMs, int64(MaxTimeoutMs))
	case len(r.User) > maxUser || strings.ContainsAny(r.User, "\x00/ \t\n"):
		return Errorf(CodeInvalid, "exec: bad user %q", r.User)
	case len(r.Term) > maxTerm || !printable(r.Term):
		return Errorf(CodeInvalid, "exec: bad term %q", r.Term)
	case !r.TTY && (r.Rows != 0 || r.Cols != 0 || r.Term != ""):
		return Errorf(CodeInvalid, "exec: rows, cols and term need tty")
	case streaming && r.Stdin != "":
		return Errorf(CodeInvalid, "exec: stdin in the body of a streamed session").WithHint("send stdin frames")
	}
	for _, a := range append([]string{r.Shell}, r.Argv...) {
		if strings.IndexByte(a, 0) >= 0 {
			return Errorf(CodeInvalid, "exec: an argument contains a NUL byte")
		}
	}
	for _, e := range r.Env {
		k, _, ok := strings.Cut(e, "=")
		if !ok || k == "" || strings.IndexByte(e, 0) >= 0 {
			return Errorf(CodeInvalid, "exec: env entry %q: want KEY=value", e)
		}
	}
	if r.Workdir != "" {
		if err := ValidPath(r.Workdir); err != nil {
			return Errorf(CodeInvalid, "exec: workdir: %s", err.(*Error).Message)
		}
	}
	return nil
}

// ValidPath checks a guest path: absolute, no NUL, at most 4096 bytes.
func ValidPath(p string) error {
	switch {
	case p == "":
		return Errorf(CodeInvalid, "empty path")
	case !strings.HasPrefix(p, "/"):
		return Errorf(CodeInvalid, "path %q is not absolute", p).WithHint("guest paths start with /")
	case len(p) > maxPath:
		return Errorf(CodeInvalid, "path of %d bytes, the limit is %d", len(p), maxPath)
	case strings.IndexByte(p, 0) >= 0:
		return Errorf(CodeInvalid, "path contains a NUL byte")
	}
	return nil
}

// ParseMode parses a file mode in octal ("0644", "755"); empty is 0644.
func ParseMode(s string) (fs.FileMode, error) {
	if s == "" {
		return 0o644, nil
	}
	n, err := strconv.ParseUint(s, 8, 32)
	if err != nil || n > 0o777 {
		return 0, Errorf(CodeInvalid, "mode %q: want octal permission bits, like 0644", s)
	}
	return fs.FileMode(n), nil
}

func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, c := range s {
		if c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

// DecodeJSON reads exactly one JSON document of at most MaxBody bytes into
// v, refusing unknown fields and trailing data.
func DecodeJSON(r io.Reader, v any) error {
	data, err := io.ReadAll(io.LimitReader(r, MaxBody+1))
	if err != nil {
		return Errorf(CodeInvalid, "read request: %v", err)
	}
	if len(data) > MaxBody {
		return Errorf(CodeInvalid, "request body over %d bytes", MaxBody)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return Errorf(CodeInvalid, "empty request body").WithHint("send a JSON object")
		}
		return Errorf(CodeInvalid, "bad request body: %v", err)
	}
	if dec.More() {
		return Errorf(CodeInvalid, "bad request body: data after the JSON object")
	}
	return nil
}

// DecodeCreate decodes and validates a create request.
func DecodeCreate(r io.Reader) (CreateRequest, error) {
	var req CreateRequest
	if err := DecodeJSON(r, &req); err != nil {
		return CreateRequest{}, err
	}
	return req, req.Validate()
}

// DecodeFork decodes and validates a fork request; an empty body is a
// fork of one copy with a generated name.
func DecodeFork(r io.Reader) (ForkRequest, error) {
	var req ForkRequest
	if err := decodeOptional(r, &req); err != nil {
		return ForkRequest{}, err
	}
	return req, req.Validate()
}

// DecodeSuspend decodes a suspend request; an empty body suspends in memory.
func DecodeSuspend(r io.Reader) (SuspendRequest, error) {
	var req SuspendRequest
	return req, decodeOptional(r, &req)
}

// decodeOptional is DecodeJSON that takes an empty body as the zero value.
func decodeOptional(r io.Reader, v any) error {
	data, err := io.ReadAll(io.LimitReader(r, MaxBody+1))
	if err != nil {
		return Errorf(CodeInvalid, "read request: %v", err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	return DecodeJSON(bytes.NewReader(data), v)
}

// DecodeExec decodes and validates an exec request.
func DecodeExec(r io.Reader, streaming bool) (ExecRequest, error) {
	var req ExecRequest
	if err := DecodeJSON(r, &req); err != nil {
		return ExecRequest{}, err
	}
	if err := req.Validate(streaming); err != nil {
		return ExecRequest{}, err
	}
	return req, nil
}
