package vsock

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/boxd-dev/boxd/virtio"
	"github.com/boxd-dev/boxd/virtio/mmio"
	"github.com/boxd-dev/boxd/virtio/queue"
	"github.com/boxd-dev/boxd/virtio/virtiotest"
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

// halfConn is either end of a stream.
type halfConn interface {
	io.Reader
	io.Writer
	CloseWrite() error
}

// exchange sends n pseudo-random bytes each way over (a, b) concurrently,
// half-closing after writing, and checks both sides receive exactly what the
// other sent (sha256).
func exchange(a, b halfConn, n int, seed uint64) error {
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	send := func(w halfConn, seed uint64) [32]byte {
		h := sha256.New()
		r := rand.New(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}))
		buf := make([]byte, 64<<10)
		for left := n; left > 0; {
			p := buf[:min(left, len(buf))]
			for i := range p {
				p[i] = byte(r.Uint32())
			}
			h.Write(p)
			if _, err := w.Write(p); err != nil {
				errs <- fmt.Errorf("write: %w", err)
				break
			}
			left -= len(p)
		}
		if err := w.CloseWrite(); err != nil {
			errs <- fmt.Errorf("close write: %w", err)
		}
		return [32]byte(h.Sum(nil))
	}
	recv := func(r io.Reader) ([32]byte, int64) {
		h := sha256.New()
		got, err := io.Copy(h, r)
		if err != nil {
			errs <- fmt.Errorf("read: %w", err)
		}
		return [32]byte(h.Sum(nil)), got
	}
	var sentA, sentB, gotA, gotB [32]byte
	var nA, nB int64
	wg.Add(4)
	go func() { defer wg.Done(); sentA = send(a, seed) }()
	go func() { defer wg.Done(); sentB = send(b, seed+1) }()
	go func() { defer wg.Done(); gotB, nB = recv(b) }()
	go func() { defer wg.Done(); gotA, nA = recv(a) }()
	wg.Wait()
	close(errs)
	for err := range errs {
		return err
	}
	if nA != int64(n) || nB != int64(n) || sentA != gotB || sentB != gotA {
		return fmt.Errorf("streams differ: a→b %d bytes (sha256 match %v), b→a %d bytes (match %v), want %d",
			nB, sentA == gotB, nA, sentB == gotA, n)
	}
	return nil
}

// TestConcurrentStreams runs 8 host-initiated and 8 guest-initiated streams
// at once, 10 MB each way on each.
func TestConcurrentStreams(t *testing.T) {
	size := 10 << 20
	if testing.Short() {
		size = 1 << 20
	}
	const each = 8
	s := newStack(t, Config{}, gopts{})
	var wg sync.WaitGroup
	for i := range each {
		// One port per stream on each side, so the two ends pair up.
		l := s.listen(uint32(1024 + i))
		ln := hostListen(t, s, uint32(6000+i))
		wg.Add(2)
		go func() { // host → guest
			defer wg.Done()
			hc, _, err := hostConnect(s.path, uint32(1024+i))
			if err != nil {
				t.Errorf("hostConnect: %v", err)
				return
			}
			defer hc.Close()
			gc := <-l
			if err := exchange(hc, gc, size, uint64(2*i)); err != nil {
				t.Errorf("host-initiated stream %d: %v", i, err)
			}
			gc.Close()
		}()
		go func() { // guest → host
			defer wg.Done()
			gc, err := s.dial(uint32(6000 + i))
			if err != nil {
				t.Errorf("dial: %v", err)
				return
			}
			hc, err := ln.AcceptUnix()
			if err != nil {
				t.Errorf("accept: %v", err)
				return
			}
			defer hc.Close()
			if err := exchange(gc, hc, size, uint64(100+2*i)); err != nil {
				t.Errorf("guest-initiated stream %d: %v", i, err)
			}
			gc.Close()
		}()
	}
	wg.Wait()
	if err := eventually("all connections closed", func() bool { return s.dev.numConns() == 0 }); err != nil {
		t.Fatal(err)
	}
	st := statsMap(s.dev.Stats())
	want := map[string]uint64{
		"HostConnects": each, "GuestConnects": each,
		"TxBytes": uint64(2 * each * size), "RxBytes": uint64(2 * each * size),
	}
	if diff := cmp.Diff(want, pick(st, keys(want)...)); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
}

// TestGuestCreditLimit: a guest advertising a small buffer never has more
// than that in flight, however fast the host writes, and the device asks for
// credit instead of waiting forever.
func TestGuestCreditLimit(t *testing.T) {
	const bufAlloc = 1000 // not a multiple of anything the device uses
	s := newStack(t, Config{}, gopts{bufAlloc: bufAlloc})
	l := s.listen(1024)
	hc, _, err := hostConnect(s.path, 1024)
	if err != nil {
		t.Fatal(err)
	}
	gc := <-l
	defer hc.Close()
	data := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	go func() {
		hc.Write(data)
		hc.CloseWrite()
	}()
	// Let the device fill the guest's buffer completely before reading.
	if err := s.waitFor("a full guest buffer", func() bool { return uint32(len(gc.rbuf)) == bufAlloc }); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(readerFunc(func(p []byte) (int, error) { return gc.Read(p[:min(len(p), 300)]) }))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("got %d bytes, want %d identical", len(got), len(data))
	}
	s.mu.Lock()
	maxIn := gc.maxInFlight
	s.mu.Unlock()
	if maxIn != bufAlloc {
		t.Errorf("most bytes in flight = %d, want exactly buf_alloc %d", maxIn, bufAlloc)
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// TestDeviceCredit: the guest respects the device's small buffer; the device
// keeps it moving with CREDIT_UPDATEs as the host reads, and never buffers
// more than BufferSize.
func TestDeviceCredit(t *testing.T) {
	s := newStack(t, Config{BufferSize: 4096}, gopts{})
	ln := hostListen(t, s, 7000)
	gc, err := s.dial(7000)
	if err != nil {
		t.Fatal(err)
	}
	hc, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	go func() {
		gc.Write(data)
		gc.CloseWrite()
	}()
	got, err := io.ReadAll(hc)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("host got %d bytes (%v), want %d identical", len(got), err, len(data))
	}
	st := statsMap(s.dev.Stats())
	if st["CreditViolations"] != 0 {
		t.Errorf("CreditViolations = %d", st["CreditViolations"])
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

func TestTransportReset(t *testing.T) {
	s := newStack(t, Config{}, gopts{})
	l := s.listen(1024)
	echoGuest(t, s, l, 2)
	hc, _, err := hostConnect(s.path, 1024)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	ln := hostListen(t, s, 7003)
	gc, err := s.dial(7003)
	if err != nil {
		t.Fatal(err)
	}
	hc2, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer hc2.Close()

	if err := s.dev.ResetTransport(); err != nil {
		t.Fatal(err)
	}
	if err := s.waitFor("the reset event", func() bool { return len(s.events) == 1 }); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]uint32{eventTransportReset}, s.events); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	for i, c := range []*netConn{hc, hc2} {
		if got, err := io.ReadAll(c); len(got) != 0 || err != nil {
			t.Errorf("host socket %d after reset: %q, %v; want EOF", i, got, err)
		}
	}
	if _, err := gc.Write([]byte("x")); !errors.Is(err, errReset) {
		t.Errorf("guest write after reset: %v", err)
	}
	if n := s.dev.numConns(); n != 0 {
		t.Errorf("%d connections after reset", n)
	}
	// The transport works afterwards.
	hc3, _, err := hostConnect(s.path, 1024)
	if err != nil {
		t.Fatalf("connect after reset: %v", err)
	}
	defer hc3.Close()
	hc3.Write([]byte("again"))
	var b [5]byte
	if _, err := io.ReadFull(hc3, b[:]); err != nil || string(b[:]) != "again" {
		t.Errorf("echo after reset = %q, %v", b, err)
	}
	if got := s.dev.Stats().TransportResets.Load(); got != 1 {
		t.Errorf("TransportResets = %d", got)
	}
}

// TestDriverReset: the driver resetting the device (status 0) closes every
// host socket; host clients that connect meanwhile wait for the next
// activation.
func TestDriverReset(t *testing.T) {
	s := newStack(t, Config{}, gopts{})
	l := s.listen(1024)
	echoGuest(t, s, l, 1)
	hc, _, err := hostConnect(s.path, 1024)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	s.close() // the guest driver stops
	virtiotest.WriteReg(s.tr, mmio.RegStatus, 0)
	if got, err := io.ReadAll(hc); len(got) != 0 || err != nil {
		t.Errorf("host after device reset: %q, %v", got, err)
	}
	if n := s.dev.numConns(); n != 0 {
		t.Errorf("%d connections after reset", n)
	}
}
