package supervisor

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Spec is everything one monitor is started with. Args renders it as the
// flags of "boxd vmm".
type Spec struct {
	ID      string // the VM's ID, for messages
	Kernel  string
	Initrd  string
	Cmdline string
	CPUs    int
	MemMiB  int
	Disks   []Disk
	// TAP and MAC give the guest a virtio-net device; empty TAP: none.
	TAP, MAC string
	// CID and VsockPath give the guest a virtio-vsock device whose
	// host side is the Unix socket VsockPath (the agent is dialled there).
	CID       uint32
	VsockPath string
	// Restore, if set, is a snapshot directory the monitor resumes from
	// (boxd vmm --restore) instead of booting Kernel: vCPUs, memory size,
	// kernel and command line then come from the snapshot, and the devices
	// here must match the snapshot's (same disks, net and vsock present).
	Restore string
	// MemDir is the tmpfs folder of the guest's memory file (--mem-dir);
	// ControlPath the monitor's control socket (--control). Either may be
	// empty.
	MemDir, ControlPath string
	// LayerDir (--layer-dir) is a folder of the VM's on the filesystem of
	// its snapshots on disk, where the monitor links memory restored from
	// them, so the VM can be forked after they are deleted; may be empty.
	LayerDir string
	// ConsolePath receives the serial console, LogPath the monitor's own
	// stdout and stderr (both appended), ResultPath its --result-json.
	ConsolePath string
	LogPath     string
	ResultPath  string
}

// Disk is one virtio-blk disk.
type Disk struct {
	Path     string
	ReadOnly bool
	Serial   string
}

// Args returns the "boxd vmm" arguments of s, without "vmm" itself.
func (s Spec) Args() []string {
	var a []string
	if s.Restore != "" {
		a = append(a, "--restore", s.Restore)
	} else {
		a = append(a, "--kernel", s.Kernel, "--cpus", strconv.Itoa(s.CPUs), "--mem-mib", strconv.Itoa(s.MemMiB))
	}
	a = append(a, "--console", s.ConsolePath, "--result-json", s.ResultPath)
	if s.MemDir != "" {
		a = append(a, "--mem-dir", s.MemDir)
	}
	if s.LayerDir != "" {
		a = append(a, "--layer-dir", s.LayerDir)
	}
	if s.ControlPath != "" {
		a = append(a, "--control", s.ControlPath)
	}
	if s.Restore == "" && s.Initrd != "" {
		a = append(a, "--initrd", s.Initrd)
	}
	if s.Restore == "" && s.Cmdline != "" {
		a = append(a, "--cmdline", s.Cmdline)
	}
	for _, d := range s.Disks {
		v := d.Path
		if d.ReadOnly {
			v += ",ro"
		}
		if d.Serial != "" {
			v += ",id=" + d.Serial
		}
		a = append(a, "--disk", v)
	}
	if s.TAP != "" {
		a = append(a, "--net", "tap="+s.TAP+",mac="+s.MAC)
	}
	if s.VsockPath != "" {
		a = append(a, "--vsock", fmt.Sprintf("cid=%d,path=%s", s.CID, s.VsockPath))
	}
	return a
}

func (s Spec) validate() error {
	switch {
	case s.ID == "":
		return fmt.Errorf("spec without an ID")
	case s.Kernel == "" && s.Restore == "" || s.ConsolePath == "" || s.ResultPath == "" || s.LogPath == "":
		return fmt.Errorf("spec of %s: kernel (or a snapshot to restore), console, result and log paths are required", s.ID)
	case s.Restore == "" && (s.CPUs < 1 || s.MemMiB < 1):
		return fmt.Errorf("spec of %s: %d vCPUs, %d MiB", s.ID, s.CPUs, s.MemMiB)
	}
	for _, d := range s.Disks {
		// A comma would split the --disk value into bogus options.
		if strings.Contains(d.Path, ",") || strings.Contains(d.Serial, ",") {
			return fmt.Errorf("spec of %s: disk %q: commas are not allowed", s.ID, d.Path)
		}
	}
	if strings.ContainsAny(s.TAP+s.MAC+s.VsockPath, ",") {
		return fmt.Errorf("spec of %s: commas are not allowed in TAP, MAC or vsock path", s.ID)
	}
	return nil
}

// Result is what a monitor writes to --result-json when it ends (see
// cli/vmm.go); only the fields the daemon uses.
type Result struct {
	Result     string `json:"result"` // poweroff, reboot, crash, host-stop, suspended
	Detail     string `json:"detail"`
	ExitStatus int    `json:"exit_status"`
}

// ReadResult reads a monitor's result file.
func ReadResult(path string) (Result, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Result{}, err
	}
	var r Result
	if err := json.Unmarshal(data, &r); err != nil {
		return Result{}, fmt.Errorf("result %s: %w", path, err)
	}
	return r, nil
}
