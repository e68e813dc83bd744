package agent

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/boxd-dev/boxd/agent/wire"
)

// subQueue bounds events waiting for one slow subscriber; past it events are
// dropped and counted, never buffered without bound.
const subQueue = 1024

// hub fans events out to subscribers and runs the port and kernel-log
// watchers only while there is at least one.
type hub struct {
	s *Server

	mu     sync.Mutex
	subs   map[*subscriber]struct{} // guarded by mu
	ports  map[wire.Port]struct{}   // guarded by mu; last scan
	polled bool                     // guarded by mu; ports is valid
	stop   context.CancelFunc       // guarded by mu; stops the watchers
}

type subscriber struct {
	mu    sync.Mutex
	cond  sync.Cond
	queue []wire.Event // guarded by mu
	lost  int          // guarded by mu
	gone  bool         // guarded by mu
}

func newHub(s *Server) *hub { return &hub{s: s, subs: map[*subscriber]struct{}{}} }

func (sb *subscriber) push(ev wire.Event) {
	sb.mu.Lock()
	if len(sb.queue) >= subQueue {
		sb.lost++
	} else {
		sb.queue = append(sb.queue, ev)
	}
	sb.cond.Broadcast()
	sb.mu.Unlock()
}

// publish delivers ev to every subscriber.
func (h *hub) publish(ev wire.Event) {
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for sb := range h.subs {
		sb.push(ev)
	}
}

func (h *hub) add() *subscriber {
	sb := &subscriber{}
	sb.cond.L = &sb.mu
	h.mu.Lock()
	defer h.mu.Unlock()
	h.subs[sb] = struct{}{}
	if h.polled {
		now := time.Now()
		for _, p := range sortedPorts(h.ports) {
			sb.push(wire.Event{Type: wire.EventPortOpen, Time: now, Port: &p})
		}
	}
	if len(h.subs) == 1 {
		ctx, cancel := context.WithCancel(context.Background())
		h.stop = cancel
		go h.pollPorts(ctx)
		if h.s.opts.Kmsg != "-" {
			go h.watchKmsg(ctx)
		}
	}
	return sb
}

func (h *hub) remove(sb *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.subs, sb)
	if len(h.subs) == 0 && h.stop != nil {
		h.stop()
		h.stop = nil
		h.ports, h.polled = nil, false
	}
}

// pollPorts scans the listening sockets now and every PortPollInterval, and
// publishes the differences. (sock_diag would be cheaper per scan but is a
// poll all the same: Linux announces no listen() events.)
func (h *hub) pollPorts(ctx context.Context) {
	t := time.NewTicker(h.s.opts.PortPollInterval)
	defer t.Stop()
	for {
		cur, err := listeningPorts(h.s.opts.ProcNet)
		if err != nil {
			h.s.opts.Logf("agent: scan ports: %v", err)
		} else {
			h.update(ctx, cur)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (h *hub) update(ctx context.Context, cur map[wire.Port]struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if ctx.Err() != nil {
		return // a stale scan from watchers already stopped
	}
	now := time.Now()
	var evs []wire.Event
	for _, p := range sortedPorts(cur) {
		if _, ok := h.ports[p]; !ok {
			evs = append(evs, wire.Event{Type: wire.EventPortOpen, Time: now, Port: &p})
		}
	}
	for _, p := range sortedPorts(h.ports) {
		if _, ok := cur[p]; !ok {
			evs = append(evs, wire.Event{Type: wire.EventPortClose, Time: now, Port: &p})
		}
	}
	h.ports, h.polled = cur, true
	for sb := range h.subs {
		for _, ev := range evs {
			sb.push(ev)
		}
	}
}

func sortedPorts(m map[wire.Port]struct{}) []wire.Port {
	out := make([]wire.Port, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b wire.Port) int {
		if a.Port != b.Port {
			return int(a.Port) - int(b.Port)
		}
		if a.Proto != b.Proto {
			return compareStrings(a.Proto, b.Proto)
		}
		return compareStrings(a.Addr, b.Addr)
	})
	return out
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// subscribe streams events as JSON lines on stdout until the client ends it.
func (s *Server) subscribe(ch *wire.Channel, _ json.RawMessage) {
	sb := s.hub.add()
	defer s.hub.remove(sb)
	ctx := ch.Context()
	stop := context.AfterFunc(ctx, func() {
		sb.mu.Lock()
		sb.gone = true
		sb.cond.Broadcast()
		sb.mu.Unlock()
	})
	defer stop()
	ch.Reply(wire.EncodeResult(nil, nil))
	w := ch.Writer(wire.StreamStdout)
	for {
		sb.mu.Lock()
		for len(sb.queue) == 0 && sb.lost == 0 && !sb.gone {
			sb.cond.Wait()
		}
		if sb.gone {
			sb.mu.Unlock()
			ch.Close(wire.EncodeResult(nil, nil))
			return
		}
		evs := sb.queue
		sb.queue = nil
		if sb.lost > 0 {
			evs = append([]wire.Event{{Type: wire.EventOverflow, Time: time.Now(), Lost: sb.lost}}, evs...)
			sb.lost = 0
		}
		sb.mu.Unlock()
		var buf []byte
		for _, ev := range evs {
			b, err := json.Marshal(ev)
			if err != nil || len(b) >= wire.MaxEventLine {
				continue
			}
			buf = append(append(buf, b...), '\n')
		}
		if _, err := w.Write(buf); err != nil {
			ch.Close(wire.EncodeResult(nil, err))
			return
		}
	}
}
