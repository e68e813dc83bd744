package net

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	stdnet "net"
	"testing"
	"time"
)

// A tiny IPv4 stack for the mock guest in the TAP tests: it answers ARP and
// ICMP echo, takes UDP datagrams, and speaks just enough TCP to receive a
// stream from the host and to send one (optionally as one TSO frame).
// Every checksum it receives is verified, completing partial ones first,
// so a frame altered anywhere on its way fails the test.

const (
	etherIPv4 = 0x0800
	etherARP  = 0x0806
	protoICMP = 1
	protoTCP  = 6
	protoUDP  = 17

	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpPSH = 0x08
	tcpACK = 0x10

	guestMSS = 1448 // segment size the guest sends with
)

var broadcast = stdnet.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

func csumAdd(sum uint32, b []byte) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	return sum
}

func csumFold(sum uint32) uint16 {
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

func pseudoSum(src, dst [4]byte, proto byte, n int) uint32 {
	return csumAdd(csumAdd(0, src[:]), dst[:]) + uint32(proto) + uint32(n)
}

// ipv4 builds an IPv4 header for a payload of n bytes.
func ipv4(src, dst [4]byte, proto byte, n int, id uint16) []byte {
	h := make([]byte, 20)
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(20+n))
	binary.BigEndian.PutUint16(h[4:], id)
	h[6] = 0x40 // DF
	h[8] = 64
	h[9] = proto
	copy(h[12:], src[:])
	copy(h[16:], dst[:])
	binary.BigEndian.PutUint16(h[10:], ^csumFold(csumAdd(0, h)))
	return h
}

func ether(dst, src stdnet.HardwareAddr, typ uint16) []byte {
	h := make([]byte, 14)
	copy(h, dst)
	copy(h[6:], src)
	binary.BigEndian.PutUint16(h[12:], typ)
	return h
}

// tcpConn is one side of a TCP connection in the guest.
type tcpConn struct {
	local, remote  uint16
	sndNxt, rcvNxt uint32
	established    bool
	finRcvd        bool
	data           []byte // received in order
}

// stack is the guest's network stack over a mock driver.
type stack struct {
	t       testing.TB
	g       *guest
	mac     stdnet.HardwareAddr
	ip      [4]byte
	hostIP  [4]byte
	hostMAC stdnet.HardwareAddr
	bufSize uint32
	wake    chan struct{} // host-side goroutines signal progress here
	ipID    uint16

	listen map[uint16]bool
	conns  map[uint16]*tcpConn // by local port
	udp    [][]byte

	// What arrived, for assertions.
	frames, gsoFrames, partial int
	maxFrame, maxBuffers       int
}

func newStack(t testing.TB, g *guest, ip, hostIP [4]byte, bufSize uint32) *stack {
	return &stack{
		t: t, g: g, mac: g.dev.MAC(), ip: ip, hostIP: hostIP, bufSize: bufSize,
		wake: make(chan struct{}, 1), listen: map[uint16]bool{}, conns: map[uint16]*tcpConn{},
	}
}

// notify wakes run from another goroutine.
func (s *stack) notify() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// run serves the network until cond holds.
func (s *stack) run(what string, cond func() bool) {
	s.t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.g.reap()
		for {
			f, ok, err := s.g.tryFrame()
			if err != nil {
				s.t.Fatal(err)
			}
			if !ok {
				break
			}
			if err := s.handle(f); err != nil {
				s.t.Fatal(err)
			}
		}
		for s.g.rx.Free() > 0 {
			s.g.postRx(s.bufSize)
		}
		s.g.rx.Kick()
		if cond() {
			return
		}
		select {
		case <-s.g.irq.C():
		case <-s.wake:
		case <-deadline.C:
			s.t.Fatalf("timed out waiting for %s (device stats: %s)", what, s.g.dev.stats.String())
		}
	}
}

// send transmits one frame (Ethernet header included) behind h, waiting
// for a free descriptor if needed.
func (s *stack) send(h, frame []byte) {
	s.t.Helper()
	if s.g.reap(); s.g.tx.Free() == 0 {
		s.run("a free transmit descriptor", func() bool { return s.g.tx.Free() > 0 })
	}
	s.g.send(h, frame)
}

func (s *stack) handle(f rxFrame) error {
	s.frames++
	s.maxFrame = max(s.maxFrame, len(f.frame))
	s.maxBuffers = max(s.maxBuffers, f.buffers)
	h := hdr(f.hdr)
	if h.gsoType() != GSONone {
		s.gsoFrames++
	}
	fr := f.frame
	if len(fr) < 14 {
		return fmt.Errorf("runt frame of %d bytes", len(fr))
	}
	if h.flags()&HdrNeedsCsum != 0 {
		s.partial++
		start, off := int(h.csumStart()), int(h.csumOffset())
		if start+off+2 > len(fr) {
			return fmt.Errorf("csum_start %d + csum_offset %d past a %d-byte frame", start, off, len(fr))
		}
		binary.BigEndian.PutUint16(fr[start+off:], ^csumFold(csumAdd(0, fr[start:])))
	}
	switch binary.BigEndian.Uint16(fr[12:]) {
	case etherARP:
		return s.arp(fr[14:])
	case etherIPv4:
		if !bytes.Equal(fr[:6], s.mac) {
			return nil
		}
		s.hostMAC = append(stdnet.HardwareAddr(nil), fr[6:12]...)
		return s.ip4(fr[14:], h)
	}
	return nil // IPv6 and the like: not ours
}

func (s *stack) arp(p []byte) error {
	if len(p) < 28 || binary.BigEndian.Uint16(p[0:]) != 1 || binary.BigEndian.Uint16(p[2:]) != etherIPv4 {
		return nil
	}
	op := binary.BigEndian.Uint16(p[6:])
	sha, spa, tpa := p[8:14], p[14:18], p[24:28]
	if !bytes.Equal(tpa, s.ip[:]) {
		return nil
	}
	if op == 2 {
		s.hostMAC = append(stdnet.HardwareAddr(nil), sha...)
		return nil
	}
	reply := ether(sha, s.mac, etherARP)
	body := make([]byte, 28)
	copy(body, p[:6])
	binary.BigEndian.PutUint16(body[6:], 2)
	copy(body[8:], s.mac)
	copy(body[14:], s.ip[:])
	copy(body[18:], sha)
	copy(body[24:], spa)
	s.send(header(0, 0, 0, 0, 0, 0), append(reply, body...))
	return nil
}

// resolve asks for the host's MAC address.
func (s *stack) resolve() {
	s.t.Helper()
	if s.hostMAC != nil {
		return
	}
	body := make([]byte, 28)
	binary.BigEndian.PutUint16(body[0:], 1)
	binary.BigEndian.PutUint16(body[2:], etherIPv4)
	body[4], body[5] = 6, 4
	binary.BigEndian.PutUint16(body[6:], 1)
	copy(body[8:], s.mac)
	copy(body[14:], s.ip[:])
	copy(body[24:], s.hostIP[:])
	s.send(header(0, 0, 0, 0, 0, 0), append(ether(broadcast, s.mac, etherARP), body...))
	s.run("an ARP reply from the host", func() bool { return s.hostMAC != nil })
}

func (s *stack) ip4(p []byte, h hdr) error {
	if len(p) < 20 || p[0] != 0x45 {
		return fmt.Errorf("IPv4 header %x", p[:min(len(p), 20)])
	}
	if csumFold(csumAdd(0, p[:20])) != 0xffff {
		return errors.New("bad IPv4 header checksum")
	}
	total := int(binary.BigEndian.Uint16(p[2:]))
	if total > len(p) || total < 20 {
		return fmt.Errorf("IPv4 total length %d in %d bytes", total, len(p))
	}
	if !bytes.Equal(p[16:20], s.ip[:]) {
		return nil
	}
	var src [4]byte
	copy(src[:], p[12:16])
	proto, body := p[9], p[20:total]
	if proto == protoTCP || proto == protoUDP {
		if csumFold(pseudoSum(src, s.ip, proto, len(body))+csumAdd(0, body)) != 0xffff {
			return fmt.Errorf("bad %d checksum on a %d-byte segment (gso %d)", proto, len(body), h.gsoType())
		}
	}
	switch proto {
	case protoICMP:
		return s.icmp(src, body)
	case protoUDP:
		if len(body) >= 8 {
			s.udp = append(s.udp, append([]byte(nil), body[8:]...))
		}
	case protoTCP:
		return s.tcp(body)
	}
	return nil
}

func (s *stack) icmp(src [4]byte, p []byte) error {
	if len(p) < 8 || p[0] != 8 {
		return nil
	}
	if csumFold(csumAdd(0, p)) != 0xffff {
		return errors.New("bad ICMP checksum")
	}
	reply := append([]byte(nil), p...)
	reply[0], reply[2], reply[3] = 0, 0, 0
	binary.BigEndian.PutUint16(reply[2:], ^csumFold(csumAdd(0, reply)))
	s.sendIP(src, protoICMP, reply)
	return nil
}

// sendIP sends a complete (fully checksummed) IPv4 packet to the host.
func (s *stack) sendIP(dst [4]byte, proto byte, payload []byte) {
	s.ipID++
	frame := append(ether(s.hostMAC, s.mac, etherIPv4), ipv4(s.ip, dst, proto, len(payload), s.ipID)...)
	s.send(header(0, 0, 0, 0, 0, 0), append(frame, payload...))
}

// sendUDP sends a datagram; with partial set it leaves the checksum to the
// host (VIRTIO_NET_F_CSUM), as a guest with checksum offload does.
func (s *stack) sendUDP(sport, dport uint16, data []byte, partial bool) {
	s.resolve()
	u := make([]byte, 8+len(data))
	binary.BigEndian.PutUint16(u[0:], sport)
	binary.BigEndian.PutUint16(u[2:], dport)
	binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
	copy(u[8:], data)
	sum := pseudoSum(s.ip, s.hostIP, protoUDP, len(u))
	h := header(0, 0, 0, 0, 0, 0)
	if partial {
		binary.BigEndian.PutUint16(u[6:], csumFold(sum))
		h = header(HdrNeedsCsum, 0, 0, 0, 14+20, 6)
	} else {
		binary.BigEndian.PutUint16(u[6:], ^csumFold(sum+csumAdd(0, u)))
	}
	s.ipID++
	frame := append(ether(s.hostMAC, s.mac, etherIPv4), ipv4(s.ip, s.hostIP, protoUDP, len(u), s.ipID)...)
	s.send(h, append(frame, u...))
}

// tcpSegment builds a TCP segment; with tso it is one GSO frame that the
// host cuts into guestMSS-sized segments.
func (s *stack) tcpSegment(c *tcpConn, flags byte, data []byte, tso bool) (h, frame []byte) {
	optLen := 0
	if flags&tcpSYN != 0 {
		optLen = 4
	}
	seg := make([]byte, 20+optLen+len(data))
	binary.BigEndian.PutUint16(seg[0:], c.local)
	binary.BigEndian.PutUint16(seg[2:], c.remote)
	binary.BigEndian.PutUint32(seg[4:], c.sndNxt)
	binary.BigEndian.PutUint32(seg[8:], c.rcvNxt)
	seg[12] = byte((20 + optLen) / 4 << 4)
	seg[13] = flags
	binary.BigEndian.PutUint16(seg[14:], 65535)
	if optLen > 0 {
		seg[20], seg[21] = 2, 4 // MSS
		binary.BigEndian.PutUint16(seg[22:], 1460)
	}
	copy(seg[20+optLen:], data)
	sum := pseudoSum(s.ip, s.hostIP, protoTCP, len(seg))
	h = header(0, 0, 0, 0, 0, 0)
	if tso {
		binary.BigEndian.PutUint16(seg[16:], csumFold(sum))
		h = header(HdrNeedsCsum, GSOTCPv4, 14+20+20, guestMSS, 14+20, 16)
	} else {
		binary.BigEndian.PutUint16(seg[16:], ^csumFold(sum+csumAdd(0, seg)))
	}
	s.ipID++
	frame = append(ether(s.hostMAC, s.mac, etherIPv4), ipv4(s.ip, s.hostIP, protoTCP, len(seg), s.ipID)...)
	return h, append(frame, seg...)
}

func (s *stack) sendTCP(c *tcpConn, flags byte, data []byte, tso bool) {
	h, f := s.tcpSegment(c, flags, data, tso)
	s.send(h, f)
	c.sndNxt += uint32(len(data))
	if flags&(tcpSYN|tcpFIN) != 0 {
		c.sndNxt++
	}
}

func (s *stack) tcp(p []byte) error {
	if len(p) < 20 {
		return nil
	}
	sport, dport := binary.BigEndian.Uint16(p[0:]), binary.BigEndian.Uint16(p[2:])
	seq, ack := binary.BigEndian.Uint32(p[4:]), binary.BigEndian.Uint32(p[8:])
	off, flags := int(p[12]>>4)*4, p[13]
	if off < 20 || off > len(p) {
		return fmt.Errorf("TCP data offset %d", off)
	}
	data := p[off:]
	c := s.conns[dport]
	switch {
	case flags&tcpRST != 0:
		return fmt.Errorf("host reset the connection to port %d", dport)
	case c == nil && flags&tcpSYN != 0 && s.listen[dport]:
		c = &tcpConn{local: dport, remote: sport, sndNxt: 1000, rcvNxt: seq + 1}
		s.conns[dport] = c
		s.sendTCP(c, tcpSYN|tcpACK, nil, false)
		return nil
	case c == nil || c.remote != sport:
		return nil
	case !c.established && flags&(tcpSYN|tcpACK) == tcpSYN|tcpACK:
		// Our active open completes.
		c.rcvNxt = seq + 1
		c.established = true
		s.sendTCP(c, tcpACK, nil, false)
		return nil
	case flags&tcpACK != 0 && ack == c.sndNxt:
		c.established = true
	}
	if len(data) > 0 || flags&tcpFIN != 0 {
		if seq == c.rcvNxt {
			c.data = append(c.data, data...)
			c.rcvNxt += uint32(len(data))
			if flags&tcpFIN != 0 {
				c.rcvNxt++
				c.finRcvd = true
			}
		}
		// In order or not, say where we are (a duplicate ACK asks again).
		s.sendTCP(c, tcpACK, nil, false)
	}
	return nil
}
