package supervisor

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
)

// Identity tells one process apart from any other that ever had its PID:
// the PID, its start time in clock ticks after boot (/proc/PID/stat field
// 22) and the boot it ran in.
type Identity struct {
	PID       int
	StartTime uint64
	BootID    string
}

// ErrGone says a process no longer runs (or its PID now belongs to another).
var ErrGone = errors.New("process is gone")

var bootID = sync.OnceValues(func() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", fmt.Errorf("boot id: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
})

// Identify returns the identity of the running process pid. A zombie is gone.
func Identify(pid int) (Identity, error) {
	boot, err := bootID()
	if err != nil {
		return Identity{}, err
	}
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return Identity{}, fmt.Errorf("pid %d: %w", pid, ErrGone)
		}
		return Identity{}, err
	}
	state, start, err := parseStat(string(data))
	if err != nil {
		return Identity{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	if state == "Z" || state == "X" {
		return Identity{}, fmt.Errorf("pid %d has exited: %w", pid, ErrGone)
	}
	return Identity{PID: pid, StartTime: start, BootID: boot}, nil
}

// parseStat returns the state and start time from a /proc/PID/stat line.
// The command name (field 2) is in parentheses and may contain spaces and
// parentheses itself, so fields are counted from the last ')'.
func parseStat(s string) (state string, start uint64, err error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "", 0, fmt.Errorf("stat %q: no command name", s)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); field 22 (starttime) is f[19].
	if len(f) < 20 {
		return "", 0, fmt.Errorf("stat: %d fields after the command name, want at least 20", len(f))
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return "", 0, fmt.Errorf("stat: start time: %w", err)
	}
	return f[0], start, nil
}

// check returns nil if the process now running as id.PID is id.
func check(id Identity) error {
	cur, err := Identify(id.PID)
	if err != nil {
		return err
	}
	if cur != id {
		return fmt.Errorf("pid %d now belongs to another process (started at tick %d in boot %s, recorded %d in %s): %w",
			id.PID, cur.StartTime, cur.BootID, id.StartTime, id.BootID, ErrGone)
	}
	return nil
}
