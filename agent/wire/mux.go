package wire

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Errors a Mux reports.
var (
	// ErrProtocol is a violation of the wire protocol by the peer; the
	// connection is closed.
	ErrProtocol = errors.New("agent protocol violation")
	// ErrVersion is a handshake with a peer of another major version.
	ErrVersion = errors.New("agent protocol version mismatch")
	// ErrClosed is returned after the connection has been closed locally.
	ErrClosed = errors.New("agent connection closed")
	// ErrChannelClosed is returned by streams of a channel that has ended.
	ErrChannelClosed = errors.New("agent channel closed")
)

// Role says which side of the protocol a Mux plays.
type Role int

// Roles. The client opens channels; the server accepts them.
const (
	Client Role = iota
	Server
)

// DefaultMaxChannels bounds the channels a server keeps open per connection.
const DefaultMaxChannels = 4096

// Config configures a Mux.
type Config struct {
	Role Role
	// Hello is what this side announces. Major and Minor default to this
	// package's version, Window to DefaultWindow.
	Hello Hello
	// Accept handles an Open frame (server only). It runs on its own goroutine
	// and must end the channel with Channel.Close.
	Accept func(ch *Channel, op Open)
	// MaxChannels bounds concurrently open channels (server only).
	MaxChannels int
}

// Mux multiplexes channels over one connection. One goroutine reads frames and
// dispatches them without ever blocking on a consumer: every buffer it fills is
// bounded by a flow-control window, so a slow reader only stalls its own stream.
type Mux struct {
	conn   net.Conn
	cfg    Config
	peer   Hello
	window int // our receive window per stream

	wmu  sync.Mutex // serializes frames on conn
	wbuf []byte     // guarded by wmu

	mu    sync.Mutex
	chans map[uint32]*Channel // guarded by mu
	next  uint32              // guarded by mu; last channel id allocated

	failOnce sync.Once
	err      error // set once before done is closed
	done     chan struct{}
}

// Handshake exchanges Hello frames on conn and starts the Mux's reader. The
// client speaks first; the server answers even when the majors differ, so the
// client can report both versions, and then closes. ctx bounds the handshake.
func Handshake(ctx context.Context, conn net.Conn, cfg Config) (*Mux, error) {
	if cfg.Hello.Major == 0 {
		cfg.Hello.Major, cfg.Hello.Minor = Major, Minor
	}
	if cfg.Hello.Window == 0 {
		cfg.Hello.Window = DefaultWindow
	}
	if cfg.Hello.Window < MinWindow || cfg.Hello.Window > MaxWindow {
		return nil, fmt.Errorf("window %d outside [%d, %d]", cfg.Hello.Window, MinWindow, MaxWindow)
	}
	if cfg.MaxChannels <= 0 {
		cfg.MaxChannels = DefaultMaxChannels
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if d, ok := ctx.Deadline(); ok {
		conn.SetDeadline(d)
	}
	r := NewReader(conn)
	var peer Hello
	var err error
	if cfg.Role == Client {
		if err = writeHello(conn, cfg.Hello); err == nil {
			peer, err = readHello(r)
		}
	} else {
		if peer, err = readHello(r); err == nil {
			err = writeHello(conn, cfg.Hello)
		}
	}
	if err == nil {
		err = checkPeer(cfg.Hello, peer)
	}
	if !stop() || ctx.Err() != nil {
		err = errors.Join(err, ctx.Err())
	} else if d, ok := ctx.Deadline(); ok && err != nil && !time.Now().Before(d) {
		err = errors.Join(err, context.DeadlineExceeded) // the conn deadline beat ctx's timer
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("agent handshake: %w", err)
	}
	conn.SetDeadline(time.Time{})
	m := &Mux{
		conn:   conn,
		cfg:    cfg,
		peer:   peer,
		window: int(cfg.Hello.Window),
		chans:  make(map[uint32]*Channel),
		done:   make(chan struct{}),
	}
	go m.readLoop(r)
	return m, nil
}

func writeHello(conn net.Conn, h Hello) error {
	p, err := json.Marshal(h)
	if err != nil {
		return err
	}
	b, err := AppendFrame(nil, Frame{Type: TypeHello, Payload: p})
	if err != nil {
		return err
	}
	_, err = conn.Write(b)
	return err
}

func readHello(r *Reader) (Hello, error) {
	f, err := r.Next()
	if err != nil {
		return Hello{}, err
	}
	if f.Type != TypeHello {
		return Hello{}, fmt.Errorf("%w: first frame is %v, not hello", ErrProtocol, f.Type)
	}
	var h Hello
	if err := json.Unmarshal(f.Payload, &h); err != nil {
		return Hello{}, fmt.Errorf("%w: hello: %w", ErrProtocol, err)
	}
	return h, nil
}

func checkPeer(ours, peer Hello) error {
	if peer.Major != ours.Major {
		return fmt.Errorf("%w: this side speaks %d.%d, peer %q speaks %d.%d",
			ErrVersion, ours.Major, ours.Minor, peer.Agent, peer.Major, peer.Minor)
	}
	if peer.Window < MinWindow || peer.Window > MaxWindow {
		return fmt.Errorf("%w: peer window %d outside [%d, %d]", ErrProtocol, peer.Window, MinWindow, MaxWindow)
	}
	return nil
}

// Peer returns the peer's Hello.
func (m *Mux) Peer() Hello { return m.peer }

// Done is closed when the connection has failed or been closed.
func (m *Mux) Done() <-chan struct{} { return m.done }

// Err returns why the connection ended, or nil while it is up.
func (m *Mux) Err() error {
	select {
	case <-m.done:
		return m.err
	default:
		return nil
	}
}

// Close closes the connection; every channel fails with ErrClosed.
func (m *Mux) Close() error {
	m.fail(ErrClosed)
	return nil
}

// fail ends the connection once, with err as the reason.
func (m *Mux) fail(err error) {
	m.failOnce.Do(func() {
		m.err = err
		close(m.done)
		m.conn.Close()
		m.mu.Lock()
		chans := m.chans
		m.chans = map[uint32]*Channel{}
		m.mu.Unlock()
		for _, ch := range chans {
			ch.failAll(err)
		}
	})
}

// writeFrame sends one frame. It must not be called with any Mux, Channel or
// stream lock held: it may block until the peer reads.
func (m *Mux) writeFrame(f Frame) error { return m.writeFrames(f) }

// writeFrames sends frames back to back in one write: over vsock every write
// is a packet, and a packet costs the guest a notification and the monitor a
// wakeup, so frames that are ready together travel together.
func (m *Mux) writeFrames(fs ...Frame) error {
	m.wmu.Lock()
	defer m.wmu.Unlock()
	select {
	case <-m.done:
		return m.err
	default:
	}
	b := m.wbuf[:0]
	for _, f := range fs {
		var err error
		if b, err = AppendFrame(b, f); err != nil {
			return err
		}
	}
	if cap(b) <= 2*MaxDataChunk {
		m.wbuf = b // keep the common size; let a rare huge buffer go
	}
	if _, err := m.conn.Write(b); err != nil {
		err = fmt.Errorf("write frame: %w", err)
		m.fail(err)
		return err
	}
	return nil
}

// Open opens a channel for op (client only).
func (m *Mux) Open(op string, args any) (*Channel, error) {
	if m.cfg.Role != Client {
		return nil, errors.New("only a client opens channels")
	}
	o := Open{Op: op}
	if args != nil {
		b, err := json.Marshal(args)
		if err != nil {
			return nil, fmt.Errorf("encode %s args: %w", op, err)
		}
		o.Args = b
	}
	p, err := json.Marshal(o)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	select {
	case <-m.done:
		m.mu.Unlock()
		return nil, m.err
	default:
	}
	id := m.next + 1
	for id == 0 || m.chans[id] != nil { // skip 0 and, after wraparound, live ids
		id++
	}
	m.next = id
	ch := m.newChannel(id)
	m.chans[id] = ch
	m.mu.Unlock()
	if err := m.writeFrame(Frame{Type: TypeOpen, Channel: id, Payload: p}); err != nil {
		ch.Abort()
		return nil, err
	}
	return ch, nil
}

func (m *Mux) lookup(id uint32) *Channel {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.chans[id]
}

func (m *Mux) remove(ch *Channel) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.chans[ch.id] != ch {
		return false
	}
	delete(m.chans, ch.id)
	return true
}

func (m *Mux) readLoop(r *Reader) {
	for {
		f, err := r.Next()
		if err == nil {
			err = m.dispatch(f)
		}
		if err != nil {
			select {
			case <-m.done:
			default:
				if errors.Is(err, ErrMalformed) || errors.Is(err, ErrFrameTooLarge) {
					err = fmt.Errorf("%w: %w", ErrProtocol, err)
				}
				m.fail(err)
			}
			return
		}
	}
}

// dispatch routes one frame. It never blocks: frames for a finished channel
// are dropped (they may cross the end in flight), and everything else either
// lands in a bounded buffer or is a protocol violation.
func (m *Mux) dispatch(f Frame) error {
	switch f.Type {
	case TypeHello:
		return fmt.Errorf("%w: second hello", ErrProtocol)
	case TypeOpen:
		if m.cfg.Role != Server {
			return fmt.Errorf("%w: open sent to client", ErrProtocol)
		}
		return m.accept(f)
	}
	ch := m.lookup(f.Channel)
	if ch == nil {
		return nil
	}
	switch f.Type {
	case TypeReply, TypeClose:
		if m.cfg.Role == Server {
			if f.Type == TypeReply {
				return fmt.Errorf("%w: reply sent to server", ErrProtocol)
			}
			ch.peerAbort()
			return nil
		}
		return ch.deliver(f)
	case TypeData, TypeEOF:
		rs := ch.recv[f.Stream]
		if rs == nil {
			return fmt.Errorf("%w: %v on outbound stream %d", ErrProtocol, f.Type, f.Stream)
		}
		if f.Type == TypeEOF {
			return rs.peerEOF()
		}
		return rs.push(f.Payload)
	case TypeWindow:
		ss := ch.send[f.Stream]
		if ss == nil {
			return fmt.Errorf("%w: window for inbound stream %d", ErrProtocol, f.Stream)
		}
		return ss.grant(WindowIncrement(f.Payload))
	case TypeControl:
		if m.cfg.Role != Server {
			return fmt.Errorf("%w: control sent to client", ErrProtocol)
		}
		select {
		case ch.ctrl <- append([]byte(nil), f.Payload...):
			return nil
		default:
			return fmt.Errorf("%w: control queue overflow on channel %d", ErrProtocol, f.Channel)
		}
	}
	return fmt.Errorf("%w: unexpected %v", ErrProtocol, f.Type)
}

func (m *Mux) accept(f Frame) error {
	var o Open
	if err := json.Unmarshal(f.Payload, &o); err != nil {
		return fmt.Errorf("%w: open: %w", ErrProtocol, err)
	}
	m.mu.Lock()
	if m.chans[f.Channel] != nil {
		m.mu.Unlock()
		return fmt.Errorf("%w: channel %d opened twice", ErrProtocol, f.Channel)
	}
	if len(m.chans) >= m.cfg.MaxChannels {
		m.mu.Unlock()
		go m.writeFrame(Frame{Type: TypeClose, Channel: f.Channel,
			Payload: EncodeResult(nil, Errorf(CodeUnsupported, "too many open channels (max %d)", m.cfg.MaxChannels))})
		return nil
	}
	ch := m.newChannel(f.Channel)
	m.chans[f.Channel] = ch
	m.mu.Unlock()
	go m.cfg.Accept(ch, o)
	return nil
}
