package wire

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"sync"
)

// Msg is a Reply or Close frame delivered to a client channel.
type Msg struct {
	Type    Type
	Payload []byte
}

// controlQueue bounds Control frames waiting for a server handler; a client
// that floods more is violating the protocol.
const controlQueue = 64

// Channel is one operation on a Mux: an Open, its replies and its streams.
// On a client, inbound streams are Stdout and Stderr; on a server, Stdin.
type Channel struct {
	m      *Mux
	id     uint32
	ctx    context.Context
	cancel context.CancelFunc
	recv   [NumStreams]*RecvStream // nil for outbound streams
	send   [NumStreams]*SendStream // nil for inbound streams
	msgs   chan Msg                // client: at most one Reply and one Close
	ctrl   chan []byte             // server: Control payloads

	mu       sync.Mutex
	gotReply bool // guarded by mu
	gotClose bool // guarded by mu
}

func (m *Mux) newChannel(id uint32) *Channel {
	ctx, cancel := context.WithCancel(context.Background())
	ch := &Channel{m: m, id: id, ctx: ctx, cancel: cancel}
	in, out := []Stream{StreamStdout, StreamStderr}, []Stream{StreamStdin}
	if m.cfg.Role == Server {
		in, out = out, in
		ch.ctrl = make(chan []byte, controlQueue)
	} else {
		ch.msgs = make(chan Msg, 2)
	}
	for _, s := range in {
		ch.recv[s] = newRecvStream(ch, s, m.window)
	}
	for _, s := range out {
		ch.send[s] = newSendStream(ch, s, int(m.peer.Window))
	}
	return ch
}

// ID returns the channel number.
func (c *Channel) ID() uint32 { return c.id }

// Context is cancelled when the channel ends: closed by either side or by the
// connection failing. A server handler watches it to stop work.
func (c *Channel) Context() context.Context { return c.ctx }

// Reader returns the inbound stream s, or nil if s flows the other way.
func (c *Channel) Reader(s Stream) *RecvStream { return c.recv[s] }

// Writer returns the outbound stream s, or nil if s flows the other way.
func (c *Channel) Writer(s Stream) *SendStream { return c.send[s] }

// Controls delivers Control payloads (server only).
func (c *Channel) Controls() <-chan []byte { return c.ctrl }

// Next waits for the server's next Reply or Close (client only).
func (c *Channel) Next(ctx context.Context) (Msg, error) {
	select {
	case msg := <-c.msgs:
		return msg, nil
	default:
	}
	select {
	case msg := <-c.msgs:
		return msg, nil
	case <-ctx.Done():
		return Msg{}, ctx.Err()
	case <-c.ctx.Done():
		select {
		case msg := <-c.msgs:
			return msg, nil
		default:
		}
		if err := c.m.Err(); err != nil {
			return Msg{}, err
		}
		return Msg{}, ErrChannelClosed
	case <-c.m.done:
		select {
		case msg := <-c.msgs: // a Close that raced the connection's end still counts
			return msg, nil
		default:
		}
		return Msg{}, c.m.err
	}
}

// Reply sends a Reply frame (server only); the channel stays open.
func (c *Channel) Reply(payload []byte) error {
	return c.m.writeFrame(Frame{Type: TypeReply, Channel: c.id, Payload: payload})
}

// Close ends the channel from the server side with a final Result payload.
// Outbound streams not yet closed are implicitly at EOF. Close is idempotent.
func (c *Channel) Close(payload []byte) error {
	if !c.m.remove(c) {
		return nil
	}
	c.failAll(ErrChannelClosed)
	return c.m.writeFrame(Frame{Type: TypeClose, Channel: c.id, Payload: payload})
}

// ReplyClose sends a Reply and the final Close in one write (server only):
// an operation that finished before it reported its start answers in one
// packet. The client sees the same frames as from Reply then Close.
func (c *Channel) ReplyClose(reply, final []byte) error {
	if !c.m.remove(c) {
		return nil
	}
	c.failAll(ErrChannelClosed)
	return c.m.writeFrames(Frame{Type: TypeReply, Channel: c.id, Payload: reply},
		Frame{Type: TypeClose, Channel: c.id, Payload: final})
}

// Abort ends the channel from the client side: the server stops the operation
// (a foreground process is killed). Frames still in flight are dropped.
func (c *Channel) Abort() {
	if !c.m.remove(c) {
		return
	}
	c.failAll(ErrChannelClosed)
	// Asynchronously: a caller abandoning a call (ctx cancelled) must not
	// wait for a peer that has stopped reading.
	go c.m.writeFrame(Frame{Type: TypeClose, Channel: c.id, Payload: []byte("{}")})
}

// SendControl sends a Control frame (client only).
func (c *Channel) SendControl(ctl Control) error {
	p, err := json.Marshal(ctl)
	if err != nil {
		return err
	}
	return c.m.writeFrame(Frame{Type: TypeControl, Channel: c.id, Payload: p})
}

// deliver queues a Reply or Close for the client. The server may send at most
// one Reply, before its Close.
func (c *Channel) deliver(f Frame) error {
	c.mu.Lock()
	bad := c.gotClose || (f.Type == TypeReply && c.gotReply)
	if f.Type == TypeReply {
		c.gotReply = true
	} else {
		c.gotClose = true
	}
	c.mu.Unlock()
	if bad {
		return fmt.Errorf("%w: unexpected %v on channel %d", ErrProtocol, f.Type, c.id)
	}
	if f.Type == TypeClose {
		// The server is done: what it sent is complete, and nothing more may be sent.
		c.m.remove(c)
		for _, rs := range c.recv {
			if rs != nil {
				rs.finish()
			}
		}
		for _, ss := range c.send {
			if ss != nil {
				ss.fail(ErrChannelClosed)
			}
		}
	}
	c.msgs <- Msg{Type: f.Type, Payload: append([]byte(nil), f.Payload...)} // cap 2 by the checks above
	if f.Type == TypeClose {
		c.cancel() // after queueing, so Next sees the Close rather than the cancellation
	}
	return nil
}

// peerAbort handles a client's Close on the server: stop the handler's work.
func (c *Channel) peerAbort() {
	for _, ss := range c.send {
		if ss != nil {
			ss.fail(ErrChannelClosed)
		}
	}
	for _, rs := range c.recv {
		if rs != nil {
			rs.fail(ErrChannelClosed)
		}
	}
	c.cancel()
}

func (c *Channel) failAll(err error) {
	for _, rs := range c.recv {
		if rs != nil {
			rs.fail(err)
		}
	}
	for _, ss := range c.send {
		if ss != nil {
			ss.fail(err)
		}
	}
	c.cancel()
}

// RecvStream is an inbound byte stream. It buffers at most the window this side
// announced; bytes are granted back to the sender as they are read.
type RecvStream struct {
	ch     *Channel
	s      Stream
	window int

	mu      sync.Mutex
	cond    sync.Cond
	chunks  [][]byte // guarded by mu
	avail   int      // guarded by mu; bytes the peer may still send
	unacked int      // guarded by mu; bytes read but not yet granted back
	eof     bool     // guarded by mu; the peer sent EOF or ended the channel
	err     error    // guarded by mu; the stream failed; buffered data is dropped
}

func newRecvStream(ch *Channel, s Stream, window int) *RecvStream {
	rs := &RecvStream{ch: ch, s: s, window: window, avail: window}
	rs.cond.L = &rs.mu
	return rs
}

func (r *RecvStream) push(p []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.eof {
		return fmt.Errorf("%w: data after eof on channel %d stream %d", ErrProtocol, r.ch.id, r.s)
	}
	if len(p) > r.avail {
		return fmt.Errorf("%w: window exceeded on channel %d stream %d", ErrProtocol, r.ch.id, r.s)
	}
	r.avail -= len(p)
	if r.err != nil {
		return nil // nobody will read it
	}
	r.chunks = append(r.chunks, append([]byte(nil), p...))
	r.cond.Broadcast()
	return nil
}

func (r *RecvStream) peerEOF() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.eof {
		return fmt.Errorf("%w: second eof on channel %d stream %d", ErrProtocol, r.ch.id, r.s)
	}
	r.eof = true
	r.cond.Broadcast()
	return nil
}

// finish marks the stream complete: buffered data stays readable.
func (r *RecvStream) finish() {
	r.mu.Lock()
	r.eof = true
	r.cond.Broadcast()
	r.mu.Unlock()
}

func (r *RecvStream) fail(err error) {
	r.mu.Lock()
	if r.err == nil && !(r.eof && len(r.chunks) == 0) {
		r.err = err
		r.chunks = nil
	}
	r.cond.Broadcast()
	r.mu.Unlock()
}

// Read reads buffered bytes, blocking until some arrive. It returns io.EOF
// after the peer's EOF once the buffer is drained.
func (r *RecvStream) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.mu.Lock()
	for len(r.chunks) == 0 && !r.eof && r.err == nil {
		r.cond.Wait()
	}
	if r.err != nil {
		err := r.err
		r.mu.Unlock()
		return 0, err
	}
	if len(r.chunks) == 0 {
		r.mu.Unlock()
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && len(r.chunks) > 0 {
		c := copy(p[n:], r.chunks[0])
		n += c
		if c == len(r.chunks[0]) {
			r.chunks[0] = nil
			r.chunks = r.chunks[1:]
		} else {
			r.chunks[0] = r.chunks[0][c:]
		}
	}
	r.unacked += n
	grant := 0
	// Grant in quarters of the window: few Window frames, and the sender
	// never stalls while three quarters are still in flight.
	if !r.eof && r.unacked >= r.window/4 {
		grant = r.unacked
		r.avail += grant
		r.unacked = 0
	}
	r.mu.Unlock()
	if grant > 0 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(grant))
		r.ch.m.writeFrame(Frame{Type: TypeWindow, Stream: r.s, Channel: r.ch.id, Payload: b[:]})
	}
	return n, nil
}

// SendStream is an outbound byte stream, limited by the credit the peer grants.
// One goroutine writes to it at a time.
type SendStream struct {
	ch *Channel
	s  Stream

	mu     sync.Mutex
	cond   sync.Cond
	credit int   // guarded by mu
	closed bool  // guarded by mu; EOF sent
	err    error // guarded by mu
}

func newSendStream(ch *Channel, s Stream, credit int) *SendStream {
	ss := &SendStream{ch: ch, s: s, credit: credit}
	ss.cond.L = &ss.mu
	return ss
}

func (w *SendStream) grant(n uint32) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if int64(w.credit)+int64(n) > 2*MaxWindow {
		return fmt.Errorf("%w: window overflow on channel %d stream %d", ErrProtocol, w.ch.id, w.s)
	}
	w.credit += int(n)
	w.cond.Broadcast()
	return nil
}

func (w *SendStream) fail(err error) {
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.cond.Broadcast()
	w.mu.Unlock()
}

// Write sends p as Data frames, blocking while the peer's window is full.
func (w *SendStream) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		w.mu.Lock()
		for w.credit == 0 && w.err == nil && !w.closed {
			w.cond.Wait()
		}
		if w.err != nil || w.closed {
			err := w.err
			if err == nil {
				err = ErrChannelClosed
			}
			w.mu.Unlock()
			return written, err
		}
		n := min(len(p), w.credit, MaxDataChunk)
		w.credit -= n
		w.mu.Unlock()
		if err := w.ch.m.writeFrame(Frame{Type: TypeData, Stream: w.s, Channel: w.ch.id, Payload: p[:n]}); err != nil {
			return written, err
		}
		written += n
		p = p[n:]
	}
	return written, nil
}

// CloseWrite sends EOF. It is idempotent and a no-op on a failed stream.
func (w *SendStream) CloseWrite() error {
	w.mu.Lock()
	if w.closed || w.err != nil {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	w.cond.Broadcast()
	w.mu.Unlock()
	return w.ch.m.writeFrame(Frame{Type: TypeEOF, Stream: w.s, Channel: w.ch.id})
}
