package network

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/boxd-dev/boxd/host/daemon"
	vnet "github.com/boxd-dev/boxd/virtio/net"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The topology: "host" is where the Manager works; "outside" stands for the
// Internet, joined to the host by a veth (host 203.0.113.1, outside
// 203.0.113.2, no other route anywhere); each "guest" namespace stands for
// a VM: its eth0 is a TAP whose frames a pump carries to and from the VM's
// TAP on the host, opened exactly as the monitor opens it.
const (
	hostOutside  = "203.0.113.1"
	outsideAddr  = "203.0.113.2"
	outsidePort  = "8080"
	guestAPIPort = 9998 // allowed by newManager's config
	closedPort   = 9999 // listened on by the host, not allowed
	echoPort     = 7
)

// outsideNS builds the outside namespace and its link to host.
func outsideNS(t *testing.T, host int) int {
	t.Helper()
	out := newNS(t)
	hnl, onl := nlAt(t, host), nlAt(t, out)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vout"}, PeerName: "vin", PeerNamespace: netlink.NsFd(out)}
	if err := hnl.LinkAdd(veth); err != nil {
		t.Fatalf("veth: %v", err)
	}
	cfg := func(nl *netlink.Handle, name, addr string) {
		l, err := nl.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := nl.AddrAdd(l, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix(addr + "/24"))}); err != nil {
			t.Fatal(err)
		}
		if err := nl.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	cfg(hnl, "vout", hostOutside)
	cfg(onl, "vin", outsideAddr)
	return out
}

// guest is a namespace standing in for a VM that holds lease l.
type guest struct {
	ns int
	l  daemon.Lease
}

// newGuest builds a guest namespace for l and pumps frames between its eth0
// and l's TAP in host until the test ends.
func newGuest(t *testing.T, host int, l daemon.Lease) guest {
	t.Helper()
	g := guest{ns: newNS(t), l: l}
	var inner, outer *vnet.TAP
	inNS(t, g.ns, func() (err error) { inner, err = vnet.OpenTAP("eth0"); return err })
	inNS(t, host, func() (err error) { outer, err = vnet.OpenTAP(l.TAP); return err })
	nl := nlAt(t, g.ns)
	eth, err := nl.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	hw, _ := net.ParseMAC(l.MAC)
	for _, step := range []error{
		nl.LinkSetHardwareAddr(eth, hw),
		nl.AddrAdd(eth, &netlink.Addr{IPNet: ipNet(l.Address)}),
		nl.LinkSetUp(eth),
		nl.RouteAdd(&netlink.Route{Gw: l.Gateway.AsSlice()}),
	} {
		if step != nil {
			t.Fatalf("guest %s: %v", l.VMID, step)
		}
	}
	stop, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{}, 2)
	go pump(outer, inner, stop, done)
	go pump(inner, outer, stop, done)
	t.Cleanup(func() {
		unix.Write(stop, []byte{1, 0, 0, 0, 0, 0, 0, 0})
		<-done
		<-done
		inner.Close()
		outer.Close()
		unix.Close(stop)
	})
	return g
}

// pump copies frames, virtio-net header included, from src to dst until
// stop is readable.
func pump(src, dst *vnet.TAP, stop int, done chan<- struct{}) {
	defer func() { done <- struct{}{} }()
	buf := make([]byte, vnet.HeaderLen+vnet.MaxFrameLen)
	fds := []unix.PollFd{{Fd: int32(src.Fd()), Events: unix.POLLIN}, {Fd: int32(stop), Events: unix.POLLIN}}
	for {
		if _, err := unix.Poll(fds, -1); err != nil && !errors.Is(err, unix.EINTR) {
			return
		}
		if fds[1].Revents != 0 {
			return
		}
		for {
			n, err := src.Read(buf)
			if err != nil {
				break
			}
			_, _ = dst.Writev([][]byte{buf[:n]})
		}
	}
}

// dial connects from namespace ns.
func dial(ctx context.Context, ns int, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := namespace{fd: ns}.do(func() (err error) {
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

func listen(t *testing.T, ns int, network, addr string) net.Listener {
	t.Helper()
	var l net.Listener
	inNS(t, ns, func() (err error) { l, err = net.Listen(network, addr); return err })
	t.Cleanup(func() { l.Close() })
	return l
}

// serveRemoteAddr answers every HTTP request with the client's address.
func serveRemoteAddr(l net.Listener) {
	go http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		io.WriteString(w, host)
	}))
}

// serveDNS is the outside's resolver: it answers every query over UDP and
// TCP with the query itself, QR bit set.
func serveDNS(t *testing.T, ns int) {
	t.Helper()
	var pc net.PacketConn
	inNS(t, ns, func() (err error) { pc, err = net.ListenPacket("udp", outsideAddr+":53"); return err })
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			buf[2] |= 0x80
			pc.WriteTo(buf[:n], from)
		}
	}()
	l := listen(t, ns, "tcp", outsideAddr+":53")
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var n [2]byte
				if _, err := io.ReadFull(c, n[:]); err != nil {
					return
				}
				msg := make([]byte, binary.BigEndian.Uint16(n[:]))
				if _, err := io.ReadFull(c, msg); err != nil {
					return
				}
				msg[2] |= 0x80
				c.Write(append(n[:], msg...))
			}()
		}
	}()
}

func httpGet(ctx context.Context, ns int, url string) (string, error) {
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dial(ctx, ns, network, addr)
		},
	}}
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// echoLog records the payload of every datagram the outside echo server
// received.
type echoLog struct {
	mu   sync.Mutex
	list []string
}

func (e *echoLog) seen() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.list)
}

func serveEcho(t *testing.T, ns int) *echoLog {
	t.Helper()
	var pc net.PacketConn
	inNS(t, ns, func() (err error) {
		pc, err = net.ListenPacket("udp", outsideAddr+":"+strconv.Itoa(echoPort))
		return err
	})
	t.Cleanup(func() { pc.Close() })
	e := &echoLog{}
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			e.mu.Lock()
			e.list = append(e.list, string(buf[:n]))
			e.mu.Unlock()
			pc.WriteTo(buf[:n], from)
		}
	}()
	return e
}

var dnsQuery = []byte{0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 3, 'b', 'o', 'x', 0, 0, 1, 0, 1}

// TestTraffic runs with bridged IPv4 passing the IP hooks (br_netfilter,
// as on a host running Docker) and without, where only the bridge's own
// isolation and the bridge table stand between two guests.
func TestTraffic(t *testing.T) {
	requireNetAdmin(t)
	for _, brnf := range []string{"0", "1"} {
		t.Run("bridge-nf-call-iptables="+brnf, func(t *testing.T) { testTraffic(t, brnf) })
	}
}

func testTraffic(t *testing.T, brnf string) {
	host := newNS(t)
	const brnfPath = "net/bridge/bridge-nf-call-iptables"
	if _, err := os.Stat("/proc/sys/" + brnfPath); err != nil {
		if brnf == "1" {
			t.Skip("no br_netfilter in this kernel")
		}
	} else if err := (namespace{fd: host}).sysctl(brnfPath, brnf); err != nil {
		t.Fatal(err)
	}
	out := outsideNS(t, host)
	m := newManager(t, host, t.TempDir(), nil)
	t.Cleanup(func() { m.Teardown(context.Background()) })
	g1 := newGuest(t, host, attach(t, m, "0000000000a1"))
	g2 := newGuest(t, host, attach(t, m, "0000000000a2"))
	gw := m.Gateway().String()

	serveRemoteAddr(listen(t, out, "tcp", outsideAddr+":"+outsidePort))
	serveDNS(t, out)
	echoes := serveEcho(t, out)
	serveRemoteAddr(listen(t, g2.ns, "tcp", g2.l.Address.Addr().String()+":"+outsidePort))
	listen(t, host, "tcp", net.JoinHostPort(gw, strconv.Itoa(closedPort)))
	serveRemoteAddr(listen(t, host, "tcp", net.JoinHostPort(gw, strconv.Itoa(guestAPIPort))))

	// Each check gets its own deadline, so one that hangs cannot starve
	// the next; the negative checks wait at most this long.
	var ctx context.Context
	run := func(name string, f func(t *testing.T)) {
		t.Run(name, func(t *testing.T) {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			f(t)
		})
	}

	run("egress through NAT", func(t *testing.T) {
		got, err := httpGet(ctx, g1.ns, "http://"+outsideAddr+":"+outsidePort+"/")
		if err != nil {
			t.Fatalf("GET from guest: %v", err)
		}
		if got != hostOutside {
			t.Errorf("outside server saw %s, want the host's %s (masquerade)", got, hostOutside)
		}
	})
	run("DNS over UDP", func(t *testing.T) {
		c, err := dial(ctx, g1.ns, "udp", gw+":53")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(dnsQuery); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 512)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("no DNS answer: %v", err)
		}
		if !isReply(dnsQuery, buf[:n]) || string(buf[12:n]) != string(dnsQuery[12:]) {
			t.Errorf("DNS answer %x does not answer %x", buf[:n], dnsQuery)
		}
	})
	run("DNS over TCP", func(t *testing.T) {
		c, err := dial(ctx, g1.ns, "tcp", gw+":53")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		msg := binary.BigEndian.AppendUint16(nil, uint16(len(dnsQuery)))
		if _, err := c.Write(append(msg, dnsQuery...)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 2+len(dnsQuery))
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatalf("no DNS answer: %v", err)
		}
		if !isReply(dnsQuery, buf[2:]) {
			t.Errorf("DNS answer %x does not answer %x", buf[2:], dnsQuery)
		}
	})
	run("guest API port allowed", func(t *testing.T) {
		got, err := httpGet(ctx, g1.ns, "http://"+net.JoinHostPort(gw, strconv.Itoa(guestAPIPort))+"/")
		if err != nil || got != g1.l.Address.Addr().String() {
			t.Errorf("guest API: %q, %v; want %s", got, err, g1.l.Address.Addr())
		}
	})
	run("host services refused", func(t *testing.T) {
		// The host itself reaches the port: only the firewall refuses.
		c, err := dial(ctx, host, "tcp", net.JoinHostPort(gw, strconv.Itoa(closedPort)))
		if err != nil {
			t.Fatalf("control: host cannot reach its own port: %v", err)
		}
		c.Close()
		for _, addr := range []string{gw, hostOutside} {
			_, err := dial(ctx, g1.ns, "tcp", net.JoinHostPort(addr, strconv.Itoa(closedPort)))
			if !errors.Is(err, unix.ECONNREFUSED) {
				t.Errorf("guest → host %s:%d: %v, want connection refused", addr, closedPort, err)
			}
		}
	})
	run("guests isolated", func(t *testing.T) {
		target := g2.l.Address.Addr().String() + ":" + outsidePort
		// Control: the host reaches g2, so only isolation stops g1.
		if _, err := httpGet(ctx, host, "http://"+target+"/"); err != nil {
			t.Fatalf("control: host → g2: %v", err)
		}
		// Directly on the bridge: the frames are dropped, so g1's ARP
		// requests go unanswered and its kernel gives up.
		if c, err := dial(ctx, g1.ns, "tcp", target); err == nil {
			c.Close()
			t.Errorf("g1 reached g2 across the bridge")
		} else if !errors.Is(err, unix.EHOSTUNREACH) {
			t.Errorf("g1 → g2 across the bridge: %v, want host unreachable", err)
		}
		// Through the host's router: rejected by the forward chain.
		nl := nlAt(t, g1.ns)
		if err := nl.RouteAdd(&netlink.Route{Dst: ipNet(netip.PrefixFrom(g2.l.Address.Addr(), 32)), Gw: g1.l.Gateway.AsSlice()}); err != nil {
			t.Fatal(err)
		}
		if c, err := dial(ctx, g1.ns, "tcp", target); err == nil {
			c.Close()
			t.Errorf("g1 reached g2 through the host")
		} else if !errors.Is(err, unix.EHOSTUNREACH) {
			t.Errorf("g1 → g2 through the host: %v, want host unreachable", err)
		}
	})
	run("spoofed source dropped", func(t *testing.T) {
		// g1 claims g2's address and sends a datagram from it, then one
		// from its own, and waits for the echo of the second: the first,
		// sent earlier on the same path, would have arrived by then.
		nl := nlAt(t, g1.ns)
		eth, err := nl.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		spoof := netip.PrefixFrom(g2.l.Address.Addr(), 32)
		if err := nl.AddrAdd(eth, &netlink.Addr{IPNet: ipNet(spoof)}); err != nil {
			t.Fatal(err)
		}
		to := outsideAddr + ":" + strconv.Itoa(echoPort)
		for _, src := range []netip.Addr{spoof.Addr(), g1.l.Address.Addr()} {
			var c net.Conn
			inNS(t, g1.ns, func() (err error) {
				d := net.Dialer{LocalAddr: &net.UDPAddr{IP: src.AsSlice()}}
				c, err = d.DialContext(ctx, "udp", to)
				return err
			})
			defer c.Close()
			if _, err := c.Write([]byte(src.String())); err != nil {
				t.Fatal(err)
			}
			if src == spoof.Addr() {
				continue
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Read(make([]byte, 64)); err != nil {
				t.Fatalf("control datagram from %s: no echo: %v", src, err)
			}
		}
		if got := echoes.seen(); !slices.Equal(got, []string{g1.l.Address.Addr().String()}) {
			t.Errorf("outside received datagrams from %v, want only g1's own address", got)
		}
	})
}
