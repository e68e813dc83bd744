package initsteps

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/boxd-dev/boxd/devices/power"
	"github.com/boxd-dev/boxd/vmm/boot"
)

// Action is how the machine ends.
type Action int

// Actions PID 1 carries out.
const (
	Poweroff Action = iota + 1
	Reboot
)

func (a Action) String() string {
	if a == Reboot {
		return "reboot"
	}
	return "poweroff"
}

// ShutdownConfig tunes Shutdown.
type ShutdownConfig struct {
	Root string // "/" in a guest
	Logf func(format string, args ...any)
	// TermWait bounds the wait for processes to exit after SIGTERM, KillWait
	// after SIGKILL.
	TermWait, KillWait time.Duration
}

// Shutdown ends every process, makes the disks consistent and tells the
// monitor to power off or reboot. Reaping goes on meanwhile in PID 1's
// reaper, which is what lets processes disappear. In a guest it does not
// return; it returns the reboot(2) error if that fails.
func Shutdown(h Halter, a Action, c ShutdownConfig) error {
	c.Logf("shutdown: %s", a)
	h.Sync()
	procDir := filepath.Join(c.Root, "proc")
	for _, st := range []struct {
		sig  unix.Signal
		wait time.Duration
	}{{unix.SIGTERM, c.TermWait}, {unix.SIGKILL, c.KillWait}} {
		// kill(-1) reaches every process but PID 1 (and kernel threads,
		// which ignore it).
		if err := h.Kill(-1, int(st.sig)); err != nil && err != unix.ESRCH {
			c.Logf("shutdown: kill -%d: %v", st.sig, err)
		}
		left := waitGone(procDir, st.wait)
		if len(left) == 0 {
			break
		}
		c.Logf("shutdown: %d processes left after %v: %v", len(left), st.sig, left)
	}
	h.Sync()
	if mounts, err := os.ReadFile(filepath.Join(procDir, "self/mounts")); err != nil {
		c.Logf("shutdown: %v", err)
	} else {
		for _, m := range unmountOrder(mounts) {
			if m == "/" {
				continue
			}
			if err := h.Unmount(filepath.Join(c.Root, m), 0); err != nil {
				// Busy: at least stop writes to it.
				if rerr := h.Mount("", filepath.Join(c.Root, m), "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); rerr != nil {
					c.Logf("shutdown: unmount %s: %v; remount read-only: %v", m, err, rerr)
				}
			}
		}
	}
	if err := h.Mount("", c.Root, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		c.Logf("shutdown: remount / read-only: %v", err)
	}
	h.Sync()
	value, cmd := uint32(power.Poweroff), unix.LINUX_REBOOT_CMD_POWER_OFF
	if a == Reboot {
		value, cmd = power.Reboot, unix.LINUX_REBOOT_CMD_RESTART
	}
	// The power register stops the VM at once: let the UART send what the
	// guest's tty still buffers first, or the last console lines are lost.
	drainConsole(filepath.Join(c.Root, "dev/console"))
	if err := h.WriteMMIO(boot.PowerAddr, value); err != nil {
		c.Logf("shutdown: power register: %v", err)
	}
	return h.Reboot(cmd)
}

// drainConsole waits until the console's output queue is empty (tcdrain). A
// console that is missing or not a terminal needs no drain.
func drainConsole(path string) {
	f, err := os.OpenFile(path, os.O_WRONLY|unix.O_NOCTTY, 0)
	if err != nil {
		return
	}
	defer f.Close()
	_ = unix.IoctlSetInt(int(f.Fd()), unix.TCSBRK, 1) // TCSBRK with 1 is tcdrain
}

// waitGone polls procDir until no user process but PID 1 is left or wait has
// passed, and returns those left.
func waitGone(procDir string, wait time.Duration) []int {
	deadline := time.Now().Add(wait)
	for {
		left, err := userProcesses(procDir)
		if err != nil || len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pfKthread is PF_KTHREAD in /proc/PID/stat's flags field.
const pfKthread = 0x00200000

// userProcesses lists the pids in procDir other than 1 that are user
// processes (not kernel threads), zombies included: they are gone only once
// reaped.
func userProcesses(procDir string) ([]int, error) {
	ents, err := os.ReadDir(procDir)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 1 {
			continue
		}
		b, err := os.ReadFile(filepath.Join(procDir, e.Name(), "stat"))
		if err != nil {
			continue // exited meanwhile
		}
		flags, ok := statFlags(b)
		if !ok || flags&pfKthread != 0 {
			continue
		}
		out = append(out, pid)
	}
	slices.Sort(out)
	return out, nil
}

// statFlags returns field 9 (flags) of a /proc/PID/stat line. The command
// name (field 2) is in parentheses and may itself contain spaces and
// parentheses, so fields are counted after the last ')'.
func statFlags(stat []byte) (uint64, bool) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(stat[i+1:]))
	// After ")": state(3) ppid(4) pgrp(5) session(6) tty_nr(7) tpgid(8) flags(9).
	if len(f) < 7 {
		return 0, false
	}
	v, err := strconv.ParseUint(f[6], 10, 64)
	return v, err == nil
}

// pseudoFS are filesystems with nothing to flush: shutdown leaves them
// mounted (/dev must stay for the power register).
var pseudoFS = map[string]bool{
	"proc": true, "sysfs": true, "devtmpfs": true, "devpts": true, "tmpfs": true, "ramfs": true,
	"rootfs": true, "cgroup": true, "cgroup2": true, "mqueue": true, "bpf": true, "debugfs": true,
	"tracefs": true, "securityfs": true, "pstore": true, "hugetlbfs": true, "configfs": true,
	"fusectl": true, "binfmt_misc": true, "nsfs": true, "autofs": true,
}

// unmountOrder returns the mount points of /proc/self/mounts text that hold
// data (not pseudo filesystems), innermost first: the reverse of mount order,
// so an overlay goes before the disk under it. "/" is last if present.
func unmountOrder(mounts []byte) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(mounts))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 || pseudoFS[f[2]] {
			continue
		}
		out = append(out, unescapeMount(f[1]))
	}
	slices.Reverse(out)
	if i := slices.Index(out, "/"); i >= 0 {
		out = append(slices.Delete(out, i, i+1), "/")
	}
	return out
}

// unescapeMount undoes the octal escapes (\040 for space, \011, \012, \134)
// the kernel writes in /proc/self/mounts.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// consoleLog returns a Logf writing "boxd-init: ..." lines to w.
func consoleLog(w io.Writer) func(string, ...any) {
	return func(format string, args ...any) {
		fmt.Fprintf(w, "boxd-init: "+format+"\n", args...)
	}
}
