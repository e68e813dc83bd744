package agent

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/boxd-dev/boxd/agent/wire"
)

// bgProc is a background process: it belongs to the agent, not to a
// connection, and its output goes to a ring that attachers read.
type bgProc struct {
	info wire.ProcessInfo // Exit is set under registry.mu
	seq  uint64
	p    *proc

	mu   sync.Mutex
	cond sync.Cond
	out  ring // guarded by mu
	done bool // guarded by mu; exited and output complete

	finished chan struct{} // closed when done is set and the exit recorded
}

// registry holds background processes.
type registry struct {
	s *Server

	mu    sync.Mutex
	seq   uint64             // guarded by mu
	procs map[string]*bgProc // guarded by mu
}

func newRegistry(s *Server) *registry {
	return &registry{s: s, procs: map[string]*bgProc{}}
}

func (s *Server) spawn(_ context.Context, a wire.ExecArgs) (any, error) {
	if a.PTY != nil || a.Stdin {
		return nil, wire.Errorf(wire.CodeInvalid, "background processes have no stdin or pty")
	}
	p, err := s.start(a, false)
	if err != nil {
		return nil, err
	}
	r := s.bg
	r.mu.Lock()
	r.seq++
	b := &bgProc{
		info: wire.ProcessInfo{ID: "p" + strconv.FormatUint(r.seq, 10), Pid: p.pid, Argv: a.Argv, Started: time.Now()},
		seq:  r.seq,
		p:    p,
		out:  ring{max: s.opts.RingSize},

		finished: make(chan struct{}),
	}
	b.cond.L = &b.mu
	r.procs[b.info.ID] = b
	info := b.info
	r.mu.Unlock()

	go s.watchExit(p)
	var wg sync.WaitGroup
	for i, f := range p.outs {
		w := ringWriter{b, []wire.Stream{wire.StreamStdout, wire.StreamStderr}[i]}
		wg.Go(func() { s.pump(p, f, w) })
	}
	go func() {
		<-p.exited
		wg.Wait()
		r.finish(b)
	}()
	return info, nil
}

type ringWriter struct {
	b *bgProc
	s wire.Stream
}

func (w ringWriter) Write(p []byte) (int, error) {
	w.b.mu.Lock()
	w.b.out.add(w.s, append([]byte(nil), p...))
	w.b.cond.Broadcast()
	w.b.mu.Unlock()
	return len(p), nil
}

// finish records an exit, publishes it and forgets the oldest ended processes
// beyond MaxExited.
func (r *registry) finish(b *bgProc) {
	st := b.p.status
	r.mu.Lock()
	b.info.Exit = &st
	var ended []*bgProc
	for _, x := range r.procs {
		if x.info.Exit != nil {
			ended = append(ended, x)
		}
	}
	slices.SortFunc(ended, func(x, y *bgProc) int { return cmp.Compare(x.seq, y.seq) })
	for len(ended) > r.s.opts.MaxExited {
		delete(r.procs, ended[0].info.ID)
		ended = ended[1:]
	}
	r.mu.Unlock()
	b.mu.Lock()
	b.done = true
	b.cond.Broadcast()
	b.mu.Unlock()
	close(b.finished)
	r.s.hub.publish(wire.Event{Type: wire.EventProcessExit,
		Process: &wire.ProcessExit{ID: b.info.ID, Pid: b.info.Pid, Exit: st}})
}

func (r *registry) get(id string) (*bgProc, wire.ProcessInfo, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.procs[id]
	if b == nil {
		return nil, wire.ProcessInfo{}, wire.Errorf(wire.CodeNotFound, "no background process %q", id)
	}
	return b, b.info, nil
}

func (r *registry) list() []wire.ProcessInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	bs := make([]*bgProc, 0, len(r.procs))
	for _, b := range r.procs {
		bs = append(bs, b)
	}
	slices.SortFunc(bs, func(x, y *bgProc) int { return cmp.Compare(x.seq, y.seq) })
	out := make([]wire.ProcessInfo, len(bs))
	for i, b := range bs {
		out[i] = b.info
	}
	return out
}

// killAll kills every running background process group (agent shutdown).
func (r *registry) killAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, b := range r.procs {
		if b.info.Exit == nil {
			b.p.signal(syscall.SIGKILL)
		}
	}
}

func (s *Server) signalBackground(_ context.Context, a wire.SignalArgs) (any, error) {
	b, info, err := s.bg.get(a.ID)
	if err != nil {
		return nil, err
	}
	if a.Signal <= 0 || a.Signal > 64 {
		return nil, wire.Errorf(wire.CodeInvalid, "bad signal %d", a.Signal)
	}
	if info.Exit != nil {
		return nil, wire.Errorf(wire.CodeInvalid, "background process %s has ended", a.ID)
	}
	return nil, b.p.signal(syscall.Signal(a.Signal))
}

func (s *Server) waitBackground(ctx context.Context, a wire.IDArgs) (any, error) {
	b, _, err := s.bg.get(a.ID)
	if err != nil {
		return nil, err
	}
	select {
	case <-b.finished: // not just exited: its output is all in the ring too
		return b.p.status, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// attach replays the ring from its oldest byte, then follows until the
// process ends and its output is drained. The process never waits for an
// attacher: one that falls behind the ring loses bytes, counted in Dropped.
func (s *Server) attach(ch *wire.Channel, raw json.RawMessage) {
	var a wire.IDArgs
	if err := decodeArgs(raw, &a); err != nil {
		ch.Close(wire.EncodeResult(nil, err))
		return
	}
	b, info, err := s.bg.get(a.ID)
	if err != nil {
		ch.Close(wire.EncodeResult(nil, err))
		return
	}
	ctx := ch.Context()
	go s.attachControls(ctx, b, ch.Controls())
	stop := context.AfterFunc(ctx, func() {
		b.mu.Lock()
		b.cond.Broadcast()
		b.mu.Unlock()
	})
	defer stop()
	ch.Reply(wire.EncodeResult(info, nil))
	var off, dropped int64
	for {
		b.mu.Lock()
		for off == b.out.end && !b.done && ctx.Err() == nil {
			b.cond.Wait()
		}
		chunks, lost, next := b.out.since(off)
		done := b.done
		b.mu.Unlock()
		if ctx.Err() != nil {
			ch.Close(wire.EncodeResult(nil, ctx.Err()))
			return
		}
		dropped += lost
		for _, c := range chunks {
			if _, err := ch.Writer(c.stream).Write(c.b); err != nil {
				ch.Close(wire.EncodeResult(nil, fmt.Errorf("attach: %w", err)))
				return
			}
		}
		off = next
		if done { // the ring was complete when read
			break
		}
	}
	ch.Writer(wire.StreamStdout).CloseWrite()
	ch.Writer(wire.StreamStderr).CloseWrite()
	ch.Close(wire.EncodeResult(wire.AttachEnd{Exit: b.p.status, Dropped: dropped}, nil))
}

// attachControls lets an attached client signal the process.
func (s *Server) attachControls(ctx context.Context, b *bgProc, ctl <-chan []byte) {
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-ctl:
			var c wire.Control
			if decodeArgs(m, &c) == nil && c.Signal > 0 && c.Signal < 65 {
				b.p.signal(syscall.Signal(c.Signal))
			}
		}
	}
}
