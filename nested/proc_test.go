package nested

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// proc identifies one process: PIDs are reused, (PID, start time) is not.
type proc struct {
	pid   int
	start string
}

// procStat returns the state letter and start time of pid from /proc, and
// false if there is no such process.
func procStat(pid int) (state, start string, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", "", false
	}
	// The command name in parentheses may hold spaces; fields follow the last ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 20 {
		return "", "", false
	}
	return f[0], f[19], true // fields 3 and 22 of proc(5)
}

func newProc(t *testing.T, pid int) proc {
	t.Helper()
	_, start, ok := procStat(pid)
	if !ok {
		t.Fatalf("process %d vanished before it could be recorded", pid)
	}
	return proc{pid, start}
}

// gone reports whether p has exited (a zombie nobody reaped counts as gone).
func (p proc) gone() bool {
	state, start, ok := procStat(p.pid)
	return !ok || start != p.start || state == "Z" || state == "X"
}

// waitGone polls until p has exited or d passes: a process killed by a
// signal exits asynchronously unless someone waits for it.
func (p proc) waitGone(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for !p.gone() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}
