package machine

import (
	"bytes"
	"io"
	"sync"
)

// panicWatch passes console output through and reports a guest kernel panic:
// with panic=-1 the kernel reboots right after panicking, and only the console
// tells that reboot from a requested one.
type panicWatch struct {
	out    io.Writer
	report func(line string)

	mu       sync.Mutex
	line     []byte // current console line, bounded
	panicked bool
}

var panicMarker = []byte("Kernel panic - not syncing")

const maxLine = 512

func newPanicWatch(out io.Writer, report func(string)) *panicWatch {
	return &panicWatch{out: out, report: report}
}

func (w *panicWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	for _, b := range p {
		if b == '\n' {
			w.check()
			w.line = w.line[:0]
			continue
		}
		if len(w.line) < maxLine {
			w.line = append(w.line, b)
		}
	}
	w.mu.Unlock()
	return w.out.Write(p)
}

// check runs on each complete line; caller holds mu.
func (w *panicWatch) check() {
	if w.panicked {
		return
	}
	if i := bytes.Index(w.line, panicMarker); i >= 0 {
		w.panicked = true
		w.report(string(bytes.TrimSpace(w.line[i:])))
	}
}
