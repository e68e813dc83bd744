package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"runtime/debug"
	"sync"
	"time"

	"github.com/boxd-dev/boxd/agent/wire"
)

// Options configure a Server. The zero value serves a real guest.
type Options struct {
	// Listen makes a fresh listener after ResetVsock. Without it ResetVsock
	// only drops connections and the old listener keeps serving.
	Listen func() (net.Listener, error)
	// System applies lifecycle changes; nil means the running Linux kernel.
	System System
	// RingSize bounds the output kept per background process (default 1 MiB).
	RingSize int
	// MaxExited bounds the ended background processes kept for List, Wait and
	// Attach (default 64); the oldest are forgotten first.
	MaxExited int
	// PortPollInterval is how often listening ports are scanned while anyone
	// subscribes to events (default 250 ms).
	PortPollInterval time.Duration
	// ProcNet is where tcp and tcp6 tables are read (default /proc/net).
	ProcNet string
	// Kmsg is the kernel log read for OOM kills (default /dev/kmsg; "-"
	// disables).
	Kmsg string
	// WaitDelay is how long, after a process exits, its output pipes may stay
	// idle before they are closed: descendants that keep them open (a daemon
	// started with "&") must not hold the exec open forever (default 200 ms).
	WaitDelay time.Duration
	// Coalesce is how long a foreground exec without stdin or PTY may hold
	// its Reply and EOFs while the process runs, so that a short command's
	// whole answer leaves in one write (see coalesce.go; default 50 ms; <0
	// sends each frame at once). Output is never held.
	Coalesce time.Duration
	// Logf logs what the agent cannot report to a client (default: discard).
	Logf func(format string, args ...any)
}

func (o *Options) setDefaults() {
	if o.System == nil {
		o.System = &Linux{}
	}
	if o.RingSize <= 0 {
		o.RingSize = 1 << 20
	}
	o.RingSize = max(o.RingSize, 2*readChunk)
	if o.MaxExited <= 0 {
		o.MaxExited = 64
	}
	if o.PortPollInterval <= 0 {
		o.PortPollInterval = 250 * time.Millisecond
	}
	if o.ProcNet == "" {
		o.ProcNet = "/proc/net"
	}
	if o.Kmsg == "" {
		o.Kmsg = "/dev/kmsg"
	}
	if o.WaitDelay <= 0 {
		o.WaitDelay = 200 * time.Millisecond
	}
	if o.Coalesce == 0 {
		o.Coalesce = 50 * time.Millisecond
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
}

// Server is the guest agent. Background processes and event subscriptions
// are shared by all its connections.
type Server struct {
	opts Options
	bg   *registry
	hub  *hub

	mu    sync.Mutex
	conns map[*wire.Mux]struct{} // guarded by mu
	// raw holds every accepted connection from its first byte, also while its
	// handshake runs, so that a reset or stop closes connections that are not
	// yet in conns. Guarded by mu.
	raw     map[net.Conn]struct{}
	ln      net.Listener // guarded by mu; nil when not serving or resetting
	stopped bool         // guarded by mu; Serve has returned
	errc    chan error   // accept failures, to Serve
}

// New returns a Server.
func New(opts Options) *Server {
	opts.setDefaults()
	s := &Server{opts: opts, conns: map[*wire.Mux]struct{}{}, raw: map[net.Conn]struct{}{}, errc: make(chan error, 1)}
	s.hub = newHub(s)
	s.bg = newRegistry(s)
	return s
}

// Serve runs a Server on ln until ctx ends; see Server.Serve.
func Serve(ctx context.Context, ln net.Listener, opts Options) error {
	return New(opts).Serve(ctx, ln)
}

// Serve accepts connections on ln (and on listeners made by Options.Listen
// after ResetVsock) until ctx ends or accepting fails. On return every
// connection is closed and every process the agent started is killed.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	go s.acceptLoop(ctx, ln)
	var err error
	select {
	case <-ctx.Done():
	case err = <-s.errc:
	}
	s.mu.Lock()
	cur := s.ln
	s.ln = nil
	s.stopped = true
	s.mu.Unlock()
	if cur != nil {
		cur.Close()
	}
	s.closeConns()
	s.bg.killAll()
	return err
}

func (s *Server) acceptLoop(ctx context.Context, ln net.Listener) {
	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			replaced := s.ln != ln
			s.mu.Unlock()
			if replaced || ctx.Err() != nil {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff) // a transient failure (EMFILE); retry, as net/http does
				continue
			}
			select {
			case s.errc <- fmt.Errorf("accept: %w", err):
			default:
			}
			return
		}
		backoff = 0
		go s.ServeConn(ctx, conn)
	}
}

// ServeConn serves one connection until it ends or ctx does. Foreground
// processes started on it are killed when it ends.
func (s *Server) ServeConn(ctx context.Context, conn net.Conn) error {
	s.mu.Lock()
	s.raw[conn] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.raw, conn)
		s.mu.Unlock()
	}()
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	m, err := wire.Handshake(hctx, conn, wire.Config{
		Role: wire.Server,
		Hello: wire.Hello{
			Agent: "boxd-agent",
			Capabilities: []string{wire.CapExec, wire.CapPTY, wire.CapBackground,
				wire.CapFiles, wire.CapEvents, wire.CapLifecycle},
		},
		Accept: s.handle,
	})
	cancel()
	if err != nil {
		s.opts.Logf("agent: %v", err)
		return err
	}
	s.mu.Lock()
	s.conns[m] = struct{}{}
	s.mu.Unlock()
	select {
	case <-m.Done():
	case <-ctx.Done():
		m.Close()
	}
	s.mu.Lock()
	delete(s.conns, m)
	s.mu.Unlock()
	return m.Err()
}

func (s *Server) closeConns() {
	s.mu.Lock()
	conns, raw := s.conns, s.raw
	s.conns, s.raw = map[*wire.Mux]struct{}{}, map[net.Conn]struct{}{}
	s.mu.Unlock()
	for m := range conns {
		m.Close()
	}
	// Connections still in their handshake: closing them ends the handshake.
	for c := range raw {
		c.Close()
	}
}

// resetVsock drops every connection and, with Options.Listen, replaces the
// listener: after a restore the host must not reuse pre-snapshot streams.
func (s *Server) resetVsock() {
	if s.opts.Listen == nil {
		s.closeConns()
		return
	}
	s.mu.Lock()
	old := s.ln
	s.ln = nil // tells old's accept loop that its end is no failure
	s.mu.Unlock()
	if old == nil {
		s.closeConns()
		return // Serve has ended, or another reset is under way
	}
	// The old listener goes first, then the connections: nothing accepted
	// in between survives the reset. The new listener binds the same port.
	old.Close()
	s.closeConns()
	ln, err := s.opts.Listen()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		if err == nil {
			ln.Close()
		}
		return
	}
	if err != nil {
		select {
		case s.errc <- fmt.Errorf("listen after vsock reset: %w", err):
		default:
		}
		return
	}
	s.ln = ln
	go s.acceptLoop(context.Background(), ln) // Serve ends it by closing ln
}

// handle runs one channel. A bug in a handler must not take the agent (and
// every process it supervises) down, so panics become internal errors.
func (s *Server) handle(ch *wire.Channel, op wire.Open) {
	defer func() {
		if r := recover(); r != nil {
			s.opts.Logf("agent: panic in %s: %v\n%s", op.Op, r, debug.Stack())
			ch.Close(wire.EncodeResult(nil, wire.Errorf(wire.CodeInternal, "internal error in %s", op.Op)))
		}
	}()
	h, ok := handlers[op.Op]
	if !ok {
		ch.Close(wire.EncodeResult(nil, wire.Errorf(wire.CodeUnsupported, "unknown op %q", op.Op)))
		return
	}
	h(s, ch, op.Args)
}

// handlers maps ops to their handlers. Unary ones return a result for the
// Close frame; streaming ones manage the channel themselves. (Filled in init:
// the handlers refer back to the Server methods that consult the map.)
var handlers map[string]func(*Server, *wire.Channel, json.RawMessage)

func init() {
	handlers = map[string]func(*Server, *wire.Channel, json.RawMessage){
		wire.OpPing:          unary(func(*Server, context.Context, struct{}) (any, error) { return nil, nil }),
		wire.OpExec:          (*Server).execForeground,
		wire.OpSpawn:         unary((*Server).spawn),
		wire.OpListProcesses: unary(func(s *Server, _ context.Context, _ struct{}) (any, error) { return s.bg.list(), nil }),
		wire.OpAttach:        (*Server).attach,
		wire.OpSignal:        unary((*Server).signalBackground),
		wire.OpWait:          unary((*Server).waitBackground),
		wire.OpWriteFile:     (*Server).writeFile,
		wire.OpReadFile:      (*Server).readFile,
		wire.OpStat:          unary((*Server).stat),
		wire.OpListDir:       unary((*Server).listDir),
		wire.OpRemove:        unary((*Server).remove),
		wire.OpMkdir:         unary((*Server).mkdir),
		wire.OpSubscribe:     (*Server).subscribe,
		wire.OpReseed:        unary((*Server).reseed),
		wire.OpSetNetwork:    unary((*Server).setNetwork),
		wire.OpSetClock:      unary((*Server).setClock),
		wire.OpResetVsock:    (*Server).resetVsockOp,
	}
}

// unary adapts a request→result function to a channel handler.
func unary[A any](f func(*Server, context.Context, A) (any, error)) func(*Server, *wire.Channel, json.RawMessage) {
	return func(s *Server, ch *wire.Channel, raw json.RawMessage) {
		var a A
		if err := decodeArgs(raw, &a); err != nil {
			ch.Close(wire.EncodeResult(nil, err))
			return
		}
		v, err := f(s, ch.Context(), a)
		ch.Close(wire.EncodeResult(v, err))
	}
}

func decodeArgs(raw json.RawMessage, v any) error {
	if len(raw) == 0 {
		return nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return wire.Errorf(wire.CodeInvalid, "bad arguments: %v", err)
	}
	return nil
}

func (s *Server) resetVsockOp(ch *wire.Channel, _ json.RawMessage) {
	ch.Close(wire.EncodeResult(nil, nil)) // answer before this connection goes too
	s.resetVsock()
}
