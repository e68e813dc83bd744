package vsock

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/boxd-dev/boxd/virtio"
	"github.com/boxd-dev/boxd/virtio/mmio"
	"github.com/boxd-dev/boxd/virtio/queue"
	"github.com/boxd-dev/boxd/virtio/virtiotest"
)

// This file is a small guest vsock driver for tests: it owns the three mock
// virtqueues of a device probed through its virtio-mmio registers and speaks
// the protocol on them independently of the device's code (its own header
// encoding, its own credit accounting). It also checks what the device
// sends: addresses, lengths, and above all that the device never exceeds the
// credit this guest advertised.

const (
	gBase       = 0x10000
	waitTimeout = 30 * time.Second // deadlock guard, not a timing assertion
)

var errReset = errors.New("connection reset")

type gopts struct {
	bufAlloc  uint32 // per-socket receive buffer advertised (default 256 KiB)
	holdRx    bool   // post no rx buffers until postRx
	queueSize uint16 // default: the device's maximum
	txPayload int    // largest payload per tx packet (default 4096)
	rxPayload int    // payload room per rx buffer (default 4096)
	// eagerEvents: the guest handles used event buffers inside the
	// interrupt itself, before the device's Signal returns, as a guest
	// vCPU running beside the device may.
	eagerEvents bool
}

// eagerIRQ is an interrupt line whose Trigger first lets the guest handle
// its event queue (gopts.eagerEvents).
type eagerIRQ struct {
	*virtiotest.Interrupt
	s *atomic.Pointer[gstack]
}

func (e eagerIRQ) Trigger() error {
	if s := e.s.Load(); s != nil {
		s.mu.Lock()
		if !s.holdEvents {
			s.pumpEvents()
			s.cond.Broadcast()
		}
		s.mu.Unlock()
	}
	return e.Interrupt.Trigger()
}

type txSlot struct{ hdr, pay queue.Buffer }

// gstack is the test guest. Everything is guarded by mu; cond is broadcast
// after every change.
type gstack struct {
	t     testing.TB
	dev   *Device
	tr    *mmio.Transport
	irq   *virtiotest.Interrupt
	guest *virtiotest.Guest
	rx    *virtiotest.Driver
	tx    *virtiotest.Driver
	ev    *virtiotest.Driver
	cid   uint64
	opt   gopts
	path  string

	stop, done chan struct{}
	wake       chan struct{}
	bg         sync.WaitGroup // goroutines started with spawn

	mu        sync.Mutex
	cond      sync.Cond
	rxBufs    map[uint16][]queue.Buffer // posted rx chains
	spareRx   [][]queue.Buffer          // held back (holdRx)
	txFree    []txSlot
	txBusy    map[uint16]txSlot
	txq       [][]byte // packets waiting for a tx slot
	evBufs    map[uint16]queue.Buffer
	conns     map[gkey]*gconn
	listeners map[uint32]chan *gconn
	nextPort  uint32
	events    []uint32 // event ids received
	// holdEvents leaves used event buffers unhandled (Linux runs its event
	// work separately from rx, possibly later).
	holdEvents bool
	requests   atomic.Int64 // connection requests received (read without mu)
	errs       []string     // protocol violations by the device
	rxPackets  int
	closed     bool   // the guest stopped: waits fail
	stray      []gpkt // RSTs for no socket, and ignored REQUESTs
	// ignoreRequests makes the guest drop connection requests unanswered.
	ignoreRequests bool
}

var errStopped = errors.New("guest stopped")

// spawn runs f on a goroutine that the test's cleanup waits for (after the
// guest stopped, so f's blocking calls return).
func (s *gstack) spawn(f func()) {
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		f()
	}()
}

type gkey struct{ local, remote uint32 }

func newStack(t testing.TB, cfg Config, opt gopts) *gstack {
	t.Helper()
	if opt.bufAlloc == 0 {
		opt.bufAlloc = 256 << 10
	}
	if opt.txPayload == 0 {
		opt.txPayload = 4096
	}
	if opt.rxPayload == 0 {
		opt.rxPayload = 4096
	}
	if cfg.GuestCID == 0 {
		cfg.GuestCID = 42
	}
	if cfg.UDSPath == "" {
		cfg.UDSPath = filepath.Join(t.TempDir(), "v.sock")
	}
	dev, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	qs := uint64(dev.Config().QueueSize)
	if opt.queueSize != 0 {
		qs = uint64(opt.queueSize)
	}
	region := uint64(64<<10) + qs*uint64(2*HeaderLen+opt.rxPayload+opt.txPayload+64)
	region = (region + 0xfff) &^ 0xfff
	mem := virtiotest.NewMemory(gBase, 3*region)
	irq := virtiotest.NewInterrupt()
	var line virtio.Interrupt = irq
	var eager atomic.Pointer[gstack]
	if opt.eagerEvents {
		line = eagerIRQ{irq, &eager}
	}
	tr, err := mmio.New(dev, mem, line)
	if err != nil {
		dev.Close()
		t.Fatalf("mmio.New: %v", err)
	}
	g, err := virtiotest.Probe(tr, mem, virtiotest.ProbeOptions{
		Features: queue.Features, QueueSize: opt.queueSize, Region: gBase, RegionSize: region,
	})
	if err != nil {
		dev.Close()
		t.Fatalf("Probe: %v", err)
	}
	s := &gstack{
		t: t, dev: dev, tr: tr, irq: irq, guest: g, opt: opt, path: cfg.UDSPath,
		rx: g.Queues[QueueRx], tx: g.Queues[QueueTx], ev: g.Queues[QueueEvent],
		cid:  binary.LittleEndian.Uint64(g.ReadConfig(0, 8)),
		stop: make(chan struct{}), done: make(chan struct{}), wake: make(chan struct{}, 1),
		rxBufs: map[uint16][]queue.Buffer{}, txBusy: map[uint16]txSlot{},
		evBufs: map[uint16]queue.Buffer{}, conns: map[gkey]*gconn{},
		listeners: map[uint32]chan *gconn{}, nextPort: 50000,
	}
	s.cond.L = &s.mu
	eager.Store(s)
	// Half the rx buffers are split like Linux 6.1 (header, then data), half
	// are one buffer, so both layouts are exercised.
	// Fewer chains than descriptors: a split chain takes two.
	for i := range int(s.rx.Size()) / 2 {
		var bufs []queue.Buffer
		if i%2 == 0 {
			bufs = []queue.Buffer{s.rx.Buf(HeaderLen, nil), s.rx.Buf(uint32(opt.rxPayload), nil)}
		} else {
			bufs = []queue.Buffer{s.rx.Buf(uint32(HeaderLen+opt.rxPayload), nil)}
		}
		s.spareRx = append(s.spareRx, bufs)
	}
	for range s.tx.Size() / 2 {
		s.txFree = append(s.txFree, txSlot{s.tx.Buf(HeaderLen, nil), s.tx.Buf(uint32(opt.txPayload), nil)})
	}
	s.mu.Lock()
	for range s.ev.Size() {
		b := s.ev.Buf(eventLen, nil)
		head, err := s.ev.Add(nil, []queue.Buffer{b})
		if err != nil {
			t.Fatalf("event buffer: %v", err)
		}
		s.evBufs[head] = b
	}
	s.ev.Kick()
	if !opt.holdRx {
		s.postRxLocked()
	}
	s.mu.Unlock()
	go s.loop()
	t.Cleanup(func() {
		s.close()
		s.bg.Wait()
		if err := dev.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, e := range s.errs {
			t.Errorf("device broke the protocol: %s", e)
		}
	})
	return s
}

// close stops the guest's loop (idempotent).
func (s *gstack) close() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
	s.mu.Lock()
	s.closed = true
	s.cond.Broadcast()
	s.mu.Unlock()
}

// postRx makes every held-back rx buffer available and kicks.
func (s *gstack) postRx() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.postRxLocked()
}

func (s *gstack) postRxLocked() {
	for _, bufs := range s.spareRx {
		s.addRx(bufs)
	}
	s.spareRx = nil
	s.rx.Kick()
}

func (s *gstack) addRx(bufs []queue.Buffer) {
	head, err := s.rx.Add(nil, bufs)
	if err != nil {
		s.t.Errorf("rx buffer: %v", err)
		return
	}
	s.rxBufs[head] = bufs
}

func (s *gstack) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// loop is the guest's interrupt handler and tx pump.
func (s *gstack) loop() {
	defer close(s.done)
	for {
		select {
		case <-s.stop:
			return
		case <-s.irq.C():
		case <-s.wake:
		}
		s.guest.Ack()
		s.mu.Lock()
		s.pump()
		s.cond.Broadcast()
		s.mu.Unlock()
	}
}

// pump reaps every queue and sends what can be sent. mu held.
func (s *gstack) pump() {
	used, err := s.rx.Reap()
	if err != nil {
		s.errs = append(s.errs, fmt.Sprintf("rx reap: %v", err))
	}
	// Reap frees every used chain at once, so a head re-added below may
	// reappear later in this batch: look up all buffers first.
	got := make([][]queue.Buffer, len(used))
	for i, u := range used {
		got[i] = s.rxBufs[u.Head]
		delete(s.rxBufs, u.Head)
	}
	for i, u := range used {
		if u.Len == 0 && queue.Buffers(got[i]).Len() < HeaderLen {
			continue // a buffer too small to use, refused by the device: drop it
		}
		s.receive(got[i], u.Len)
		s.addRx(got[i])
	}
	if len(used) > 0 {
		s.rx.Kick()
	}
	if !s.holdEvents {
		s.pumpEvents()
	}
	s.flushTx()
}

// pumpEvents handles used event buffers and makes them available again,
// as Linux's event work does. mu held.
func (s *gstack) pumpEvents() {
	used, err := s.ev.Reap()
	if err != nil {
		s.errs = append(s.errs, fmt.Sprintf("event reap: %v", err))
	}
	evs := make([]queue.Buffer, len(used))
	for i, u := range used {
		evs[i] = s.evBufs[u.Head]
		delete(s.evBufs, u.Head)
	}
	for i, u := range used {
		s.event(evs[i], u.Len)
		head, err := s.ev.Add(nil, []queue.Buffer{evs[i]})
		if err == nil {
			s.evBufs[head] = evs[i]
		}
	}
	if len(used) > 0 {
		s.ev.Kick()
	}
}

// flushTx reaps the tx queue and sends queued packets into free slots.
func (s *gstack) flushTx() {
	used, err := s.tx.Reap()
	if err != nil {
		s.errs = append(s.errs, fmt.Sprintf("tx reap: %v", err))
	}
	for _, u := range used {
		if slot, ok := s.txBusy[u.Head]; ok {
			delete(s.txBusy, u.Head)
			s.txFree = append(s.txFree, slot)
		}
		if u.Len != 0 {
			s.errs = append(s.errs, fmt.Sprintf("tx used length %d, want 0", u.Len))
		}
	}
	sent := false
	for len(s.txq) > 0 && len(s.txFree) > 0 {
		p := s.txq[0]
		slot := s.txFree[len(s.txFree)-1]
		hdr := p[:min(len(p), HeaderLen)]
		s.tx.Fill(slot.hdr, hdr)
		bufs := []queue.Buffer{{Addr: slot.hdr.Addr, Len: uint32(len(hdr))}}
		if pay := p[len(hdr):]; len(pay) > 0 {
			s.tx.Fill(slot.pay, pay)
			bufs = append(bufs, queue.Buffer{Addr: slot.pay.Addr, Len: uint32(len(pay))})
		}
		head, err := s.tx.Add(bufs, nil)
		if err != nil {
			break // descriptors still in flight
		}
		s.txFree = s.txFree[:len(s.txFree)-1]
		s.txBusy[head] = slot
		s.txq = s.txq[1:]
		sent = true
	}
	if sent {
		s.tx.Kick()
	}
}

func (s *gstack) event(b queue.Buffer, n uint32) {
	if n != eventLen {
		s.errs = append(s.errs, fmt.Sprintf("event of %d bytes", n))
		return
	}
	id := binary.LittleEndian.Uint32(s.ev.Read(b))
	s.events = append(s.events, id)
	if id == eventTransportReset {
		// Like virtio_vsock_reset_sock: every socket is reset locally.
		for k, c := range s.conns {
			c.rst = true
			c.removeLocked()
			delete(s.conns, k)
		}
	}
}

// gpkt is a decoded packet, encoded by this file's own code.
type gpkt struct {
	srcCID, dstCID   uint64
	srcPort, dstPort uint32
	typ, op          uint16
	flags            uint32
	bufAlloc, fwdCnt uint32
	payload          []byte
}

func (p gpkt) bytes() []byte {
	b := make([]byte, HeaderLen+len(p.payload))
	le := binary.LittleEndian
	le.PutUint64(b[0:], p.srcCID)
	le.PutUint64(b[8:], p.dstCID)
	le.PutUint32(b[16:], p.srcPort)
	le.PutUint32(b[20:], p.dstPort)
	le.PutUint32(b[24:], uint32(len(p.payload)))
	le.PutUint16(b[28:], p.typ)
	le.PutUint16(b[30:], p.op)
	le.PutUint32(b[32:], p.flags)
	le.PutUint32(b[36:], p.bufAlloc)
	le.PutUint32(b[40:], p.fwdCnt)
	copy(b[HeaderLen:], p.payload)
	return b
}

// receive parses and dispatches one rx packet of n bytes.
func (s *gstack) receive(bufs []queue.Buffer, n uint32) {
	var raw []byte
	for _, b := range bufs {
		raw = append(raw, s.rx.Read(b)...)
	}
	if n < HeaderLen || int(n) > len(raw) {
		s.errs = append(s.errs, fmt.Sprintf("rx used length %d (buffer %d)", n, len(raw)))
		return
	}
	le := binary.LittleEndian
	p := gpkt{
		srcCID: le.Uint64(raw[0:]), dstCID: le.Uint64(raw[8:]),
		srcPort: le.Uint32(raw[16:]), dstPort: le.Uint32(raw[20:]),
		typ: le.Uint16(raw[28:]), op: le.Uint16(raw[30:]), flags: le.Uint32(raw[32:]),
		bufAlloc: le.Uint32(raw[36:]), fwdCnt: le.Uint32(raw[40:]),
	}
	plen := le.Uint32(raw[24:])
	switch {
	case p.srcCID != HostCID || p.dstCID != s.cid || p.typ != typeStream:
		s.errs = append(s.errs, fmt.Sprintf("bad packet addressing: %+v", p))
		return
	case plen != n-HeaderLen:
		s.errs = append(s.errs, fmt.Sprintf("len %d but used length %d", plen, n))
		return
	case p.op != opRW && plen != 0:
		s.errs = append(s.errs, fmt.Sprintf("op %d with payload", p.op))
	case p.bufAlloc != s.dev.Config().BufferSize:
		s.errs = append(s.errs, fmt.Sprintf("buf_alloc %d", p.bufAlloc))
	}
	p.payload = raw[HeaderLen:n]
	s.rxPackets++
	s.dispatch(p)
}

// send queues a packet from c (or a raw one when c is nil). mu held.
func (s *gstack) send(c *gconn, op uint16, flags uint32, payload []byte) {
	p := gpkt{srcCID: s.cid, dstCID: HostCID, typ: typeStream, op: op, flags: flags, payload: payload}
	p.srcPort, p.dstPort = c.lport, c.rport
	p.bufAlloc, p.fwdCnt = c.bufAlloc, c.fwdCnt
	c.lastFwdSent = c.fwdCnt
	s.txq = append(s.txq, p.bytes())
	s.kick()
}

// txChain makes a hand-built chain available on the tx queue.
func (s *gstack) txChain(readable, writable []queue.Buffer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.tx.Add(readable, writable); err != nil {
		s.t.Fatalf("tx chain: %v", err)
	}
	s.tx.Kick()
}

// txDone waits until the device returned every tx chain (and so has
// counted what they held).
func (s *gstack) txDone() error {
	return s.waitFor("tx chains returned", func() bool {
		s.flushTx()
		return len(s.txq) == 0 && s.tx.UsedIdx() == s.tx.AvailIdx()
	})
}

// sendRaw queues arbitrary packet bytes.
func (s *gstack) sendRaw(b []byte) {
	s.mu.Lock()
	s.txq = append(s.txq, b)
	s.mu.Unlock()
	s.kick()
}

func (s *gstack) rstTo(p gpkt) {
	s.txq = append(s.txq, gpkt{
		srcCID: s.cid, dstCID: HostCID, srcPort: p.dstPort, dstPort: p.srcPort,
		typ: typeStream, op: opRst,
	}.bytes())
}

// wait blocks until cond (evaluated with mu held) is true. mu held.
func (s *gstack) wait(what string, cond func() bool) error {
	if cond() {
		return nil
	}
	expired := false
	t := time.AfterFunc(waitTimeout, func() {
		s.mu.Lock()
		expired = true
		s.cond.Broadcast()
		s.mu.Unlock()
	})
	defer t.Stop()
	for !cond() {
		if s.closed {
			return fmt.Errorf("waiting for %s: %w", what, errStopped)
		}
		if expired {
			return fmt.Errorf("timed out waiting for %s", what)
		}
		s.cond.Wait()
	}
	return nil
}

// waitFor is wait without mu held.
func (s *gstack) waitFor(what string, cond func() bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.wait(what, cond)
}
