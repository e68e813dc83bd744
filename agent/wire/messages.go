package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
	"time"
)

// Protocol version. A peer with a different Major is refused at the handshake;
// Minor grows when a message gains optional fields or an op is added (guarded
// by a capability), so peers of one Major interoperate.
const (
	Major = 1
	Minor = 0
)

// VsockPort is the vsock port the guest agent listens on.
const VsockPort = 1024

// Capabilities a server may announce in its Hello.
const (
	CapExec       = "exec"       // exec with pipes, timeouts, credentials
	CapPTY        = "pty"        // exec with a pseudo-terminal and resize
	CapBackground = "background" // spawn, list, attach, signal, wait
	CapFiles      = "files"      // write, read, stat, list, remove, mkdir
	CapEvents     = "events"     // subscribe: ports, process exits, OOM kills
	CapLifecycle  = "lifecycle"  // reseed, set_network, set_clock, reset_vsock
)

// Window bounds. DefaultWindow is the receive window each side announces unless
// configured otherwise: how many unacknowledged bytes the peer may send on one
// stream of one channel.
const (
	MinWindow     = MaxDataChunk
	MaxWindow     = 16 << 20
	DefaultWindow = 512 << 10
)

// Hello is the first frame each way. Its layout is frozen across majors: a
// future peer must still be able to read Major from it to refuse cleanly.
type Hello struct {
	Major        int      `json:"major"`
	Minor        int      `json:"minor"`
	Capabilities []string `json:"capabilities,omitempty"`
	// Window is the sender's receive window per stream, in bytes.
	Window uint32 `json:"window"`
	// Agent identifies the software, for logs ("boxd-agent/1.0").
	Agent string `json:"agent,omitempty"`
}

// Has reports whether the peer announced capability c.
func (h Hello) Has(c string) bool {
	for _, x := range h.Capabilities {
		if x == c {
			return true
		}
	}
	return false
}

// Ops, the Open frame's op names.
const (
	OpPing          = "ping"
	OpExec          = "exec"
	OpSpawn         = "spawn"
	OpListProcesses = "list_processes"
	OpAttach        = "attach"
	OpSignal        = "signal"
	OpWait          = "wait"
	OpWriteFile     = "write_file"
	OpReadFile      = "read_file"
	OpStat          = "stat"
	OpListDir       = "list_dir"
	OpRemove        = "remove"
	OpMkdir         = "mkdir"
	OpSubscribe     = "subscribe"
	OpReseed        = "reseed"
	OpSetNetwork    = "set_network"
	OpSetClock      = "set_clock"
	OpResetVsock    = "reset_vsock"
)

// Open is the payload of an Open frame.
type Open struct {
	Op   string          `json:"op"`
	Args json.RawMessage `json:"args,omitempty"`
}

// Result is the payload of Reply and Close frames: an error or a result.
type Result struct {
	Error  *Error          `json:"error,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
}

// Control is the payload of a Control frame (one field set).
type Control struct {
	Signal int      `json:"signal,omitempty"`
	Resize *WinSize `json:"resize,omitempty"`
}

// WinSize is a terminal size.
type WinSize struct {
	Rows uint16 `json:"rows"`
	Cols uint16 `json:"cols"`
}

// ExecArgs are the arguments of exec and spawn.
type ExecArgs struct {
	Argv []string `json:"argv"`
	Env  []string `json:"env,omitempty"`
	Dir  string   `json:"dir,omitempty"`
	User string   `json:"user,omitempty"`
	// Stdin says the client will send stdin; otherwise it is /dev/null.
	Stdin     bool     `json:"stdin,omitempty"`
	TimeoutNS int64    `json:"timeout_ns,omitempty"`
	GraceNS   int64    `json:"grace_ns,omitempty"`
	PTY       *PTYArgs `json:"pty,omitempty"`
}

// PTYArgs asks for a pseudo-terminal.
type PTYArgs struct {
	Rows uint16 `json:"rows"`
	Cols uint16 `json:"cols"`
	Term string `json:"term,omitempty"`
}

// Started is exec's Reply and spawn's result.
type Started struct {
	ID  string `json:"id,omitempty"`
	Pid int    `json:"pid"`
}

// ExitStatus is how a process ended.
type ExitStatus struct {
	// Code is the exit code, or -1 if the process was killed by a signal.
	Code int `json:"code"`
	// Signal is the signal that killed the process, or 0.
	Signal     syscall.Signal `json:"signal,omitempty"`
	CoreDumped bool           `json:"core_dumped,omitempty"`
	// TimedOut says the agent killed the process because its timeout expired.
	TimedOut bool `json:"timed_out,omitempty"`
}

func (e ExitStatus) String() string {
	s := fmt.Sprintf("exit status %d", e.Code)
	if e.Signal != 0 {
		s = "killed by signal " + e.Signal.String()
	}
	if e.TimedOut {
		s += " (timeout)"
	}
	return s
}

// ProcessInfo describes a background process.
type ProcessInfo struct {
	ID      string      `json:"id"`
	Pid     int         `json:"pid"`
	Argv    []string    `json:"argv"`
	Started time.Time   `json:"started"`
	Exit    *ExitStatus `json:"exit,omitempty"` // nil while running
}

// IDArgs names a background process (attach, wait).
type IDArgs struct {
	ID string `json:"id"`
}

// SignalArgs signals a background process.
type SignalArgs struct {
	ID     string `json:"id"`
	Signal int    `json:"signal"`
}

// AttachEnd is the Close result of attach.
type AttachEnd struct {
	Exit ExitStatus `json:"exit"`
	// Dropped counts output bytes that left the ring before this reader saw them.
	Dropped int64 `json:"dropped,omitempty"`
}

// PathArgs names a file (read_file, stat, list_dir).
type PathArgs struct {
	Path string `json:"path"`
}

// WriteFileArgs starts an upload.
type WriteFileArgs struct {
	Path string `json:"path"`
	Mode uint32 `json:"mode"`
}

// RemoveArgs removes a path.
type RemoveArgs struct {
	Path      string `json:"path"`
	Recursive bool   `json:"recursive,omitempty"`
}

// MkdirArgs creates a directory and its parents.
type MkdirArgs struct {
	Path string `json:"path"`
	Mode uint32 `json:"mode"`
}

// FileInfo describes a file. Mode holds os.FileMode bits.
type FileInfo struct {
	Name    string    `json:"name"`
	Size    int64     `json:"size"`
	Mode    uint32    `json:"mode"`
	ModTime time.Time `json:"mtime"`
	Uid     uint32    `json:"uid"`
	Gid     uint32    `json:"gid"`
	// Link is the target of a symbolic link (list_dir reports links unfollowed).
	Link string `json:"link,omitempty"`
}

// FileMode returns Mode as an os.FileMode.
func (f FileInfo) FileMode() os.FileMode { return os.FileMode(f.Mode) }

// IsDir reports whether the file is a directory.
func (f FileInfo) IsDir() bool { return f.FileMode().IsDir() }

// ReseedArgs carries entropy for the guest's pool.
type ReseedArgs struct {
	Seed []byte `json:"seed"`
}

// MaxSeed bounds a reseed.
const MaxSeed = 4096

// NetworkConfig is the guest's network identity, set after boot, restore or fork.
type NetworkConfig struct {
	// Interface defaults to "eth0".
	Interface string `json:"interface,omitempty"`
	// MAC, if set, replaces the interface's hardware address.
	MAC string `json:"mac,omitempty"`
	// Address is the interface address in CIDR form ("10.0.0.2/24"); existing
	// addresses of the same family are replaced.
	Address string `json:"address,omitempty"`
	// Gateway becomes the default route.
	Gateway  string   `json:"gateway,omitempty"`
	DNS      []string `json:"dns,omitempty"`
	Hostname string   `json:"hostname,omitempty"`
}

// ClockArgs sets the realtime clock.
type ClockArgs struct {
	UnixNano int64 `json:"unix_nano"`
}

// EventType names an Event.
type EventType string

// Event types.
const (
	EventPortOpen    EventType = "port_open"
	EventPortClose   EventType = "port_close"
	EventProcessExit EventType = "process_exit"
	EventOOMKill     EventType = "oom_kill"
	// EventOverflow says the subscriber fell behind and Lost events were dropped.
	EventOverflow EventType = "overflow"
)

// Event is one line of a subscription's stream (newline-delimited JSON on the
// stdout stream).
type Event struct {
	Type    EventType    `json:"type"`
	Time    time.Time    `json:"time"`
	Port    *Port        `json:"port,omitempty"`
	Process *ProcessExit `json:"process,omitempty"`
	OOM     *OOMKill     `json:"oom,omitempty"`
	Lost    int          `json:"lost,omitempty"`
}

// MaxEventLine bounds one event line on the wire.
const MaxEventLine = 64 << 10

// Port is a listening TCP socket.
type Port struct {
	// Proto is "tcp" or "tcp6".
	Proto string `json:"proto"`
	Addr  string `json:"addr"`
	Port  uint16 `json:"port"`
}

// ProcessExit reports the end of a process the agent started.
type ProcessExit struct {
	// ID is set for background processes.
	ID   string     `json:"id,omitempty"`
	Pid  int        `json:"pid"`
	Exit ExitStatus `json:"exit"`
}

// OOMKill reports a process killed by the kernel's OOM killer.
type OOMKill struct {
	Pid  int    `json:"pid"`
	Comm string `json:"comm"`
}

// Error codes. Each maps to an io/fs sentinel where one fits, so errors.Is
// works on the host as it would on the guest.
const (
	CodeNotFound    = "not_found"
	CodeExist       = "exist"
	CodePermission  = "permission"
	CodeInvalid     = "invalid"
	CodeUnsupported = "unsupported"
	CodeInternal    = "internal"
)

// Error is an error reported by the peer.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }

// Is maps codes onto the io/fs sentinels.
func (e *Error) Is(target error) bool {
	switch e.Code {
	case CodeNotFound:
		return target == fs.ErrNotExist
	case CodeExist:
		return target == fs.ErrExist
	case CodePermission:
		return target == fs.ErrPermission
	case CodeInvalid:
		return target == fs.ErrInvalid
	case CodeUnsupported:
		return target == errors.ErrUnsupported
	}
	return false
}

// ErrorOf converts a local error into its wire form.
func ErrorOf(err error) *Error {
	if err == nil {
		return nil
	}
	var we *Error
	if errors.As(err, &we) {
		return we
	}
	code := CodeInternal
	switch {
	case errors.Is(err, fs.ErrNotExist):
		code = CodeNotFound
	case errors.Is(err, fs.ErrExist):
		code = CodeExist
	case errors.Is(err, fs.ErrPermission):
		code = CodePermission
	case errors.Is(err, fs.ErrInvalid):
		code = CodeInvalid
	case errors.Is(err, errors.ErrUnsupported):
		code = CodeUnsupported
	}
	return &Error{Code: code, Message: err.Error()}
}

// Errorf builds an Error with a code.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// EncodeResult builds a Result payload from a value or an error.
func EncodeResult(v any, err error) []byte {
	r := Result{Error: ErrorOf(err)}
	if err == nil && v != nil {
		b, merr := json.Marshal(v)
		if merr != nil {
			r.Error = ErrorOf(fmt.Errorf("encode result: %w", merr))
		} else {
			r.Result = b
		}
	}
	b, _ := json.Marshal(r) // Result of raw JSON and strings always marshals
	return b
}

// DecodeResult decodes a Result payload: its error, or its result into v (v may
// be nil to ignore the result).
func DecodeResult(p []byte, v any) error {
	var r Result
	if err := json.Unmarshal(p, &r); err != nil {
		return fmt.Errorf("%w: result: %w", ErrProtocol, err)
	}
	if r.Error != nil {
		return r.Error
	}
	if v == nil || len(r.Result) == 0 {
		return nil
	}
	if err := json.Unmarshal(r.Result, v); err != nil {
		return fmt.Errorf("%w: result: %w", ErrProtocol, err)
	}
	return nil
}
