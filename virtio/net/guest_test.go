package net

import (
	"encoding/binary"
	"errors"
	"fmt"
	stdnet "net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/boxd-dev/boxd/virtio"
	"github.com/boxd-dev/boxd/virtio/mmio"
	"github.com/boxd-dev/boxd/virtio/queue"
	"github.com/boxd-dev/boxd/virtio/virtiotest"
)

const (
	memBase = 0x1_0000_0000    // above 4 GiB, like RAM past the MMIO gap
	timeout = 30 * time.Second // deadlock guard only, never a timing assertion
)

var _ mmio.Device = (*Device)(nil)

// sockBackend is a Backend over one end of a SOCK_SEQPACKET socketpair:
// message boundaries are frame boundaries, and the peer end plays the host.
type sockBackend struct {
	fd int
}

func (s *sockBackend) Fd() int                          { return s.fd }
func (s *sockBackend) Read(p []byte) (int, error)       { return unix.Read(s.fd, p) }
func (s *sockBackend) Writev(iov [][]byte) (int, error) { return unix.Writev(s.fd, iov) }
func (s *sockBackend) Close() error                     { return unix.Close(s.fd) }

// offloadSock is a sockBackend that claims to be an Offloader and records
// what it was told.
type offloadSock struct {
	sockBackend
	set []Offload
}

func (s *offloadSock) SetOffload(o Offload) error { s.set = append(s.set, o); return nil }

// newSockPair returns a device-side backend and the host-side peer.
func newSockPair(t testing.TB) (*sockBackend, *stdnet.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fds[1]), "peer")
	c, err := stdnet.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &sockBackend{fd: fds[0]}, c.(*stdnet.UnixConn)
}

// peerRead reads one frame from the host side of a socketpair.
func peerRead(t testing.TB, c *stdnet.UnixConn) []byte {
	t.Helper()
	p, err := peerReadErr(c)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// peerReadErr is peerRead for goroutines other than the test's.
func peerReadErr(c *stdnet.UnixConn) ([]byte, error) {
	buf := make([]byte, HeaderLen+MaxFrameLen+1)
	c.SetReadDeadline(time.Now().Add(timeout))
	n, err := c.Read(buf)
	if err != nil {
		return nil, fmt.Errorf("peer read: %w", err)
	}
	return buf[:n], nil
}

func peerWrite(t testing.TB, c *stdnet.UnixConn, frame []byte) {
	t.Helper()
	c.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := c.Write(frame); err != nil {
		t.Fatalf("peer write: %v", err)
	}
}

// guest is a mock virtio-net driver: the device behind a real mmio
// transport, probed through its registers, with buffer pools for both
// queues. It is used from one goroutine.
type guest struct {
	t        testing.TB
	dev      *Device
	tr       *mmio.Transport
	mem      *virtiotest.Memory
	irq      *virtiotest.Interrupt
	g        *virtiotest.Guest
	rx, tx   *virtiotest.Driver
	features uint64

	rxChains map[uint16][]queue.Buffer // outstanding receive chains
	txChains map[uint16][]queue.Buffer
	rxFree   map[uint32][]queue.Buffer // recycled buffers by size
	txFree   map[uint32][]queue.Buffer
	used     []usedChain // receive entries not yet assembled into frames
}

// usedChain is a reaped receive entry with its buffers: the driver frees
// descriptors at reap time, so the head alone soon names another chain.
type usedChain struct {
	virtiotest.Used
	bufs []queue.Buffer
}

type guestOptions struct {
	features   uint64 // accepted, besides VERSION_1
	queueSize  uint16 // 0: the device's
	regionSize uint64 // per queue; 0: 8 MiB
}

func newGuest(t testing.TB, dev *Device, opt guestOptions) *guest {
	t.Helper()
	if opt.regionSize == 0 {
		opt.regionSize = 8 << 20
	}
	mem := virtiotest.NewMemory(memBase, 2*opt.regionSize)
	irq := virtiotest.NewInterrupt()
	tr, err := mmio.New(dev, mem, irq)
	if err != nil {
		t.Fatal(err)
	}
	g, err := virtiotest.Probe(tr, mem, virtiotest.ProbeOptions{
		Features: opt.features, QueueSize: opt.queueSize,
		Region: memBase, RegionSize: opt.regionSize,
	})
	if err != nil {
		t.Fatalf("probe: %v (transport error: %v)", err, tr.Err())
	}
	if len(g.Queues) != 2 {
		t.Fatalf("%d queues", len(g.Queues))
	}
	return &guest{
		t: t, dev: dev, tr: tr, mem: mem, irq: irq, g: g,
		rx: g.Queues[RxQueue], tx: g.Queues[TxQueue], features: g.Features,
		rxChains: map[uint16][]queue.Buffer{}, txChains: map[uint16][]queue.Buffer{},
		rxFree: map[uint32][]queue.Buffer{}, txFree: map[uint32][]queue.Buffer{},
	}
}

func takeBuf(d *virtiotest.Driver, free map[uint32][]queue.Buffer, n uint32) queue.Buffer {
	if l := free[n]; len(l) > 0 {
		free[n] = l[:len(l)-1]
		return l[len(l)-1]
	}
	return queue.Buffer{Addr: d.Alloc(uint64(n)), Len: n}
}

// postRx makes one receive chain of writable buffers of the given sizes
// available, without kicking.
func (g *guest) postRx(sizes ...uint32) {
	g.t.Helper()
	var bufs []queue.Buffer
	for _, n := range sizes {
		bufs = append(bufs, takeBuf(g.rx, g.rxFree, n))
	}
	head, err := g.rx.Add(nil, bufs)
	if err != nil {
		g.t.Fatalf("post rx: %v", err)
	}
	g.rxChains[head] = bufs
}

// fillRx posts n single-buffer receive chains of size bytes and kicks.
func (g *guest) fillRx(n int, size uint32) {
	g.t.Helper()
	for range n {
		g.postRx(size)
	}
	g.rx.Kick()
}

// send makes a transmit chain of header+frame available, split into
// readable descriptors after the given byte offsets, and kicks.
func (g *guest) send(h, frame []byte, splits ...int) uint16 {
	g.t.Helper()
	data := append(append([]byte(nil), h...), frame...)
	var bufs []queue.Buffer
	prev := 0
	for _, s := range append(splits, len(data)) {
		b := takeBuf(g.tx, g.txFree, uint32(s-prev))
		g.tx.Fill(b, data[prev:s])
		bufs = append(bufs, b)
		prev = s
	}
	head, err := g.tx.Add(bufs, nil)
	if err != nil {
		g.t.Fatalf("send: %v", err)
	}
	g.txChains[head] = bufs
	g.tx.Kick()
	return head
}

// reap collects used entries of both queues; receive entries queue up for
// recv, transmit buffers are recycled. It returns the transmit entries.
func (g *guest) reap() []virtiotest.Used {
	g.t.Helper()
	u, err := g.rx.Reap()
	if err != nil {
		g.t.Fatalf("reap rx: %v", err)
	}
	for _, e := range u {
		g.used = append(g.used, usedChain{e, g.rxChains[e.Head]})
		delete(g.rxChains, e.Head)
	}
	tu, err := g.tx.Reap()
	if err != nil {
		g.t.Fatalf("reap tx: %v", err)
	}
	for _, e := range tu {
		for _, b := range g.txChains[e.Head] {
			g.txFree[b.Len] = append(g.txFree[b.Len], b)
		}
		delete(g.txChains, e.Head)
	}
	return tu
}

// wait blocks until cond holds, reaping between interrupts.
func (g *guest) wait(what string, cond func() bool) {
	g.t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		g.reap()
		if cond() {
			return
		}
		select {
		case <-g.irq.C():
		case <-deadline.C:
			g.t.Fatalf("timed out waiting for %s (stats %s)", what, g.dev.stats.String())
		}
	}
}

// waitTx waits until transmit chain head is used and returns its length.
func (g *guest) waitTx(head uint16) {
	g.t.Helper()
	g.wait(fmt.Sprintf("tx chain %d", head), func() bool { _, out := g.txChains[head]; return !out })
}

// rxFrame is a received frame as the guest sees it.
type rxFrame struct {
	hdr     []byte
	frame   []byte
	buffers int // used entries it took
}

// tryFrame assembles the next frame from reaped receive entries, if all
// its buffers are there. Buffers go back to the free pool (not reposted).
func (g *guest) tryFrame() (rxFrame, bool, error) {
	if len(g.used) == 0 {
		return rxFrame{}, false, nil
	}
	first, err := g.readUsed(g.used[0])
	if err != nil {
		return rxFrame{}, false, err
	}
	if len(first) < HeaderLen {
		return rxFrame{}, false, fmt.Errorf("used entry %+v: %d bytes, no header", g.used[0], len(first))
	}
	k := 1
	if g.features&FeatureMrgRxbuf != 0 {
		k = int(hdr(first).numBuffers())
	} else if nb := hdr(first).numBuffers(); nb != 1 {
		return rxFrame{}, false, fmt.Errorf("num_buffers %d without MRG_RXBUF", nb)
	}
	if k == 0 {
		return rxFrame{}, false, errors.New("num_buffers 0")
	}
	if len(g.used) < k {
		// Linux would count this as an error: a merged frame must be
		// published whole.
		return rxFrame{}, false, fmt.Errorf("frame of %d buffers, only %d used", k, len(g.used))
	}
	data := first
	for _, u := range g.used[1:k] {
		p, err := g.readUsed(u)
		if err != nil {
			return rxFrame{}, false, err
		}
		data = append(data, p...)
	}
	for _, u := range g.used[:k] {
		for _, b := range u.bufs {
			g.rxFree[b.Len] = append(g.rxFree[b.Len], b)
		}
	}
	g.used = g.used[k:]
	return rxFrame{hdr: data[:HeaderLen], frame: data[HeaderLen:], buffers: k}, true, nil
}

// readUsed returns the bytes the device wrote into a used receive chain.
func (g *guest) readUsed(u usedChain) ([]byte, error) {
	bufs := u.bufs
	if uint64(u.Len) > queue.Buffers(bufs).Len() {
		return nil, fmt.Errorf("used len %d > chain %d", u.Len, queue.Buffers(bufs).Len())
	}
	var out []byte
	left := u.Len
	for _, b := range bufs {
		n := min(left, b.Len)
		out = append(out, g.rx.Read(b)[:n]...)
		left -= n
	}
	return out, nil
}

// recv waits for the next frame.
func (g *guest) recv() rxFrame {
	g.t.Helper()
	var f rxFrame
	g.wait("a received frame", func() bool {
		var ok bool
		var err error
		f, ok, err = g.tryFrame()
		if err != nil {
			g.t.Fatal(err)
		}
		return ok
	})
	return f
}

// reset writes 0 to Status, as a driver does before re-probing.
func (g *guest) reset() { virtiotest.WriteReg(g.tr, mmio.RegStatus, 0) }

// status reads the transport's Status register.
func (g *guest) status() uint32 { return virtiotest.ReadReg(g.tr, mmio.RegStatus) }

func (g *guest) needsReset() bool { return g.status()&virtio.StatusDeviceNeedsReset != 0 }

// String formats the counters for failure messages.
func (s *Stats) String() string {
	return fmt.Sprintf("rx %d/%dB dropped %d invalid %d, tx %d/%dB dropped %d invalid %d, backend errors %d, interrupts %d",
		s.RxFrames.Load(), s.RxBytes.Load(), s.RxDropped.Load(), s.RxInvalid.Load(),
		s.TxFrames.Load(), s.TxBytes.Load(), s.TxDropped.Load(), s.TxInvalid.Load(),
		s.BackendErrors.Load(), s.Interrupts.Load())
}

// testFrame returns an Ethernet frame of n bytes with a recognizable body.
func testFrame(n int, seed byte) []byte {
	f := make([]byte, n)
	copy(f, []byte{0x52, 0x54, 0, 0, 0, 1, 0x52, 0x54, 0, 0, 0, 2, 0x88, 0xb5}) // local experimental EtherType
	for i := 14; i < n; i++ {
		f[i] = byte(i*7) + seed
	}
	return f
}

// header returns a virtio_net_hdr_v1.
func header(flags, gsoType uint8, hdrLen, gsoSize, csumStart, csumOffset uint16) []byte {
	h := make([]byte, HeaderLen)
	h[0], h[1] = flags, gsoType
	binary.LittleEndian.PutUint16(h[2:], hdrLen)
	binary.LittleEndian.PutUint16(h[4:], gsoSize)
	binary.LittleEndian.PutUint16(h[6:], csumStart)
	binary.LittleEndian.PutUint16(h[8:], csumOffset)
	return h
}

// newTestDevice returns a device over a socketpair with the peer end.
func newTestDevice(t testing.TB, cfg Config, offload bool) (*Device, *stdnet.UnixConn) {
	t.Helper()
	be, peer := newSockPair(t)
	cfg.Backend = be
	if offload {
		cfg.Backend = &offloadSock{sockBackend: *be}
	}
	d, err := New(cfg)
	if err != nil {
		be.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return d, peer
}

// probeOnly runs the probe sequence and returns its error, for tests of
// refused activations.
func probeOnly(t testing.TB, dev *Device, features uint64) (*virtiotest.Guest, error) {
	t.Helper()
	mem := virtiotest.NewMemory(memBase, 2<<20)
	tr, err := mmio.New(dev, mem, virtiotest.NewInterrupt())
	if err != nil {
		t.Fatal(err)
	}
	return virtiotest.Probe(tr, mem, virtiotest.ProbeOptions{Features: features, Region: memBase, RegionSize: 1 << 20})
}

// fakeTransport stands in for mmio.Transport when a test drives a worker
// directly, without its goroutine.
type fakeTransport struct {
	signals int
	failed  error
}

func (f *fakeTransport) Signal(cause uint32) error { f.signals++; return nil }
func (f *fakeTransport) Fail(err error) {
	if f.failed == nil {
		f.failed = err
	}
}

// direct is a worker driven synchronously: the test calls its passes, so
// it can look at the worker's state in between.
type direct struct {
	w      *worker
	mem    *virtiotest.Memory
	rx, tx *virtiotest.Driver
	tr     *fakeTransport
}

func newDirect(t testing.TB, d *Device, features uint64, size uint16, regionSize uint64) *direct {
	t.Helper()
	mem := virtiotest.NewMemory(memBase, 2*regionSize)
	rx := virtiotest.NewDriver(mem, size, memBase, regionSize)
	tx := virtiotest.NewDriver(mem, size, memBase+regionSize, regionSize)
	eventIdx := features&virtio.FeatureEventIdx != 0
	rx.SetEventIdx(eventIdx)
	tx.SetEventIdx(eventIdx)
	rxq, err := queue.New(rx.State(), mem)
	if err != nil {
		t.Fatal(err)
	}
	txq, err := queue.New(tx.State(), mem)
	if err != nil {
		t.Fatal(err)
	}
	tr := &fakeTransport{}
	return &direct{w: newWorker(d, mem, rxq, txq, features|virtio.FeatureVersion1, tr), mem: mem, rx: rx, tx: tx, tr: tr}
}

// waitConfigChange waits for a configuration-change interrupt.
func (g *guest) waitConfigChange() {
	g.t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		if virtiotest.ReadReg(g.tr, mmio.RegInterruptStatus)&virtio.InterruptConfigChange != 0 {
			g.g.Ack()
			return
		}
		select {
		case <-g.irq.C():
		case <-deadline.C:
			g.t.Fatal("timed out waiting for a configuration change")
		}
	}
}
