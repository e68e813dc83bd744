package net

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	stdnet "net"
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/boxd-dev/boxd/virtio"
)

// netns runs functions on one OS thread that lives in a network namespace
// of its own, created for the test: sockets and TAPs created there belong
// to it, and nothing the test sends can leave it.
type netns struct {
	fns chan func()
}

func newNetns(t *testing.T) *netns {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("no TUN/TAP support: %v", err)
	}
	ns := &netns{fns: make(chan func())}
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: when this goroutine returns, the runtime ends
		// the thread, and the namespace goes once its sockets are closed.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- nil
		for fn := range ns.fns {
			fn()
		}
	}()
	if err := <-errc; err != nil {
		t.Skipf("cannot create a network namespace: %v", err)
	}
	t.Cleanup(func() { close(ns.fns) })
	return ns
}

// do runs fn inside the namespace.
func (ns *netns) do(fn func() error) error {
	errc := make(chan error, 1)
	ns.fns <- func() { errc <- fn() }
	return <-errc
}

// linkUp gives interface name address ip/24 and brings it up, with ioctls
// on a socket of the namespace (the calling thread's).
func linkUp(name string, ip [4]byte) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	// No IPv6 on the link: its neighbour discovery would only add noise.
	_ = os.WriteFile("/proc/sys/net/ipv6/conf/"+name+"/disable_ipv6", []byte("1"), 0)
	for _, step := range []struct {
		req  uint
		addr []byte
	}{{unix.SIOCSIFADDR, ip[:]}, {unix.SIOCSIFNETMASK, []byte{255, 255, 255, 0}}} {
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			return err
		}
		if err := ifr.SetInet4Addr(step.addr); err != nil {
			return err
		}
		if err := unix.IoctlIfreq(fd, step.req, ifr); err != nil {
			return fmt.Errorf("ioctl %#x on %s: %w", step.req, name, err)
		}
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

var (
	hostIP  = [4]byte{10, 77, 0, 1}
	guestIP = [4]byte{10, 77, 0, 2}
)

func ipString(ip [4]byte) string { return stdnet.IP(ip[:]).String() }

// tapEnv is a TAP in a fresh namespace, configured as the host side of a
// point-to-point link, and a device over it.
type tapEnv struct {
	ns  *netns
	tap *TAP
	dev *Device
}

func newTapEnv(t *testing.T) *tapEnv {
	t.Helper()
	ns := newNetns(t)
	var tap *TAP
	if err := ns.do(func() (err error) {
		if tap, err = OpenTAP("boxdtest%d"); err != nil {
			return err
		}
		return linkUp(tap.Name(), hostIP)
	}); err != nil {
		if tap != nil {
			tap.Close()
		}
		t.Fatal(err)
	}
	dev, err := New(Config{Backend: tap})
	if err != nil {
		tap.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := dev.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return &tapEnv{ns: ns, tap: tap, dev: dev}
}

func TestOpenTAP(t *testing.T) {
	ns := newNetns(t)
	if err := ns.do(func() error {
		tap, err := OpenTAP("boxdtap%d")
		if err != nil {
			return err
		}
		defer tap.Close() // on early returns; closing twice is harmless
		if tap.Name() != "boxdtap0" {
			return fmt.Errorf("Name() = %q, want boxdtap0 (first in a fresh namespace)", tap.Name())
		}
		var buf [2048]byte
		if _, err := tap.Read(buf[:]); !errors.Is(err, unix.EAGAIN) {
			return fmt.Errorf("Read on an idle TAP: %v, want EAGAIN", err)
		}
		for _, o := range []Offload{OffloadCsum, OffloadCsum | OffloadTSO4 | OffloadTSO6, 0} {
			if err := tap.SetOffload(o); err != nil {
				return err
			}
		}
		if err := tap.SetOffload(OffloadTSO4); err == nil {
			return errors.New("TSO without checksum offload accepted")
		}
		if _, err := OpenTAP(string(make([]byte, 20))); err == nil {
			return errors.New("over-long name accepted")
		}
		// A persistent TAP, as a daemon would create it, can be attached
		// to by name.
		if err := unix.IoctlSetInt(tap.Fd(), unix.TUNSETPERSIST, 1); err != nil {
			return err
		}
		if err := tap.Close(); err != nil {
			return err
		}
		if _, err := tap.Read(buf[:]); !errors.Is(err, unix.EBADF) {
			return fmt.Errorf("Read after Close: %v", err)
		}
		if err := tap.Close(); err != nil {
			return fmt.Errorf("second Close: %w", err)
		}
		again, err := OpenTAP("boxdtap0")
		if err != nil {
			return fmt.Errorf("attach to a persistent TAP: %w", err)
		}
		defer again.Close()
		if again.Name() != "boxdtap0" {
			return fmt.Errorf("attached to %q", again.Name())
		}
		return unix.IoctlSetInt(again.Fd(), unix.TUNSETPERSIST, 0)
	}); err != nil {
		t.Fatal(err)
	}
}

// TestTAP exchanges real traffic with the kernel of a fresh network
// namespace through a TAP, with the mock driver as the guest: ARP, ping,
// UDP both ways and TCP both ways, once with plain frames and once with
// checksum and segmentation offloads passed through the vnet header.
func TestTAP(t *testing.T) {
	for _, tc := range []struct {
		name     string
		features uint64
		bufSize  uint32
	}{
		{"plain", FeatureMrgRxbuf | virtio.FeatureEventIdx, 2048},
		{"offload", FeatureMrgRxbuf | virtio.FeatureEventIdx | featuresOffload, 2048},
		{"offload big buffers", virtio.FeatureIndirectDesc | featuresOffload, HeaderLen + MaxFrameLen},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newTapEnv(t)
			g := newGuest(t, env.dev, guestOptions{features: tc.features, regionSize: 32 << 20})
			s := newStack(t, g, guestIP, hostIP, tc.bufSize)
			offload := tc.features&FeatureGuestTSO4 != 0
			t.Run("ping", func(t *testing.T) { s.t = t; testPing(t, env, s) })
			t.Run("udp", func(t *testing.T) { s.t = t; testUDP(t, env, s, offload) })
			t.Run("tcp to guest", func(t *testing.T) { s.t = t; testTCPIn(t, env, s, offload) })
			t.Run("tcp from guest", func(t *testing.T) { s.t = t; testTCPOut(t, env, s, offload) })
			st := env.dev.Stats()
			if st.RxDropped.Load()+st.RxInvalid.Load()+st.TxDropped.Load()+st.TxInvalid.Load() != 0 {
				t.Errorf("device stats: %s", st.String())
			}
		})
	}
}

// testPing pings the guest from a raw ICMP socket in the namespace.
func testPing(t *testing.T, env *tapEnv, s *stack) {
	var fd int
	if err := env.ns.do(func() (err error) {
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	for seq, size := range []int{56, 1000, 1472} {
		req := make([]byte, 8+size)
		req[0] = 8
		binary.BigEndian.PutUint16(req[4:], 0x4242)
		binary.BigEndian.PutUint16(req[6:], uint16(seq))
		for i := 8; i < len(req); i++ {
			req[i] = byte(i + seq)
		}
		binary.BigEndian.PutUint16(req[2:], ^csumFold(csumAdd(0, req)))
		got := make(chan error, 1)
		go func() {
			got <- func() error {
				if err := unix.Sendto(fd, req, 0, &unix.SockaddrInet4{Addr: guestIP}); err != nil {
					return err
				}
				buf := make([]byte, 2048)
				for {
					n, _, err := unix.Recvfrom(fd, buf, 0)
					if err != nil {
						return fmt.Errorf("waiting for the echo reply: %w", err)
					}
					p := buf[20:n] // raw sockets return the IP header
					if len(p) >= 8 && p[0] == 0 && binary.BigEndian.Uint16(p[6:]) == uint16(seq) {
						if !bytes.Equal(p[8:], req[8:]) {
							return errors.New("echo reply payload differs")
						}
						return nil
					}
				}
			}()
			s.notify()
		}()
		var err error
		done := false
		s.run(fmt.Sprintf("echo reply %d", seq), func() bool {
			select {
			case err = <-got:
				done = true
			default:
			}
			return done
		})
		if err != nil {
			t.Fatalf("ping %d bytes: %v", size, err)
		}
	}
}

// testUDP sends datagrams both ways between the guest and a socket in the
// namespace.
func testUDP(t *testing.T, env *tapEnv, s *stack, offload bool) {
	var c *stdnet.UDPConn
	if err := env.ns.do(func() (err error) {
		c, err = stdnet.ListenUDP("udp4", &stdnet.UDPAddr{IP: hostIP[:], Port: 5003})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))

	// Host to guest.
	want := testFrame(1200, 1)[14:]
	if _, err := c.WriteToUDP(want, &stdnet.UDPAddr{IP: guestIP[:], Port: 5004}); err != nil {
		t.Fatal(err)
	}
	s.run("a datagram from the host", func() bool { return len(s.udp) > 0 })
	if !bytes.Equal(s.udp[0], want) {
		t.Errorf("guest got a %d-byte datagram, want %d bytes", len(s.udp[0]), len(want))
	}
	s.udp = nil

	// Guest to host, with a full checksum and, with offloads, a partial one
	// the host completes.
	for i, partial := range []bool{false, offload} {
		data := testFrame(1000+i, byte(i))[14:]
		got := make(chan []byte, 1)
		go func() {
			buf := make([]byte, 2048)
			n, _, err := c.ReadFromUDP(buf)
			if err != nil {
				buf, n = nil, 0
			}
			got <- buf[:n]
			s.notify()
		}()
		s.sendUDP(5004, 5003, data, partial)
		var p []byte
		s.run("the host to receive a datagram", func() bool {
			select {
			case p = <-got:
				return true
			default:
				return false
			}
		})
		if !bytes.Equal(p, data) {
			t.Errorf("host got %d bytes (partial checksum %v), want %d", len(p), partial, len(data))
		}
	}
}

// testTCPIn streams from a host socket to the guest. With guest offloads
// the host sends TSO frames that span several mergeable buffers.
func testTCPIn(t *testing.T, env *tapEnv, s *stack, offload bool) {
	s.listen[5001] = true
	want := make([]byte, 1<<20)
	for i := range want {
		want[i] = byte(i*31 + i>>9)
	}
	frames, gso, partial := s.frames, s.gsoFrames, s.partial
	s.maxFrame, s.maxBuffers = 0, 0
	errc := make(chan error, 1)
	go func() {
		errc <- func() error {
			var c stdnet.Conn
			if err := env.ns.do(func() (err error) {
				c, err = stdnet.DialTimeout("tcp4", ipString(guestIP)+":5001", timeout)
				return err
			}); err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(timeout))
			if _, err := c.Write(want); err != nil {
				return err
			}
			return c.(*stdnet.TCPConn).CloseWrite()
		}()
		s.notify()
	}()
	var err error
	sent := false
	s.run("the stream from the host", func() bool {
		if !sent {
			select {
			case err = <-errc:
				sent = true
			default:
			}
		}
		c := s.conns[5001]
		return err != nil || (sent && c != nil && c.finRcvd)
	})
	if err != nil {
		t.Fatalf("host side: %v", err)
	}
	if got := s.conns[5001].data; !bytes.Equal(got, want) {
		t.Fatalf("guest got %d bytes, want %d (first difference at %d)", len(got), len(want), firstDiff(got, want))
	}
	t.Logf("%d frames, %d TSO, %d with partial checksums; largest %d bytes over %d buffers",
		s.frames-frames, s.gsoFrames-gso, s.partial-partial, s.maxFrame, s.maxBuffers)
	if offload {
		if s.gsoFrames == gso || s.maxFrame <= 1514 {
			t.Errorf("no TSO frame arrived with GUEST_TSO4 negotiated")
		}
		if s.g.features&FeatureMrgRxbuf != 0 && s.maxBuffers < 2 {
			t.Errorf("no frame spanned several mergeable buffers")
		}
	} else if s.gsoFrames != gso || s.partial != partial || s.maxFrame > 1514 {
		t.Errorf("offloaded frames without offloads negotiated")
	}
}

// testTCPOut streams from the guest to a host socket; with host offloads
// the data goes as one TSO frame the host kernel segments.
func testTCPOut(t *testing.T, env *tapEnv, s *stack, offload bool) {
	var ln stdnet.Listener
	if err := env.ns.do(func() (err error) {
		ln, err = stdnet.Listen("tcp4", ipString(hostIP)+":5002")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		defer s.notify()
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		b, _ := io.ReadAll(c)
		got <- b
	}()
	s.resolve()
	c := &tcpConn{local: 40000, remote: 5002, sndNxt: 7000}
	s.conns[c.local] = c
	s.sendTCP(c, tcpSYN, nil, false)
	s.run("the host's SYN-ACK", func() bool { return c.established })
	want := make([]byte, 30000)
	for i := range want {
		want[i] = byte(i * 13)
	}
	if offload {
		s.sendTCP(c, tcpACK|tcpPSH, want, true)
	} else {
		for off := 0; off < len(want); off += guestMSS {
			s.sendTCP(c, tcpACK, want[off:min(off+guestMSS, len(want))], false)
		}
	}
	s.sendTCP(c, tcpFIN|tcpACK, nil, false)
	var b []byte
	s.run("the host to read the stream", func() bool {
		select {
		case b = <-got:
			return true
		default:
			return false
		}
	})
	if !bytes.Equal(b, want) {
		t.Errorf("host read %d bytes, want %d (first difference at %d)", len(b), len(want), firstDiff(b, want))
	}
}
