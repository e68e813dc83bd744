package vsock

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/boxd-dev/boxd/virtio/queue"
)

// maxRxPayload bounds one data packet to the guest (Linux's
// VIRTIO_VSOCK_MAX_PKT_BUF_SIZE); rx buffers are usually much smaller.
const maxRxPayload = 64 << 10

// handleTx handles one packet from the guest. Everything in it is untrusted.
// mu held.
func (d *Device) handleTx(ch *queue.Chain) {
	avail := ch.Readable.Len()
	if avail < HeaderLen {
		d.stats.ShortPackets.Add(1)
		return
	}
	b := d.txScratch[:]
	if _, err := ch.Readable.ReadAt(d.mem, b, 0); err != nil {
		d.stats.InvalidChains.Add(1)
		return
	}
	h := decodeHeader(b)
	key := connKey{host: h.DstPort, guest: h.SrcPort}
	if err := validate(h, d.cfg.GuestCID, avail-HeaderLen); err != nil {
		switch {
		case errors.Is(err, errBadCID):
			// Spoofed or misrouted: answering would talk to an address
			// that is not the guest's.
			d.stats.BadCID.Add(1)
			return
		case errors.Is(err, errBadLength):
			d.stats.BadLength.Add(1)
		case errors.Is(err, errBadType):
			d.stats.BadType.Add(1)
		default:
			d.stats.BadOp.Add(1)
		}
		// The stream cannot continue in step: reset it.
		if c := d.conns[key]; c != nil {
			if c.known() {
				d.reset(c)
			}
		} else if h.Op != opRst {
			d.queueRst(key)
		}
		return
	}
	d.stats.TxPackets.Add(1)
	if c := d.conns[key]; c != nil {
		d.connPacket(c, h, ch)
		return
	}
	switch h.Op {
	case opRst:
		// Nothing to reset; never answer an RST.
	case opRequest:
		d.guestConnect(h, key)
	default:
		d.stats.UnknownConn.Add(1)
		d.queueRst(key)
	}
}

// queueRst owes the guest an RST for a packet that matched no connection.
// mu held; processTx keeps len(rsts) < maxPendingRsts.
func (d *Device) queueRst(k connKey) {
	if len(d.rsts) < maxPendingRsts {
		d.rsts = append(d.rsts, k)
	}
}

// guestConnect starts a guest-initiated connection to host port key.host:
// a Unix socket at UDSPath_<port>.
func (d *Device) guestConnect(h header, key connKey) {
	if len(d.conns) >= d.cfg.MaxConnections {
		d.stats.ConnLimit.Add(1)
		d.queueRst(key)
		return
	}
	c := newConn(key, false)
	c.state = stateDialing
	c.peerBufAlloc, c.peerFwdCnt = h.BufAlloc, h.FwdCnt
	c.mu.Lock()
	c.updateCredit()
	c.mu.Unlock()
	ctx, cancel := context.WithCancel(d.ctx)
	c.cancel = cancel
	d.conns[key] = c
	d.wg.Add(1)
	go d.dial(c, ctx, fmt.Sprintf("%s_%d", d.cfg.UDSPath, key.host))
}

// connPacket applies a valid guest packet to its connection's state machine.
func (d *Device) connPacket(c *conn, h header, ch *queue.Chain) {
	if c.state == stateClosing {
		return // crossed our RST
	}
	if !c.known() {
		// The guest names a connection whose REQUEST it has not seen.
		if h.Op != opRst {
			d.stats.BadOp.Add(1)
		}
		return
	}
	// Every packet carries the sender's credit.
	c.peerBufAlloc, c.peerFwdCnt = h.BufAlloc, h.FwdCnt
	c.mu.Lock()
	c.updateCredit()
	if c.peerFree > 0 {
		c.creditRequested = false
	}
	c.mu.Unlock()

	switch {
	case h.Op == opRst:
		d.stats.ResetsReceived.Add(1)
		if c.state == stateConnecting {
			d.stats.HostConnectFails.Add(1)
		}
		d.drop(c)
		return
	case c.state == stateDialing:
		if h.Op != opCreditUpdate && h.Op != opCreditRequest {
			d.badOp(c)
		}
		return
	case c.state == stateConnecting:
		if h.Op != opResponse {
			d.badOp(c)
			return
		}
		c.timer.Stop()
		c.state = stateEstablished
		d.stats.HostConnects.Add(1)
		d.startIO(c, fmt.Sprintf("OK %d\n", c.key.host))
		d.schedule(c)
		return
	}

	switch h.Op {
	case opRW:
		if !d.guestData(c, h, ch) {
			return
		}
	case opCreditRequest:
		c.pend |= pendCreditUpdate
	case opShutdown:
		if !d.guestShutdown(c, h.Flags) {
			return
		}
	case opCreditUpdate:
		// Credit absorbed above.
	default: // REQUEST or RESPONSE on a live connection
		d.badOp(c)
		return
	}
	d.schedule(c)
}

// guestData appends an RW payload to c.out. It reports false if it reset c.
func (d *Device) guestData(c *conn, h header, ch *queue.Chain) bool {
	if c.guestShut&shutSend != 0 {
		d.badOp(c) // data after "I will send no more"
		return false
	}
	if h.Len == 0 {
		return true
	}
	c.mu.Lock()
	if h.Len > c.guestCredit(d.cfg.BufferSize) {
		c.mu.Unlock()
		d.stats.CreditViolations.Add(1)
		d.reset(c)
		return false
	}
	// guestCredit keeps prefix + unforwarded bytes ≤ okLineMax + BufferSize,
	// the ring's size, so the payload fits.
	off, left := uint64(HeaderLen), int(h.Len)
	for left > 0 {
		seg := c.out.writable()
		seg = seg[:min(len(seg), left)]
		if _, err := ch.Readable.ReadAt(d.mem, seg, off); err != nil {
			c.mu.Unlock()
			d.stats.InvalidChains.Add(1)
			d.reset(c)
			return false
		}
		c.out.commit(len(seg))
		off += uint64(len(seg))
		left -= len(seg)
	}
	c.rxCnt += h.Len
	c.wcond.Signal()
	c.mu.Unlock()
	d.stats.TxBytes.Add(uint64(h.Len))
	return true
}

// guestShutdown applies SHUTDOWN flags (they accumulate). RCV stops reading
// the host and half-closes its reading side; SEND half-closes the host's
// writing side once buffered data is written. With both, the device resets
// the connection when the writer is done, as the spec expects of the peer
// of a full shutdown. It reports false if it reset c.
func (d *Device) guestShutdown(c *conn, flags uint32) bool {
	added := flags & shutBoth &^ c.guestShut
	c.guestShut |= added
	c.mu.Lock()
	h := c.host
	if added&shutRcv != 0 {
		c.rdShut = true
		c.in.discard(c.in.Len())
		c.rcond.Signal()
	}
	if added&shutSend != 0 {
		c.wrShut = true
		c.wcond.Signal()
	}
	wrDone := c.wrDone
	c.mu.Unlock()
	if added&shutRcv != 0 {
		_ = h.CloseRead() // the host's writes now fail with EPIPE
	}
	if c.guestShut == shutBoth && wrDone {
		d.reset(c)
		return false
	}
	return true
}

// service looks at what the host side of c reported (dial result, I/O
// errors, writer progress, timeouts) and schedules packets. mu held.
func (d *Device) service(c *conn) {
	if c.removed {
		return
	}
	c.mu.Lock()
	dialDone, dialErr := c.dialDone, c.dialErr
	ioErr := c.readErr
	if ioErr == nil {
		ioErr = c.wrErr
	}
	wrDone, fwd := c.wrDone, c.fwdCnt
	c.mu.Unlock()

	switch c.state {
	case stateDialing:
		if !dialDone {
			return
		}
		c.cancel()
		c.cancel = nil
		if dialErr != nil {
			d.stats.GuestConnectFails.Add(1)
			d.reset(c)
			return
		}
		c.state = stateEstablished
		c.pend |= pendResponse
		d.stats.GuestConnects.Add(1)
		d.startIO(c, "")
	case stateConnecting:
		if c.timedOut.Load() {
			d.stats.ConnectTimeouts.Add(1)
			d.stats.HostConnectFails.Add(1)
			d.reset(c)
			return
		}
	case stateEstablished:
		if ioErr != nil {
			d.stats.HostErrors.Add(1)
			d.reset(c)
			return
		}
		if c.guestShut == shutBoth && wrDone {
			d.reset(c)
			return
		}
		d.creditCheck(c, fwd)
	}
	d.schedule(c)
}

// creditCheck owes the guest a CREDIT_UPDATE when its view of our free
// buffer is below half and the update would be worth a packet: a quarter of
// the buffer freed, or everything it sent written out. Data packets carry
// the credit too, so busy two-way streams rarely need one.
func (d *Device) creditCheck(c *conn, fwd uint32) {
	if c.guestShut&shutSend != 0 {
		return // the guest sends no more: credit is moot
	}
	freed := fwd - c.lastFwdSent
	if freed == 0 {
		return
	}
	size := d.cfg.BufferSize
	guestView := int64(size) - int64(c.rxCnt-c.lastFwdSent)
	if guestView < int64(size/2) && (freed >= size/4 || fwd == c.rxCnt) {
		c.pend |= pendCreditUpdate
	}
}

// known reports whether the guest has heard of c: all but a host-initiated
// connection whose REQUEST is still undelivered.
func (c *conn) known() bool {
	return c.state != stateConnecting || c.pend&pendRequest == 0
}

// reset closes the host side of c and owes the guest an RST, unless the
// guest never heard of the connection.
func (d *Device) reset(c *conn) {
	if !c.known() {
		d.drop(c)
		return
	}
	c.shutdownHost()
	c.state = stateClosing
	c.pend = pendRst
	d.schedule(c)
}

// drop closes the host side of c and forgets it, telling the guest nothing.
func (d *Device) drop(c *conn) {
	c.shutdownHost()
	d.remove(c)
}

func (d *Device) remove(c *conn) {
	delete(d.conns, c.key)
	if c.hostInit {
		delete(d.ephemeral, c.key.host)
	}
	c.removed = true
}

func (d *Device) badOp(c *conn) {
	d.stats.BadOp.Add(1)
	d.reset(c)
}

// schedule puts c on the rx round-robin if it owes the guest a packet.
func (d *Device) schedule(c *conn) {
	if !c.inRx && !c.removed && d.nextOp(c) != 0 {
		c.inRx = true
		d.rxReady = append(d.rxReady, c)
	}
}

// nextOp returns the packet c would send the guest now, or 0. In order:
// RST, the handshake, data within the guest's credit, SHUTDOWN(SEND) once
// the host's data is all delivered, one CREDIT_REQUEST when data waits for
// credit, and a CREDIT_UPDATE only when nothing else carries the credit.
func (d *Device) nextOp(c *conn) uint16 {
	switch {
	case c.pend&pendRst != 0:
		return opRst
	case c.pend&pendResponse != 0:
		return opResponse
	case c.pend&pendRequest != 0:
		return opRequest
	case c.state != stateEstablished:
		return 0
	}
	c.mu.Lock()
	inLen, hostEOF, peerFree := c.in.Len(), c.hostEOF, c.peerFree
	c.mu.Unlock()
	receiving := c.guestShut&shutRcv == 0
	switch {
	case receiving && inLen > 0 && peerFree > 0:
		return opRW
	case hostEOF && (inLen == 0 || !receiving) && !c.sentShutdown:
		return opShutdown
	case receiving && inLen > 0 && !c.creditRequested:
		return opCreditRequest
	case c.pend&pendCreditUpdate != 0:
		return opCreditUpdate
	}
	return 0
}

// fillConn writes c's next packet into ch, which has room ≥ HeaderLen
// writable bytes, and returns the bytes written (0: nothing usable).
func (d *Device) fillConn(c *conn, ch *queue.Chain, room uint64) uint32 {
	op := d.nextOp(c)
	if op == 0 {
		return 0
	}
	h := d.newHeader(c.key, op)
	c.mu.Lock()
	defer c.mu.Unlock()
	h.FwdCnt = c.fwdCnt
	var a, b []byte
	switch op {
	case opRW:
		n := min(uint64(c.in.Len()), uint64(c.peerFree), room-HeaderLen, maxRxPayload)
		if n == 0 {
			d.stats.RxBufferErrors.Add(1) // a buffer with no room for data
			return 0
		}
		h.Len = uint32(n)
		a, b = c.in.segments(int(n))
	case opShutdown:
		h.Flags = shutSend
	}
	if !d.writePacket(ch, h, a, b) {
		return 0
	}
	c.lastFwdSent = h.FwdCnt
	c.pend &^= pendCreditUpdate // every packet carries the credit
	switch op {
	case opRst:
		d.stats.ResetsSent.Add(1)
		c.pend = 0
		d.remove(c)
	case opResponse:
		c.pend &^= pendResponse
	case opRequest:
		c.pend &^= pendRequest
		c.timer = time.AfterFunc(d.cfg.ConnectTimeout, func() {
			c.timedOut.Store(true)
			d.markReady(c)
		})
	case opRW:
		c.in.discard(int(h.Len))
		c.txCnt += h.Len
		c.updateCredit()
		c.rcond.Signal() // buffer space grew
		d.stats.RxBytes.Add(uint64(h.Len))
	case opShutdown:
		c.sentShutdown = true
	case opCreditRequest:
		c.creditRequested = true
	}
	return HeaderLen + h.Len
}
