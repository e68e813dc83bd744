package vsock

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/boxd-dev/boxd/virtio"
	"github.com/boxd-dev/boxd/virtio/mmio"
	"github.com/boxd-dev/boxd/virtio/queue"
)

// statsMap returns the non-zero counters by name.
func statsMap(s *Stats) map[string]uint64 {
	v := reflect.ValueOf(s).Elem()
	m := map[string]uint64{}
	for i := range v.NumField() {
		if n := v.Field(i).Addr().Interface().(*atomic.Uint64).Load(); n != 0 {
			m[v.Type().Field(i).Name] = n
		}
	}
	return m
}

// pick returns the named counters of m (zero ones included).
func pick(m map[string]uint64, names ...string) map[string]uint64 {
	out := map[string]uint64{}
	for _, n := range names {
		out[n] = m[n]
	}
	return out
}

// eventually polls cond, backing off, until it holds: a readiness check for
// device state no guest interrupt announces. It fails after waitTimeout.
func eventually(what string, cond func() bool) error {
	deadline := time.Now().Add(waitTimeout)
	for d := 50 * time.Microsecond; !cond(); d = min(2*d, 10*time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out waiting for %s", what)
		}
		time.Sleep(d)
	}
	return nil
}

func keys(m map[string]uint64) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestNewConfig(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "v.sock")
	tests := []struct {
		name string
		cfg  Config
		want string // error substring; "" for success
	}{
		{"ok", Config{GuestCID: 3, UDSPath: sock}, ""},
		{"reserved cid", Config{GuestCID: 2, UDSPath: sock}, "guest CID"},
		{"cid any", Config{GuestCID: 0xffff_ffff, UDSPath: sock}, "guest CID"},
		{"cid upper bits", Config{GuestCID: 1 << 32, UDSPath: sock}, "guest CID"},
		{"no path", Config{GuestCID: 3}, "empty socket path"},
		{"tiny buffer", Config{GuestCID: 3, UDSPath: sock, BufferSize: 100}, "buffer size"},
		{"queue size", Config{GuestCID: 3, UDSPath: sock, QueueSize: 100}, "queue size"},
		{"negative timeout", Config{GuestCID: 3, UDSPath: sock, ConnectTimeout: -1}, "connect timeout"},
		{"missing dir", Config{GuestCID: 3, UDSPath: filepath.Join(dir, "no", "v.sock")}, "listen"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := New(tt.cfg)
			if err == nil {
				defer d.Close()
			}
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("New: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("New: %v, want error containing %q", err, tt.want)
			}
		})
	}
}

func TestDeviceDescription(t *testing.T) {
	s := newStack(t, Config{GuestCID: 0x1234_5678}, gopts{})
	d := s.dev
	if got := d.Type(); got != virtio.DeviceVsock {
		t.Errorf("Type = %d", got)
	}
	if got, want := d.Features(), virtio.FeatureVersion1|queue.Features; got != want {
		t.Errorf("Features = %#x, want %#x", got, want)
	}
	if diff := cmp.Diff([]uint16{256, 256, 256}, d.QueueSizes()); diff != "" {
		t.Errorf("QueueSizes (-want +got):\n%s", diff)
	}
	if s.cid != 0x1234_5678 {
		t.Errorf("guest_cid read by the driver = %#x", s.cid)
	}
	// 32-bit reads, as Linux does for a 64-bit field, and reads past it.
	for _, tt := range []struct {
		off  uint64
		n    int
		want []byte
	}{
		{0, 4, []byte{0x78, 0x56, 0x34, 0x12}},
		{4, 4, []byte{0, 0, 0, 0}},
		{2, 1, []byte{0x34}},
		{8, 4, []byte{0, 0, 0, 0}},
		{0x100, 4, []byte{0, 0, 0, 0}},
	} {
		if diff := cmp.Diff(tt.want, s.guest.ReadConfig(tt.off, tt.n)); diff != "" {
			t.Errorf("config at %d (-want +got):\n%s", tt.off, diff)
		}
	}
	// guest_cid is read-only.
	s.guest.Regs.Write(mmio.ConfigOffset, []byte{1, 2, 3, 4})
	if got := s.guest.ReadConfig(0, 1)[0]; got != 0x78 {
		t.Errorf("guest_cid changed by a write: %#x", got)
	}
}

// echoGuest accepts n connections on l and echoes each until EOF.
func echoGuest(t *testing.T, s *gstack, l <-chan *gconn, n int) {
	s.spawn(func() {
		for range n {
			var c *gconn
			select {
			case c = <-l:
			case <-s.stop:
				return
			}
			s.spawn(func() {
				_, err := io.Copy(c, c)
				if err != nil && !errors.Is(err, errReset) && !errors.Is(err, errStopped) {
					t.Errorf("guest echo: %v", err)
				}
				c.Close()
			})
		}
	})
}

func TestHostConnect(t *testing.T) {
	s := newStack(t, Config{}, gopts{})
	l := s.listen(1024)
	echoGuest(t, s, l, 2)
	seen := map[uint32]bool{}
	for i := range 2 {
		hc, hp, err := hostConnect(s.path, 1024)
		if err != nil {
			t.Fatalf("hostConnect: %v", err)
		}
		if hp < firstEphemeral || seen[hp] {
			t.Errorf("host port %d: want ≥ %d and unique", hp, firstEphemeral)
		}
		seen[hp] = true
		msg := []byte(fmt.Sprintf("hello %d through vsock", i))
		if _, err := hc.Write(msg); err != nil {
			t.Fatal(err)
		}
		hc.CloseWrite()
		got, err := io.ReadAll(hc)
		if err != nil {
			t.Fatalf("host read: %v", err)
		}
		if !bytes.Equal(got, msg) {
			t.Errorf("echo = %q, want %q", got, msg)
		}
		hc.Close()
	}
	if err := eventually("connections gone", func() bool { return s.dev.numConns() == 0 }); err != nil {
		t.Fatal(err)
	}
	st := statsMap(s.dev.Stats())
	if diff := cmp.Diff(map[string]uint64{"HostConnects": 2, "ResetsSent": 2}, pick(st, "HostConnects", "ResetsSent")); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
}

func TestHostConnectRefused(t *testing.T) {
	s := newStack(t, Config{}, gopts{})
	hc, err := dialUnix(s.path)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	fmt.Fprintf(hc, "CONNECT 9999\n")
	// The guest has no listener: it answers RST and the device closes the
	// host socket without an OK line.
	got, err := io.ReadAll(hc)
	if err != nil || len(got) != 0 {
		t.Errorf("host read = %q, %v; want EOF and nothing", got, err)
	}
	st := statsMap(s.dev.Stats())
	if diff := cmp.Diff(map[string]uint64{"HostConnectFails": 1, "HostConnects": 0}, pick(st, "HostConnectFails", "HostConnects")); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
}

func TestBadHandshake(t *testing.T) {
	s := newStack(t, Config{}, gopts{})
	for _, line := range []string{"HELLO 1\n", "CONNECT\n", "CONNECT -1\n", "CONNECT 4294967296\n", strings.Repeat("x", 40)} {
		hc, err := dialUnix(s.path)
		if err != nil {
			t.Fatal(err)
		}
		hc.Write([]byte(line))
		if got, _ := io.ReadAll(hc); len(got) != 0 {
			t.Errorf("%q: got %q, want the socket closed", line, got)
		}
		hc.Close()
	}
	if got := s.dev.Stats().BadHandshakes.Load(); got != 5 {
		t.Errorf("BadHandshakes = %d, want 5", got)
	}
}

func TestParseConnect(t *testing.T) {
	for _, tt := range []struct {
		line string
		port uint32
		ok   bool
	}{
		{"CONNECT 1024", 1024, true},
		{"CONNECT 1024\r", 1024, true},
		{"CONNECT 4294967295", 0xffff_ffff, true},
		{"CONNECT 4294967296", 0, false},
		{"connect 1", 0, false},
		{"CONNECT  1", 0, false},
		{"CONNECT 1 2", 0, false},
		{"", 0, false},
	} {
		port, err := parseConnect(tt.line)
		if (err == nil) != tt.ok || port != tt.port {
			t.Errorf("parseConnect(%q) = %d, %v", tt.line, port, err)
		}
	}
}

// hostListen listens at the socket the device dials for guest port port.
func hostListen(t *testing.T, s *gstack, port uint32) *net.UnixListener {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: fmt.Sprintf("%s_%d", s.path, port), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func TestGuestConnect(t *testing.T) {
	s := newStack(t, Config{}, gopts{})
	ln := hostListen(t, s, 5000)
	go func() {
		hc, err := ln.AcceptUnix()
		if err != nil {
			t.Errorf("accept: %v", err)
			return
		}
		defer hc.Close()
		io.Copy(hc, hc)
	}()
	c, err := s.dial(5000)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	msg := bytes.Repeat([]byte("guest to host "), 1000)
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("guest read: %v", err)
	}
	if !bytes.Equal(got, msg) {
		t.Errorf("echo: got %d bytes, want %d", len(got), len(msg))
	}
	c.Close()
	if err := c.waitClosed(); err != nil {
		t.Fatal(err)
	}
	st := statsMap(s.dev.Stats())
	if diff := cmp.Diff(map[string]uint64{"GuestConnects": 1, "TxBytes": uint64(len(msg)), "RxBytes": uint64(len(msg))},
		pick(st, "GuestConnects", "TxBytes", "RxBytes")); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
}

func TestGuestConnectNoListener(t *testing.T) {
	s := newStack(t, Config{}, gopts{})
	if _, err := s.dial(5001); !errors.Is(err, errReset) {
		t.Fatalf("dial with nothing listening: %v, want reset", err)
	}
	if got := s.dev.Stats().GuestConnectFails.Load(); got != 1 {
		t.Errorf("GuestConnectFails = %d", got)
	}
	if n := s.dev.numConns(); n != 0 {
		t.Errorf("%d connections left", n)
	}
}

// TestRxWaitsForBuffers: with no rx buffers, a host connect waits inside the
// device until the driver posts buffers and notifies the rx queue.
func TestRxWaitsForBuffers(t *testing.T) {
	s := newStack(t, Config{}, gopts{holdRx: true})
	l := s.listen(1024)
	echoGuest(t, s, l, 1)
	type result struct {
		hc  *netConn
		err error
	}
	done := make(chan result, 1)
	go func() {
		hc, _, err := hostConnect(s.path, 1024)
		done <- result{hc, err}
	}()
	if err := eventually("the connection registered", func() bool { return s.dev.numConns() == 1 }); err != nil {
		t.Fatal(err)
	}
	if n := s.dev.Stats().RxPackets.Load(); n != 0 {
		t.Fatalf("%d packets delivered without rx buffers", n)
	}
	s.postRx()
	r := <-done
	if r.err != nil {
		t.Fatalf("hostConnect: %v", r.err)
	}
	defer r.hc.Close()
	r.hc.Write([]byte("ping"))
	var b [4]byte
	if _, err := io.ReadFull(r.hc, b[:]); err != nil || string(b[:]) != "ping" {
		t.Errorf("echo = %q, %v", b, err)
	}
}

// TestHalfClose: each direction closes on its own and the other keeps
// flowing; the last close completes with an RST.
func TestHalfClose(t *testing.T) {
	s := newStack(t, Config{}, gopts{})
	l := s.listen(1024)
	hc, _, err := hostConnect(s.path, 1024)
	if err != nil {
		t.Fatal(err)
	}
	gc := <-l
	defer hc.Close()

	// Host half-closes: the guest reads EOF and can still send.
	hc.Write([]byte("last words"))
	hc.CloseWrite()
	got, err := io.ReadAll(gc)
	if err != nil || string(got) != "last words" {
		t.Fatalf("guest read %q, %v", got, err)
	}
	if _, err := gc.Write([]byte("reply")); err != nil {
		t.Fatal(err)
	}
	var b [5]byte
	if _, err := io.ReadFull(hc, b[:]); err != nil || string(b[:]) != "reply" {
		t.Fatalf("host read %q, %v", b, err)
	}
	// Guest closes: the host sees EOF and the guest gets its RST.
	gc.Close()
	if err := gc.waitClosed(); err != nil {
		t.Fatal(err)
	}
	if rest, err := io.ReadAll(hc); err != nil || len(rest) != 0 {
		t.Errorf("host after guest close: %q, %v", rest, err)
	}
	if n := s.dev.numConns(); n != 0 {
		t.Errorf("%d connections left", n)
	}
}

// TestGuestShutdownRcv: SHUTDOWN(RCV) makes the host's writes fail, while
// the guest can still send.
func TestGuestShutdownRcv(t *testing.T) {
	s := newStack(t, Config{}, gopts{})
	ln := hostListen(t, s, 7001)
	gc, err := s.dial(7001)
	if err != nil {
		t.Fatal(err)
	}
	hc, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	gc.CloseRead()
	// Writes fail once the device has half-closed the socket's read side;
	// the guest's data still arrives.
	gc.Write([]byte("still talking"))
	var b [13]byte
	if _, err := io.ReadFull(hc, b[:]); err != nil || string(b[:]) != "still talking" {
		t.Fatalf("host read %q, %v", b, err)
	}
	var werr error
	for range 1000 {
		if _, werr = hc.Write(make([]byte, 64<<10)); werr != nil {
			break
		}
	}
	if !errors.Is(werr, syscall.EPIPE) {
		t.Errorf("host write after guest SHUTDOWN(RCV): %v, want EPIPE", werr)
	}
}

func TestGuestReset(t *testing.T) {
	s := newStack(t, Config{}, gopts{})
	ln := hostListen(t, s, 7002)
	gc, err := s.dial(7002)
	if err != nil {
		t.Fatal(err)
	}
	hc, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	s.mu.Lock()
	s.send(gc, opRst, 0, nil)
	gc.rst = true
	s.mu.Unlock()
	if got, err := io.ReadAll(hc); len(got) != 0 || err != nil {
		t.Errorf("host after guest RST: %q, %v; want EOF", got, err)
	}
	if err := eventually("connection gone", func() bool { return s.dev.numConns() == 0 }); err != nil {
		t.Fatal(err)
	}
	if got := s.dev.Stats().ResetsReceived.Load(); got != 1 {
		t.Errorf("ResetsReceived = %d", got)
	}
}

// TestHostCloseThenGuestWrite: the host closes completely; the guest reads
// EOF, and its next write finds the host gone: the device resets.
func TestHostCloseThenGuestWrite(t *testing.T) {
	s := newStack(t, Config{}, gopts{})
	l := s.listen(1024)
	hc, _, err := hostConnect(s.path, 1024)
	if err != nil {
		t.Fatal(err)
	}
	gc := <-l
	hc.Close()
	if got, err := io.ReadAll(gc); err != nil || len(got) != 0 {
		t.Fatalf("guest read after host close: %q, %v", got, err)
	}
	for {
		if _, err := gc.Write([]byte("anyone there?")); err != nil {
			if !errors.Is(err, errReset) {
				t.Fatalf("guest write: %v, want reset", err)
			}
			break
		}
		if err := s.waitFor("RST or credit", func() bool { return gc.rst || gc.credit() > 0 }); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.dev.Stats().HostErrors.Load(); got == 0 {
		t.Error("HostErrors = 0 after writing to a closed host socket")
	}
}

// TestHostPipelinedData: bytes a host client sends right behind its CONNECT
// line, before the OK, are part of the stream.
func TestHostPipelinedData(t *testing.T) {
	s := newStack(t, Config{}, gopts{})
	l := s.listen(1024)
	hc, err := dialUnix(s.path)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	if _, err := hc.Write([]byte("CONNECT 1024\nearly bytes")); err != nil {
		t.Fatal(err)
	}
	hc.CloseWrite()
	line, err := readLine(hc)
	if err != nil || !strings.HasPrefix(line, "OK ") {
		t.Fatalf("OK line = %q, %v", line, err)
	}
	gc := <-l
	if got, err := io.ReadAll(gc); err != nil || string(got) != "early bytes" {
		t.Errorf("guest read %q, %v", got, err)
	}
}
