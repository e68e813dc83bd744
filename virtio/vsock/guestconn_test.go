package vsock

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

type netConn = net.UnixConn

func dialUnix(path string) (*netConn, error) {
	return net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
}

// gconn is a guest stream socket of the test guest. Its methods are the
// application's view (blocking Read/Write like a socket).
type gconn struct {
	s            *gstack
	lport, rport uint32 // guest (local) and host (remote) ports

	// Guarded by s.mu.
	connecting               bool
	refused                  bool
	removed                  bool
	rst                      bool         // reset by the peer (or a transport reset)
	rbuf                     bytes.Buffer // received, not yet read
	bufAlloc                 uint32
	rxCnt                    uint32 // bytes received
	fwdCnt                   uint32 // bytes the application read
	lastFwdSent              uint32
	maxInFlight              uint32 // most unread bytes ever held
	peerShut                 uint32
	sentShut                 uint32
	peerBufAlloc, peerFwdCnt uint32
	txCnt                    uint32
}

// credit is how much the guest may send now. mu held.
func (c *gconn) credit() uint32 {
	inFlight := c.txCnt - c.peerFwdCnt
	if inFlight > c.peerBufAlloc {
		return 0
	}
	return c.peerBufAlloc - inFlight
}

// removeLocked forgets the socket. mu held.
func (c *gconn) removeLocked() {
	c.removed = true
}

// dispatch handles a packet the device sent. mu held.
func (s *gstack) dispatch(p gpkt) {
	k := gkey{local: p.dstPort, remote: p.srcPort}
	c := s.conns[k]
	if c == nil {
		switch p.op {
		case opRequest:
			s.requests.Add(1)
			if s.ignoreRequests {
				s.stray = append(s.stray, p)
				return
			}
			l, ok := s.listeners[p.dstPort]
			if !ok {
				s.rstTo(p)
				return
			}
			c = &gconn{s: s, lport: p.dstPort, rport: p.srcPort, bufAlloc: s.opt.bufAlloc,
				peerBufAlloc: p.bufAlloc, peerFwdCnt: p.fwdCnt}
			select {
			case l <- c:
				s.conns[k] = c
				s.send(c, opResponse, 0, nil)
			default:
				s.rstTo(p) // backlog full
			}
		case opRst:
			s.stray = append(s.stray, p)
		default:
			s.rstTo(p)
		}
		return
	}
	c.peerBufAlloc, c.peerFwdCnt = p.bufAlloc, p.fwdCnt
	switch p.op {
	case opResponse:
		if !c.connecting {
			s.errs = append(s.errs, fmt.Sprintf("RESPONSE on established %v", k))
		}
		c.connecting = false
	case opRst:
		if c.connecting {
			c.refused = true
		}
		c.connecting = false
		c.rst = true
		c.removeLocked()
		delete(s.conns, k)
	case opRW:
		if c.connecting {
			s.errs = append(s.errs, fmt.Sprintf("RW before RESPONSE on %v", k))
		}
		if c.peerShut&shutSend != 0 {
			s.errs = append(s.errs, fmt.Sprintf("RW after SHUTDOWN(SEND) on %v", k))
		}
		n := uint32(len(p.payload))
		if held := c.rxCnt - c.fwdCnt + n; held > c.bufAlloc {
			s.errs = append(s.errs, fmt.Sprintf("credit exceeded on %v: %d unread bytes, buf_alloc %d", k, held, c.bufAlloc))
		}
		c.rbuf.Write(p.payload)
		c.rxCnt += n
		c.maxInFlight = max(c.maxInFlight, c.rxCnt-c.fwdCnt)
	case opShutdown:
		c.peerShut |= p.flags
	case opCreditRequest:
		s.send(c, opCreditUpdate, 0, nil)
	case opCreditUpdate:
	default:
		s.errs = append(s.errs, fmt.Sprintf("unexpected op %d on %v", p.op, k))
	}
}

// listen makes the guest accept connections on port; the channel has a
// backlog of 64.
func (s *gstack) listen(port uint32) <-chan *gconn {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := make(chan *gconn, 64)
	s.listeners[port] = ch
	return ch
}

// dial connects to host port port; it fails if the device answers RST.
func (s *gstack) dial(port uint32) (*gconn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := &gconn{s: s, lport: s.nextPort, rport: port, bufAlloc: s.opt.bufAlloc, connecting: true}
	s.nextPort++
	s.conns[gkey{c.lport, c.rport}] = c
	s.send(c, opRequest, 0, nil)
	if err := s.wait("RESPONSE", func() bool { return !c.connecting }); err != nil {
		return nil, err
	}
	if c.refused {
		return nil, fmt.Errorf("connect to port %d: %w", port, errReset)
	}
	return c, nil
}

// Write sends p within the device's credit, as the guest kernel would.
func (c *gconn) Write(p []byte) (int, error) {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	done := 0
	for done < len(p) {
		err := s.wait("credit", func() bool {
			return c.rst || c.removed || c.sentShut&shutSend != 0 || c.credit() > 0 && len(s.txq) < 64
		})
		switch {
		case err != nil:
			return done, err
		case c.rst || c.removed:
			return done, errReset
		case c.sentShut&shutSend != 0:
			return done, io.ErrClosedPipe
		}
		n := min(len(p)-done, int(c.credit()), s.opt.txPayload)
		s.send(c, opRW, 0, append([]byte(nil), p[done:done+n]...))
		c.txCnt += uint32(n)
		done += n
	}
	return done, nil
}

// Read returns received bytes; io.EOF after the host's SHUTDOWN(SEND).
// Like Linux, it tells the device about freed space once the device's view
// of it drops below half.
func (c *gconn) Read(p []byte) (int, error) {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.wait("data", func() bool {
		return c.rbuf.Len() > 0 || c.rst || c.removed || c.peerShut&shutSend != 0
	}); err != nil {
		return 0, err
	}
	if c.rbuf.Len() == 0 {
		if c.rst {
			return 0, errReset
		}
		return 0, io.EOF
	}
	n, _ := c.rbuf.Read(p)
	c.fwdCnt += uint32(n)
	if !c.rst && !c.removed && c.bufAlloc-(c.rxCnt-c.lastFwdSent) < c.bufAlloc/2 {
		s.send(c, opCreditUpdate, 0, nil)
	}
	return n, nil
}

// CloseWrite is shutdown(SHUT_WR).
func (c *gconn) CloseWrite() error {
	c.shutdown(shutSend)
	return nil
}

// CloseRead is shutdown(SHUT_RD).
func (c *gconn) CloseRead() {
	c.shutdown(shutRcv)
}

func (c *gconn) shutdown(flags uint32) {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.rst || c.removed {
		return
	}
	c.sentShut |= flags
	s.send(c, opShutdown, flags, nil)
}

// Close is close(): SHUTDOWN of both directions; the device answers RST
// (see waitClosed).
func (c *gconn) Close() error {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.rst || c.removed {
		return nil
	}
	c.sentShut = shutBoth
	s.send(c, opShutdown, shutBoth, nil)
	return nil
}

// waitClosed waits for the device's RST after Close.
func (c *gconn) waitClosed() error {
	return c.s.waitFor("RST", func() bool { return c.rst || c.removed })
}

// hostConnect connects a host client to the device's socket and asks for
// guest port port. It returns the connection and the host port the device
// assigned.
func hostConnect(path string, port uint32) (*netConn, uint32, error) {
	c, err := dialUnix(path)
	if err != nil {
		return nil, 0, err
	}
	if _, err := fmt.Fprintf(c, "CONNECT %d\n", port); err != nil {
		c.Close()
		return nil, 0, err
	}
	// A deadlock guard, not a timing assertion: a device that never
	// answers fails the test instead of hanging it.
	c.SetReadDeadline(time.Now().Add(waitTimeout))
	line, err := readLine(c)
	if err != nil {
		c.Close()
		return nil, 0, fmt.Errorf("reading OK line: %w", err)
	}
	c.SetReadDeadline(time.Time{})
	var hp uint32
	if _, err := fmt.Sscanf(line, "OK %d", &hp); err != nil {
		c.Close()
		return nil, 0, fmt.Errorf("OK line %q: %w", line, err)
	}
	return c, hp, nil
}

// readLine reads up to a newline one byte at a time (no read-ahead).
func readLine(r io.Reader) (string, error) {
	var line []byte
	var b [1]byte
	for len(line) < 64 {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return string(line), err
		}
		if b[0] == '\n' {
			return string(line), nil
		}
		line = append(line, b[0])
	}
	return string(line), errors.New("line too long")
}
