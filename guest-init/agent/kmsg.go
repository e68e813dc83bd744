package agent

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strconv"
	"syscall"

	"github.com/boxd-dev/boxd/agent/wire"
)

// watchKmsg reports OOM kills from the kernel log while ctx lives. Best
// effort: without /dev/kmsg (or permission) there are no OOM events. Memory
// cgroups also count kills in memory.events, but name no process.
func (h *hub) watchKmsg(ctx context.Context) {
	fd, err := syscall.Open(h.s.opts.Kmsg, syscall.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		h.s.opts.Logf("agent: no OOM events: %v", err)
		return
	}
	syscall.Seek(fd, 0, io.SeekEnd)             // only records from now on
	f := os.NewFile(uintptr(fd), h.s.opts.Kmsg) // non-blocking: pollable, so Close unblocks Read
	stop := context.AfterFunc(ctx, func() { f.Close() })
	defer stop()
	buf := make([]byte, 8192) // a kmsg record is at most 1 KiB of text plus dictionary
	for {
		n, err := f.Read(buf)
		if errors.Is(err, syscall.EPIPE) {
			continue // records were overwritten before we read them
		}
		if err != nil {
			if ctx.Err() == nil {
				h.s.opts.Logf("agent: read kmsg: %v", err)
			}
			return
		}
		if k, ok := parseOOMKill(buf[:n]); ok {
			h.publish(wire.Event{Type: wire.EventOOMKill, OOM: &k})
		}
	}
}

// parseOOMKill recognises the OOM killer's record in /dev/kmsg format
// ("prio,seq,usec,flags;message"):
//
//	6,1234,5678,-;Out of memory: Killed process 4242 (stress) total-vm:...
//	6,1234,5678,-;Memory cgroup out of memory: Killed process 4242 (stress) ...
func parseOOMKill(rec []byte) (wire.OOMKill, bool) {
	_, msg, ok := bytes.Cut(rec, []byte{';'})
	if !ok {
		return wire.OOMKill{}, false
	}
	if i := bytes.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	if !bytes.Contains(msg, []byte("out of memory")) && !bytes.Contains(msg, []byte("Out of memory")) {
		return wire.OOMKill{}, false
	}
	_, rest, ok := bytes.Cut(msg, []byte("Killed process "))
	if !ok {
		return wire.OOMKill{}, false
	}
	pidText, rest, ok := bytes.Cut(rest, []byte(" ("))
	if !ok {
		return wire.OOMKill{}, false
	}
	pid, err := strconv.Atoi(string(pidText))
	if err != nil || pid <= 0 {
		return wire.OOMKill{}, false
	}
	end := bytes.Index(rest, []byte(") total-vm")) // a comm may itself hold ')'
	if end < 0 {
		end = bytes.LastIndexByte(rest, ')')
	}
	if end < 0 || end > 64 {
		return wire.OOMKill{}, false
	}
	comm := rest[:end]
	if len(comm) == 0 {
		return wire.OOMKill{}, false
	}
	return wire.OOMKill{Pid: pid, Comm: string(comm)}, true
}
