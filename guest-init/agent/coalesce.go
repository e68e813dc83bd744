package agent

import (
	"io"
	"sync"
	"time"

	"github.com/boxd-dev/boxd/agent/wire"
)

// Over vsock every write is a packet, and in a VM a packet is the expensive
// part of a round trip: the guest notifies the device, the monitor wakes and
// copies, the other side takes an interrupt. A short command's answer is a
// Reply (started), EOF on stdout and stderr, and a Close (exit status); sent
// as they happen that is four packets where a ping needs one. The agent
// therefore holds the Reply and the EOFs of a foreground exec for up to
// Options.Coalesce while the process runs: if it ends within that time, the
// whole answer leaves in one write (ReplyClose; Close implies EOF). No byte
// of output is ever held — the first output sends the Reply ahead of it —
// and the frames, and their order, are the ones the protocol always had.

// lazyReply is the Reply of a foreground exec, sent at the first of: its
// timer, the first output, the end of the channel.
type lazyReply struct {
	ch      *wire.Channel
	payload []byte
	timer   *time.Timer

	mu   sync.Mutex
	sent bool // guarded by mu
}

// newLazyReply returns a Reply that goes out after delay at the latest; with
// delay <= 0 it goes out now.
func newLazyReply(ch *wire.Channel, payload []byte, delay time.Duration) *lazyReply {
	r := &lazyReply{ch: ch, payload: payload}
	if delay <= 0 {
		r.send()
		return r
	}
	r.timer = time.AfterFunc(delay, r.send)
	return r
}

// send sends the Reply unless it has been sent.
func (r *lazyReply) send() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.sent {
		r.sent = true
		r.ch.Reply(r.payload)
	}
}

// close ends the channel with final, together with the Reply if it is still
// held.
func (r *lazyReply) close(final []byte) {
	if r.timer != nil {
		r.timer.Stop()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.sent {
		r.sent = true
		r.ch.ReplyClose(r.payload, final)
		return
	}
	r.ch.Close(final)
}

// replyFirst writes to w, making sure the Reply went out first.
type replyFirst struct {
	r *lazyReply
	w io.Writer
}

func (f replyFirst) Write(p []byte) (int, error) {
	f.r.send()
	return f.w.Write(p)
}

// holdEOF sends EOF on w for a process whose output ended while it runs on,
// once it has run on for delay; if it exits first, the Close carries the EOF.
func holdEOF(p *proc, r *lazyReply, w *wire.SendStream, delay time.Duration) {
	if delay > 0 {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-p.exited:
			return
		case <-t.C:
		}
	}
	r.send()
	w.CloseWrite()
}
