package nested

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// control is one line the L1 init writes on the boxd.control port.
type control struct {
	kind   string  // "ready", "exit" or "error"
	uptime float64 // ready: L1's /proc/uptime, seconds
	status int     // exit: the command's exit status
	text   string  // error: what failed
}

// parseControl parses one control line. The bytes come from the L1 guest, so
// anything malformed is an error, never a panic.
func parseControl(line string) (control, error) {
	kind, arg, _ := strings.Cut(strings.TrimSpace(line), " ")
	switch kind {
	case "ready":
		up, err := strconv.ParseFloat(arg, 64)
		if err != nil || !(up >= 0 && up <= 1e9) { // also refuses NaN
			return control{}, fmt.Errorf("bad ready line %q", line)
		}
		return control{kind: kind, uptime: up}, nil
	case "exit":
		st, err := strconv.Atoi(arg)
		if err != nil || st < 0 || st > 255 {
			return control{}, fmt.Errorf("bad exit line %q", line)
		}
		return control{kind: kind, status: st}, nil
	case "error":
		return control{kind: kind, text: arg}, nil
	}
	return control{}, fmt.Errorf("unknown control line %q", line)
}

// runState collects what the control port and the console said during a run.
type runState struct {
	mu       sync.Mutex
	ready    time.Duration // host time from QEMU start to "ready"; 0 until then
	uptime   float64
	status   int
	exited   bool
	failures []string // "error" lines and malformed control lines
	console  tail     // last lines of the serial console
	qemu     tail     // last lines QEMU printed, noise filtered
}

// tail keeps the last max lines written to it.
type tail struct {
	lines []string
}

const tailLines = 40

func (t *tail) add(line string) {
	if len(t.lines) == tailLines {
		copy(t.lines, t.lines[1:])
		t.lines = t.lines[:tailLines-1]
	}
	t.lines = append(t.lines, line)
}
