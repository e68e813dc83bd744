package switchroot

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Errors Execute wraps, so init can tell whether it still runs from the
// initramfs.
var (
	ErrNotSwitched  = errors.New("root not switched, still on the initramfs")
	ErrHalfSwitched = errors.New("root switch failed after the root moved")
)

// BinDir is where the initramfs's binaries appear in the new root (a
// read-only bind mount inside its /run tmpfs). Init re-executes itself from
// here.
const BinDir = "/run/boxd/bin"

// Spec describes one switch. Paths are absolute paths of the guest.
type Spec struct {
	Device  string        // block device holding the new root, e.g. /dev/vda
	FSType  string        // its filesystem, e.g. ext4
	Options string        // mount data, e.g. "" or "errors=remount-ro"
	NewRoot string        // where the disk is mounted first, e.g. /newroot
	Wait    time.Duration // how long to wait for Device to appear
	// Move lists the mounts carried into the new root, in order (children
	// travel with their parents: /dev/pts with /dev). A path that is not a
	// mount point is skipped.
	Move []string
	// Bin is the initramfs directory holding init and the guest tools (boxd,
	// busybox and its applets). It is bind-mounted read-only at BinDir in the
	// new root, and kept when the initramfs is emptied: nothing is copied.
	Bin string
	// Init is the file name of the init binary in Bin.
	Init string
	// Args are the arguments of the re-executed init after its path.
	Args []string
	// Quiet logs failures only, not each operation.
	Quiet bool
}

// OpKind is what one Op does.
type OpKind string

// The operations of a plan, in the order Plan emits them.
const (
	OpWaitDevice OpKind = "wait-device" // Path: until it exists, at most Spec.Wait
	OpMkdir      OpKind = "mkdir"       // Path, Mode
	OpMountDisk  OpKind = "mount-disk"  // Source on Path
	OpMove       OpKind = "move"        // mount at Source moves to Path
	OpBind       OpKind = "bind"        // directory Source bind-mounted read-only on Path
	OpMoveRoot   OpKind = "move-root"   // mount at Source becomes /; chroot into it
	OpDeleteOld  OpKind = "delete-old"  // empty the old root (not crossing filesystems)
	OpExec       OpKind = "exec"        // Path with Args; does not return on success
)

// Op is one step of a switch.
type Op struct {
	Kind   OpKind
	Source string      `json:",omitempty"`
	Path   string      `json:",omitempty"`
	Mode   os.FileMode `json:",omitempty"`
	Args   []string    `json:",omitempty"`
}

func (o Op) String() string {
	var b strings.Builder
	b.WriteString(string(o.Kind))
	if o.Source != "" {
		b.WriteString(" " + o.Source)
	}
	if o.Path != "" {
		b.WriteString(" " + o.Path)
	}
	if o.Mode != 0 {
		m := uint32(o.Mode.Perm())
		if o.Mode&os.ModeSticky != 0 {
			m |= 0o1000
		}
		fmt.Fprintf(&b, " %#o", m)
	}
	if len(o.Args) > 0 {
		b.WriteString(" " + strings.Join(o.Args, " "))
	}
	return b.String()
}

// Plan returns the operations that carry out s.
func Plan(s Spec) ([]Op, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	nr := path.Clean(s.NewRoot)
	ops := []Op{
		{Kind: OpWaitDevice, Path: s.Device},
		{Kind: OpMkdir, Path: nr, Mode: 0o755},
		{Kind: OpMountDisk, Source: s.Device, Path: nr},
	}
	for _, m := range s.Move {
		mode := os.FileMode(0o755)
		if m == "/tmp" {
			mode = 0o777 | os.ModeSticky
		}
		ops = append(ops, Op{Kind: OpMkdir, Path: path.Join(nr, m), Mode: mode})
	}
	for _, m := range s.Move {
		ops = append(ops, Op{Kind: OpMove, Source: m, Path: path.Join(nr, m)})
	}
	self := path.Join(BinDir, s.Init)
	ops = append(ops,
		Op{Kind: OpMkdir, Path: path.Join(nr, BinDir), Mode: 0o755},
		Op{Kind: OpBind, Source: s.Bin, Path: path.Join(nr, BinDir)},
		Op{Kind: OpMoveRoot, Source: nr},
		Op{Kind: OpDeleteOld, Path: "/"},
		Op{Kind: OpExec, Path: self, Args: append([]string{self}, s.Args...)},
	)
	return ops, nil
}

func (s Spec) check() error {
	abs := func(what, p string) error {
		if !path.IsAbs(p) || p != path.Clean(p) || p == "/" {
			return fmt.Errorf("switch root: %s %q is not a clean absolute path", what, p)
		}
		return nil
	}
	if err := abs("device", s.Device); err != nil {
		return err
	}
	if s.FSType == "" {
		return errors.New("switch root: no filesystem type")
	}
	if err := abs("new root", s.NewRoot); err != nil {
		return err
	}
	if err := abs("bin directory", s.Bin); err != nil {
		return err
	}
	if s.Init == "" || strings.Contains(s.Init, "/") || s.Init == "." || s.Init == ".." {
		return fmt.Errorf("switch root: init %q is not a file name", s.Init)
	}
	if strings.HasPrefix(s.NewRoot+"/", s.Bin+"/") || strings.HasPrefix(s.Bin+"/", s.NewRoot+"/") {
		return fmt.Errorf("switch root: bin directory %s overlaps the new root %s", s.Bin, s.NewRoot)
	}
	runMoved := false
	for _, m := range s.Move {
		if err := abs("mount", m); err != nil {
			return err
		}
		if strings.HasPrefix(s.NewRoot+"/", m+"/") || strings.HasPrefix(m+"/", s.NewRoot+"/") {
			return fmt.Errorf("switch root: mount %s overlaps the new root %s", m, s.NewRoot)
		}
		runMoved = runMoved || m == "/run"
	}
	if !runMoved {
		// The binaries must appear on a tmpfs in the new root, never on the
		// disk: /run must come along.
		return errors.New("switch root: /run must be among the moved mounts")
	}
	return nil
}

// Sys is what Execute needs from the kernel. Paths it receives are host paths
// (Execute joins guest paths onto its root).
type Sys interface {
	Mount(source, target, fstype string, flags uintptr, data string) error
	Unmount(target string, flags int) error
	// MoveMount is mount(source, target, MS_MOVE).
	MoveMount(source, target string) error
	// IsMountPoint reports whether a filesystem is mounted at path.
	IsMountPoint(path string) (bool, error)
	Chdir(dir string) error
	Chroot(dir string) error
	Exec(path string, argv, env []string) error
}

// Logf receives one line per operation.
type Logf func(format string, args ...any)

// Execute runs ops (from Plan) against the filesystem under root ("/" in a
// guest, a temporary directory in tests). File operations (mkdir, copy,
// delete) use the os package under root; mounts, chroot and exec go to sys.
// On success it does not return: the last op executes the new init.
func Execute(root string, s Spec, ops []Op, sys Sys, env []string, logf Logf) error {
	host := func(p string) string { return filepath.Join(root, filepath.FromSlash(p)) }
	var mountedDisk, bound string
	var moved []Op // carried mounts, to move back on failure
	var oldRoot *os.File
	rollback := func(err error) error {
		if cerr := sys.Chdir(host("/")); cerr != nil {
			logf("switch root: chdir /: %v", cerr)
		}
		if bound != "" {
			if uerr := sys.Unmount(bound, 0); uerr != nil {
				logf("switch root: unmounting %s: %v", bound, uerr)
			}
		}
		for i := len(moved) - 1; i >= 0; i-- {
			if rerr := sys.MoveMount(host(moved[i].Path), host(moved[i].Source)); rerr != nil {
				logf("switch root: moving %s back: %v", moved[i].Source, rerr)
			}
		}
		if mountedDisk != "" {
			if uerr := sys.Unmount(mountedDisk, 0); uerr != nil {
				logf("switch root: unmounting %s: %v", mountedDisk, uerr)
			}
		}
		return fmt.Errorf("%w: %w", ErrNotSwitched, err)
	}
	switched := false
	t0 := time.Now()
	last := t0
	for _, op := range ops {
		// Each line gives the time since the previous one, so a slow step
		// shows as the line after it.
		now := time.Now()
		switch {
		case s.Quiet: // failures are still returned, and logged by the caller
		case op.Kind == OpExec:
			logf("switch root: %s (+%s, switched in %s)", op, ms(now.Sub(last)), ms(now.Sub(t0)))
		default:
			logf("switch root: %s (+%s)", op, ms(now.Sub(last)))
		}
		last = now
		var err error
		switch op.Kind {
		case OpWaitDevice:
			err = waitFor(host(op.Path), s.Wait)
		case OpMkdir:
			err = mkdirIfMissing(host(op.Path), op.Mode)
		case OpMountDisk:
			if err = sys.Mount(op.Source, host(op.Path), s.FSType, 0, s.Options); err == nil {
				mountedDisk = host(op.Path)
			}
		case OpMove:
			var ok bool
			if ok, err = sys.IsMountPoint(host(op.Source)); err == nil && !ok {
				logf("switch root: %s is not a mount point, left behind", op.Source)
				continue
			}
			if err == nil {
				if err = sys.MoveMount(host(op.Source), host(op.Path)); err == nil {
					moved = append(moved, op)
				}
			}
		case OpBind:
			if err = sys.Mount(host(op.Source), host(op.Path), "", unix.MS_BIND, ""); err == nil {
				bound = host(op.Path)
				// A bind mount takes MS_RDONLY only on a remount.
				err = sys.Mount("", host(op.Path), "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, "")
			}
		case OpMoveRoot:
			// The old root stays reachable through this descriptor once it is
			// no longer "/", so it can be emptied afterwards.
			if oldRoot, err = os.Open(host("/")); err != nil {
				break
			}
			defer oldRoot.Close()
			// As switch_root(8) does: from inside the new root, move it onto
			// "/" and chroot to "." — a lookup of "/" from the old root
			// would not see a mount stacked on the root itself.
			if err = sys.Chdir(host(op.Source)); err != nil {
				break
			}
			if err = sys.MoveMount(".", host("/")); err != nil {
				break
			}
			switched = true
			if err = sys.Chroot("."); err == nil {
				err = sys.Chdir("/")
			}
		case OpDeleteOld:
			// Best effort: what cannot be deleted only costs memory.
			// Bin stays: the new root's BinDir shows the same files.
			keep := map[string]bool{
				strings.Split(strings.TrimPrefix(s.NewRoot, "/"), "/")[0]: true,
				strings.Split(strings.TrimPrefix(s.Bin, "/"), "/")[0]:     true,
			}
			n, derr := deleteTree(oldRoot, keep, logf)
			if !s.Quiet {
				logf("switch root: freed %d initramfs entries", n)
			}
			err = derr
		case OpExec:
			err = sys.Exec(op.Path, op.Args, env)
		default:
			err = fmt.Errorf("unknown op %q", op.Kind)
		}
		if err != nil {
			err = fmt.Errorf("%s: %w", op, err)
			if !switched {
				return rollback(err)
			}
			return fmt.Errorf("%w: %w", ErrHalfSwitched, err)
		}
	}
	return fmt.Errorf("%w: plan ended without exec", ErrHalfSwitched)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

// waitFor waits until p exists: a virtio disk's node appears once its driver
// probes, which has normally happened before init runs.
func waitFor(p string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	// Short polls: the node usually appears within a few ms of init's
	// start, and a doubling delay would overshoot it by as much again.
	for delay := 200 * time.Microsecond; ; delay = min(2*delay, 5*time.Millisecond) {
		_, err := os.Stat(p)
		if err == nil || !errors.Is(err, os.ErrNotExist) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(delay)
	}
}

func mkdirIfMissing(p string, mode os.FileMode) error {
	if fi, err := os.Stat(p); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s exists and is not a directory", p)
		}
		return nil
	}
	if err := os.MkdirAll(p, 0o755); err != nil {
		return err
	}
	return os.Chmod(p, mode) // MkdirAll honours the umask; mount points want exact modes
}
