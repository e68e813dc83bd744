package api

import "time"

// Version is this API's version, the "v1" of every path.
const Version = 1

// CreateRequest asks for a new VM. Zero sizes take the daemon's defaults.
type CreateRequest struct {
	// Name is a DNS label (lowercase letters, digits, '-'); empty asks the
	// daemon to generate one.
	Name    string `json:"name,omitempty"`
	CPUs    int    `json:"cpus,omitempty"`
	MemMiB  int    `json:"mem_mib,omitempty"`
	DiskGiB int    `json:"disk_gib,omitempty"`
	// From, if set, names a golden VM (normally one suspended to disk) to
	// fork instead of booting the image: the new VM is a warm copy of it.
	// Sizes then come from the golden; any given must equal its own.
	From string `json:"from,omitempty"`
}

// SuspendRequest asks to suspend a running VM: in memory (its monitor
// stays, paused), or with ToDisk saved to a snapshot and its monitor ended.
type SuspendRequest struct {
	ToDisk bool `json:"to_disk,omitempty"`
}

// ForkRequest asks for Count (default 1) copies of a VM. With one copy
// Name is its name; with more, the copies are Name-1 ... Name-N. Without a
// name each copy gets a generated one.
type ForkRequest struct {
	Name  string `json:"name,omitempty"`
	Count int    `json:"count,omitempty"`
}

// ForkResult answers a fork: the copies that run (each verified) and, one
// per name, why the others were not handed out.
type ForkResult struct {
	Source string `json:"source"`
	// Kind is "fork" (a running or suspended source: memory, processes
	// and disk), "golden" (restored from a source suspended to disk) or
	// "clone" (a stopped source's disk, booted fresh).
	Kind   string      `json:"kind"`
	VMs    []VM        `json:"vms"`
	Errors []NameError `json:"errors,omitempty"`
	Timing ForkTiming  `json:"timing"`
}

// NameError says why the operation on one VM failed.
type NameError struct {
	Name  string `json:"name"`
	Error Error  `json:"error"`
}

// ForkTiming is where a fork's time went.
type ForkTiming struct {
	// TotalMs is from the request to the last copy running (verified).
	TotalMs float64 `json:"total_ms"`
	// ParentPausedMs is how long a running source was paused: pause,
	// disk copies, snapshot, resume. 0 when the source was not running.
	ParentPausedMs float64 `json:"parent_paused_ms"`
	// MonitorPauseUs, MonitorForkUs and MonitorResumeUs are the source
	// monitor's own time for each request (its MonitorUs).
	MonitorPauseUs  int64 `json:"monitor_pause_us"`
	MonitorForkUs   int64 `json:"monitor_fork_us"`
	MonitorResumeUs int64 `json:"monitor_resume_us"`
	// DiskCloneMs is the time to copy every disk; DiskClone says how
	// ("reflink", "cow-layer", "copy"); DiskCopiedBytes what was copied.
	DiskCloneMs     float64 `json:"disk_clone_ms"`
	DiskClone       string  `json:"disk_clone"`
	DiskCopiedBytes int64   `json:"disk_copied_bytes"`
}

// Timing is where the time of the request that returned a VM went.
type Timing struct {
	// TotalMs is from the request to the VM running (for a fork: its
	// checks passed).
	TotalMs float64 `json:"total_ms"`
	// MonitorUs is the monitor's own time (pause, resume), when it told.
	MonitorUs int64 `json:"monitor_us,omitempty"`
	// RestoreMs is from starting a restoring monitor to its agent answering.
	RestoreMs float64 `json:"restore_ms,omitempty"`
	// FixupMs is the guest's fix-ups (clock, entropy, network, host
	// name); VerifyMs the checks that follow.
	FixupMs  float64 `json:"fixup_ms,omitempty"`
	VerifyMs float64 `json:"verify_ms,omitempty"`
}

// Origin says which VM a forked VM came from.
type Origin struct {
	Kind     string    `json:"kind"` // fork, golden or clone
	Parent   string    `json:"parent"`
	ParentID string    `json:"parent_id"`
	At       time.Time `json:"at"`
}

// VM is the public view of a VM (boxd inspect, ls, new).
type VM struct {
	Name    string `json:"name"`
	ID      string `json:"id"`
	State   string `json:"state"`
	CPUs    int    `json:"cpus"`
	MemMiB  int    `json:"mem_mib"`
	DiskGiB int    `json:"disk_gib"`
	// IP is the guest's address, without prefix; empty without a network.
	IP       string    `json:"ip"`
	MAC      string    `json:"mac"`
	TAP      string    `json:"tap"`
	VsockCID uint32    `json:"vsock_cid"`
	PID      int       `json:"pid"` // the monitor's; 0 when none runs
	Created  time.Time `json:"created"`
	// Started is when the current (or last) monitor started.
	Started  *time.Time `json:"started"`
	Restarts int        `json:"restarts"`
	LastExit *Exit      `json:"last_exit"`
	Error    string     `json:"error,omitempty"`
	// Origin is set on forks; Snapshot on a VM suspended to disk (its
	// snapshot directory).
	Origin   *Origin `json:"origin,omitempty"`
	Snapshot string  `json:"snapshot,omitempty"`
	// Timing is set in answers to create, fork, suspend and resume.
	Timing *Timing `json:"timing,omitempty"`
}

// Exit is how a VM's monitor last ended.
type Exit struct {
	Status int       `json:"status"` // 0 poweroff, 1 monitor error, 3 reboot, 4 crash, 5 suspended to disk, -1 killed/unknown
	Signal string    `json:"signal,omitempty"`
	Result string    `json:"result,omitempty"` // the monitor's account: poweroff, reboot, crash, host-stop, suspended
	Detail string    `json:"detail,omitempty"`
	At     time.Time `json:"at"`
}

// VMList is the answer to GET /v1/vms.
type VMList struct {
	VMs []VM `json:"vms"`
}

// DestroyResult is the answer to DELETE: the VMs destroyed and, one per
// name, why the others were not.
type DestroyResult struct {
	Destroyed []string       `json:"destroyed"`
	Errors    []DestroyError `json:"errors,omitempty"`
}

// DestroyError says why one VM was not destroyed.
type DestroyError struct {
	Name  string `json:"name"`
	Error Error  `json:"error"`
}

// ExecRequest runs a command in a VM.
type ExecRequest struct {
	// Exactly one of Argv (run without a shell, PATH searched) and Shell
	// (run with /bin/sh -c) is set.
	Argv  []string `json:"argv,omitempty"`
	Shell string   `json:"shell,omitempty"`
	// Env adds "KEY=value" entries to the command's environment.
	Env     []string `json:"env,omitempty"`
	Workdir string   `json:"workdir,omitempty"`
	User    string   `json:"user,omitempty"`
	// TimeoutMs, if positive, kills the command after that long.
	TimeoutMs int64 `json:"timeout_ms,omitempty"`
	// TTY runs the command on a pseudo-terminal of Rows x Cols (default
	// 24x80) with TERM=Term; stderr is then merged into stdout.
	TTY  bool   `json:"tty,omitempty"`
	Rows uint16 `json:"rows,omitempty"`
	Cols uint16 `json:"cols,omitempty"`
	Term string `json:"term,omitempty"`
	// Stdin is the command's whole input, in the non-streaming mode only
	// (a streamed session sends stdin frames instead).
	Stdin string `json:"stdin,omitempty"`
}

// ExecResult is how a command ended. The non-streaming mode fills Output and
// Stderr; a stream's exit frame carries the rest.
type ExecResult struct {
	Output string `json:"output"`
	Stderr string `json:"stderr"`
	// ExitCode is the command's exit code; a command killed by a signal
	// reports 128+signal, as shells do.
	ExitCode   int     `json:"exit_code"`
	Signal     string  `json:"signal,omitempty"`
	TimedOut   bool    `json:"timed_out"`
	DurationMs float64 `json:"duration_ms"`
	// Truncated says Output or Stderr hit MaxOutput and lost their tails.
	Truncated bool `json:"truncated,omitempty"`
}

// FileResult answers an upload.
type FileResult struct {
	Path  string `json:"path"`
	Bytes int64  `json:"bytes"`
}

// FileInfo describes a file being downloaded (sent as headers).
type FileInfo struct {
	Size int64
	Mode uint32 // permission bits
}

// VersionInfo answers GET /v1/version.
type VersionInfo struct {
	Version   string `json:"version"`
	Commit    string `json:"commit,omitempty"`
	GoVersion string `json:"go_version"`
	API       int    `json:"api"`
}
