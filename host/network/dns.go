package network

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"
)

// Forwarder limits. A guest can only waste its own queries: beyond these,
// new queries and connections are dropped, never queued.
const (
	maxUDPInFlight  = 256
	maxTCPConns     = 64
	upstreamTimeout = 2 * time.Second  // per upstream, per UDP query
	tcpTimeout      = 30 * time.Second // a whole TCP connection
	maxUpstreams    = 3                // like the resolver's MAXNS
	dnsHeaderLen    = 12
)

// forwarder relays DNS between the guests and the host's resolvers,
// verbatim: it parses nothing but the 12-byte header's ID and QR bit, so
// it needs no DNS library and cannot misinterpret what it does not read.
// It listens on the gateway address, port 53, over UDP and TCP.
type forwarder struct {
	ns     namespace
	conf   *resolvConf
	udp    *net.UDPConn
	tcp    net.Listener
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	udpSem chan struct{}
	tcpSem chan struct{}
}

func startForwarder(ns namespace, gw netip.Addr, resolvPath string, subnet netip.Prefix) (*forwarder, error) {
	f := &forwarder{
		ns:     ns,
		conf:   &resolvConf{path: resolvPath, exclude: subnet},
		udpSem: make(chan struct{}, maxUDPInFlight),
		tcpSem: make(chan struct{}, maxTCPConns),
	}
	addr := netip.AddrPortFrom(gw, 53)
	err := ns.do(func() error {
		var err error
		if f.udp, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(addr)); err != nil {
			return err
		}
		f.tcp, err = net.Listen("tcp4", addr.String())
		return err
	})
	if err != nil {
		if f.udp != nil {
			f.udp.Close()
		}
		return nil, fmt.Errorf("network: DNS forwarder on %s: %w", addr, err)
	}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	f.wg.Add(2)
	go f.serveUDP()
	go f.serveTCP()
	return f, nil
}

func (f *forwarder) close() {
	f.cancel()
	f.udp.Close()
	f.tcp.Close()
	f.wg.Wait()
}

func (f *forwarder) serveUDP() {
	defer f.wg.Done()
	buf := make([]byte, 65535)
	for {
		n, from, err := f.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if n < dnsHeaderLen {
			continue
		}
		select {
		case f.udpSem <- struct{}{}:
		default:
			continue
		}
		q := append([]byte(nil), buf[:n]...)
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer func() { <-f.udpSem }()
			if r := f.exchangeUDP(q); r != nil {
				_, _ = f.udp.WriteToUDPAddrPort(r, from)
			}
		}()
	}
}

// exchangeUDP asks each upstream in turn and returns the first reply to q,
// or nil.
func (f *forwarder) exchangeUDP(q []byte) []byte {
	buf := make([]byte, 65535)
	for _, up := range f.conf.servers() {
		var c net.Conn
		err := f.ns.do(func() error {
			var err error
			c, err = (&net.Dialer{}).DialContext(f.ctx, "udp", up.String())
			return err
		})
		if err != nil {
			continue
		}
		_ = c.SetDeadline(time.Now().Add(upstreamTimeout))
		if _, err := c.Write(q); err != nil {
			c.Close()
			continue
		}
		for {
			n, err := c.Read(buf)
			if err != nil {
				break
			}
			if isReply(q, buf[:n]) {
				c.Close()
				return append([]byte(nil), buf[:n]...)
			}
		}
		c.Close()
		if f.ctx.Err() != nil {
			return nil
		}
	}
	return nil
}

// isReply reports whether r answers query q: both carry at least a DNS
// header, r has the QR bit set and q's ID. The connected socket already
// ensures r came from the upstream asked.
func isReply(q, r []byte) bool {
	return len(q) >= dnsHeaderLen && len(r) >= dnsHeaderLen &&
		binary.BigEndian.Uint16(q) == binary.BigEndian.Uint16(r) && r[2]&0x80 != 0
}

func (f *forwarder) serveTCP() {
	defer f.wg.Done()
	for {
		c, err := f.tcp.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		select {
		case f.tcpSem <- struct{}{}:
		default:
			c.Close()
			continue
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer func() { <-f.tcpSem }()
			f.relayTCP(c)
		}()
	}
}

// relayTCP joins a guest's connection to the first upstream that accepts
// one; DNS over TCP is length-prefixed messages both ways, so the bytes
// pass through unchanged.
func (f *forwarder) relayTCP(c net.Conn) {
	defer c.Close()
	var up net.Conn
	for _, s := range f.conf.servers() {
		err := f.ns.do(func() error {
			var err error
			d := net.Dialer{Timeout: upstreamTimeout}
			up, err = d.DialContext(f.ctx, "tcp", s.String())
			return err
		})
		if err == nil {
			break
		}
	}
	if up == nil {
		return
	}
	defer up.Close()
	deadline := time.Now().Add(tcpTimeout)
	_ = c.SetDeadline(deadline)
	_ = up.SetDeadline(deadline)
	stop := context.AfterFunc(f.ctx, func() {
		c.Close()
		up.Close()
	})
	defer stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(up, c)
		if tc, ok := up.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}()
	_, _ = io.Copy(c, up)
	c.Close()
	<-done
}

// resolvConf is the host's resolver list, read again when the file
// changes (a laptop's resolvers change with its network).
type resolvConf struct {
	path    string
	exclude netip.Prefix // the guests' subnet: never forward into it

	mu    sync.Mutex
	mtime time.Time
	size  int64
	list  []netip.AddrPort
}

func (r *resolvConf) servers() []netip.AddrPort {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, err := os.Stat(r.path)
	if err != nil {
		return r.list
	}
	if st.ModTime().Equal(r.mtime) && st.Size() == r.size && r.list != nil {
		return r.list
	}
	fh, err := os.Open(r.path)
	if err != nil {
		return r.list
	}
	defer fh.Close()
	r.list = parseResolvConf(fh, r.exclude)
	r.mtime, r.size = st.ModTime(), st.Size()
	return r.list
}

// parseResolvConf returns the first maxUpstreams nameservers of a
// resolv.conf, skipping those inside exclude.
func parseResolvConf(rd io.Reader, exclude netip.Prefix) []netip.AddrPort {
	list := []netip.AddrPort{}
	sc := bufio.NewScanner(rd)
	for sc.Scan() && len(list) < maxUpstreams {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || fields[0] != "nameserver" {
			continue
		}
		// A zone ("fe80::1%eth0") is legal in resolv.conf.
		a, err := netip.ParseAddr(fields[1])
		if err != nil || exclude.Contains(a.Unmap()) {
			continue
		}
		list = append(list, netip.AddrPortFrom(a.Unmap(), 53))
	}
	return list
}
