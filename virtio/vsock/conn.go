package vsock

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// connKey identifies a connection: the host-side and guest-side ports (the
// CIDs are always HostCID and the guest's).
type connKey struct{ host, guest uint32 }

type connState uint8

const (
	stateConnecting  connState = iota // host-initiated: REQUEST owed or sent, awaiting RESPONSE
	stateDialing                      // guest-initiated: connecting to UDSPath_P
	stateEstablished                  // data flows
	stateClosing                      // RST owed to the guest; removed once delivered
)

// Control packets a connection owes the guest.
const (
	pendRequest = 1 << iota
	pendResponse
	pendCreditUpdate
	pendRst
)

// okLineMax is the longest "OK <port>\n" line.
const okLineMax = len("OK 4294967295\n")

// conn is one stream between a guest socket and a host Unix socket.
//
// Two goroutines move host bytes: reader fills in (host → guest) and writer
// drains out (guest → host). The worker drains in into rx packets and fills
// out from tx packets. Both rings are bounded, and the reader reads only as
// much as the guest has credit for, so a connection never holds more than
// 2×BufferSize bytes and a stalled peer stops its sender instead of growing
// a buffer.
type conn struct {
	key      connKey
	hostInit bool

	// Guarded by Device.mu.
	state           connState
	pend            uint8
	inRx            bool   // on Device.rxReady
	removed         bool   // no longer in Device.conns
	peerBufAlloc    uint32 // guest's buf_alloc, from its last packet
	peerFwdCnt      uint32 // guest's fwd_cnt, from its last packet
	txCnt           uint32 // stream bytes sent to the guest
	rxCnt           uint32 // stream bytes received from the guest
	lastFwdSent     uint32 // fwdCnt as last told to the guest
	guestShut       uint32 // SHUTDOWN flags received
	sentShutdown    bool   // SHUTDOWN(SEND) delivered after host EOF
	creditRequested bool   // CREDIT_REQUEST sent; cleared when credit grows
	timer           *time.Timer
	cancel          context.CancelFunc // stops a dial in progress

	queued   atomic.Bool // on Device.notified
	timedOut atomic.Bool // the guest did not answer our REQUEST in time

	mu    sync.Mutex
	rcond sync.Cond // wakes the reader: credit or buffer space grew, or closing; L is &mu
	wcond sync.Cond // wakes the writer: data in out, wrShut, or closing; L is &mu
	// Guarded by mu.
	host     *net.UnixConn // nil while dialing
	closed   bool          // host side closed; goroutines exit
	in, out  ring
	prefix   int    // bytes at the head of out that are not stream data ("OK n\n")
	fwdCnt   uint32 // guest stream bytes written to the host
	peerFree int64  // guest credit left beyond what was sent; written with Device.mu also held
	rdShut   bool   // guest will receive no more: stop reading the host
	wrShut   bool   // guest will send no more: half-close the host after out drains
	hostEOF  bool
	readErr  error
	wrErr    error
	wrDone   bool // writer half-closed the host and exited
	dialDone bool
	dialErr  error
}

func newConn(key connKey, hostInit bool) *conn {
	c := &conn{key: key, hostInit: hostInit}
	c.rcond.L, c.wcond.L = &c.mu, &c.mu
	return c
}

// shutdownHost closes the host side and stops the connection's goroutines
// and timers. Device.mu held.
func (c *conn) shutdownHost() {
	if c.timer != nil {
		c.timer.Stop()
	}
	if c.cancel != nil {
		c.cancel()
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	h := c.host
	c.rcond.Signal()
	c.wcond.Signal()
	c.mu.Unlock()
	if h != nil {
		h.Close()
	}
}

// updateCredit recomputes the guest's free credit: buf_alloc minus the bytes
// in flight (sent but not yet forwarded by the guest). Whatever the guest
// claims, the result is in [0, 2^32): a lie only changes how fast the device
// sends to it, never how much the device buffers. Both locks held.
func (c *conn) updateCredit() {
	inFlight := c.txCnt - c.peerFwdCnt // wraps like the counters do
	free := max(int64(c.peerBufAlloc)-int64(inFlight), 0)
	if free > c.peerFree {
		c.rcond.Signal()
	}
	c.peerFree = free
}

// readWant is how many bytes the reader may read from the host now: what
// fits in the buffer and what the guest has credit for. mu held.
func (c *conn) readWant() int {
	return int(min(int64(c.in.Free()), c.peerFree-int64(c.in.Len())))
}

// guestCredit is how many more stream bytes the guest may send: our
// buf_alloc minus what it sent that was not yet written to the host. mu held.
func (c *conn) guestCredit(bufAlloc uint32) uint32 {
	used := c.rxCnt - c.fwdCnt
	if used > bufAlloc {
		return 0
	}
	return bufAlloc - used
}

// startIO allocates the buffers and starts the reader and writer. Called by
// the worker (Device.mu held) when the connection is established.
func (d *Device) startIO(c *conn, okLine string) {
	c.mu.Lock()
	c.in = newRing(int(d.cfg.BufferSize))
	c.out = newRing(int(d.cfg.BufferSize) + okLineMax)
	c.out.write([]byte(okLine))
	c.prefix = len(okLine)
	c.mu.Unlock()
	d.wg.Add(2)
	go d.reader(c)
	go d.writer(c)
}

// reader copies host bytes into c.in while the guest has credit.
func (d *Device) reader(c *conn) {
	defer d.wg.Done()
	for {
		c.mu.Lock()
		for !c.closed && !c.rdShut && c.readWant() <= 0 {
			c.rcond.Wait()
		}
		if c.closed || c.rdShut {
			c.mu.Unlock()
			return
		}
		seg := c.in.writable()
		seg = seg[:min(len(seg), c.readWant())]
		h := c.host
		c.mu.Unlock()

		n, err := h.Read(seg)

		c.mu.Lock()
		c.in.commit(n)
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			c.hostEOF = true
		case !c.closed && !c.rdShut:
			c.readErr = err
		}
		c.mu.Unlock()
		d.markReady(c)
		if err != nil {
			return
		}
	}
}

// writer drains c.out to the host, counting forwarded stream bytes, and
// half-closes the host once the guest shut down its sending side.
func (d *Device) writer(c *conn) {
	defer d.wg.Done()
	for {
		c.mu.Lock()
		for !c.closed && c.out.Len() == 0 && !c.wrShut {
			c.wcond.Wait()
		}
		if c.closed {
			c.mu.Unlock()
			return
		}
		h := c.host
		if c.out.Len() == 0 {
			c.mu.Unlock()
			err := h.CloseWrite()
			c.mu.Lock()
			if err != nil && !c.closed {
				c.wrErr = err
			}
			c.wrDone = true
			c.mu.Unlock()
			d.markReady(c)
			return
		}
		seg := c.out.readable()
		c.mu.Unlock()

		n, err := h.Write(seg)

		c.mu.Lock()
		c.out.discard(n)
		meta := min(n, c.prefix)
		c.prefix -= meta
		c.fwdCnt += uint32(n - meta)
		if err != nil && !c.closed {
			c.wrErr = err
		}
		c.mu.Unlock()
		d.markReady(c)
		if err != nil {
			return
		}
	}
}

// dial connects a guest-initiated connection to its host socket.
func (d *Device) dial(c *conn, ctx context.Context, path string) {
	defer d.wg.Done()
	var dl net.Dialer
	nc, err := dl.DialContext(ctx, "unix", path)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		if nc != nil {
			nc.Close()
		}
		return
	}
	c.dialDone, c.dialErr = true, err
	if err == nil {
		c.host = nc.(*net.UnixConn)
	}
	c.mu.Unlock()
	d.markReady(c)
}

// markReady queues c for the worker to look at its host side, and wakes it.
// Called from host goroutines and timers; never blocks on the worker.
func (d *Device) markReady(c *conn) {
	if !c.queued.Swap(true) {
		d.nmu.Lock()
		d.notified = append(d.notified, c)
		d.nmu.Unlock()
	}
	d.kick()
}

// takeNotified returns the connections marked since the last call.
func (d *Device) takeNotified() []*conn {
	d.nmu.Lock()
	defer d.nmu.Unlock()
	l := d.notified
	d.notified = nil
	for _, c := range l {
		c.queued.Store(false)
	}
	return l
}
