package nested

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The files L1's init writes into the run directory (see l1init.sh).
const (
	fileReady  = "ready"
	fileStdout = "stdout"
	fileStderr = "stderr"
	fileStatus = "status"
	fileError  = "error"
)

// parseReady parses the ready file: L1's uptime in seconds and a newline.
// The bytes come from the L1 guest, so anything malformed is an error, never
// a panic; a missing newline means the write is not complete yet.
func parseReady(b []byte) (float64, error) {
	s, ok := strings.CutSuffix(string(b), "\n")
	if !ok {
		return 0, fmt.Errorf("incomplete ready file %q", b)
	}
	up, err := strconv.ParseFloat(s, 64)
	if err != nil || !(up >= 0 && up <= 1e9) { // also refuses NaN
		return 0, fmt.Errorf("bad ready file %q", b)
	}
	return up, nil
}

// parseStatus parses the status file: the command's exit status and a newline.
func parseStatus(b []byte) (int, error) {
	s, ok := strings.CutSuffix(string(b), "\n")
	if !ok {
		return 0, fmt.Errorf("incomplete status file %q", b)
	}
	st, err := strconv.Atoi(s)
	if err != nil || st < 0 || st > 255 {
		return 0, fmt.Errorf("bad status file %q", b)
	}
	return st, nil
}

// runState collects what a run's console and QEMU said.
type runState struct {
	mu      sync.Mutex
	ready   time.Duration // host time from QEMU start to the ready file; 0 until then
	hung    time.Duration // how long the heartbeat had not moved when L1 was stopped as hung; 0 if not
	console tail          // last lines of the serial console
	qemu    tail          // last lines QEMU printed, noise filtered
}

// tail keeps the last tailLines lines added to it.
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

// heartbeatLine is what L1's init prints on the serial console every 2 s
// while the command runs (l1init.sh). The console, not a file in the run
// directory: a 9p write every 2 s made L1 freeze (QEMU busy, L1 silent)
// within minutes under load, in 3 of 8 runs of TestVsock, and never in 8
// without it; console output is emulated on L1's own vCPU thread.
const heartbeatLine = "boxd-l1-heartbeat"

// watchdog tells when L1's heartbeat has stopped for too long. It is armed
// when L1 becomes ready; beats before that do not count.
type watchdog struct {
	mu    sync.Mutex
	after time.Duration // 0: never fire
	last  time.Time     // the last beat, or when armed; zero until armed
	fired bool
}

func (w *watchdog) arm(now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.last = now
}

func (w *watchdog) beat(now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.last.IsZero() {
		w.last = now
	}
}

// check reports how long the heartbeat has been silent and true, once, when
// that reached the limit.
func (w *watchdog) check(now time.Time) (time.Duration, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fired || w.after <= 0 || w.last.IsZero() {
		return 0, false
	}
	silent := now.Sub(w.last)
	if silent < w.after {
		return silent, false
	}
	w.fired = true
	return silent, true
}
