package vsock

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/boxd-dev/boxd/virtio"
	"github.com/boxd-dev/boxd/virtio/queue"
)

// Queue indices (virtio 1.2 §5.10.2).
const (
	QueueRx    = 0
	QueueTx    = 1
	QueueEvent = 2
)

// Defaults for the zero fields of Config.
const (
	DefaultBufferSize     = 64 << 10
	DefaultMaxConnections = 256
	DefaultConnectTimeout = 5 * time.Second
	DefaultQueueSize      = 256
)

// ErrClosed is returned by methods of a closed Device.
var ErrClosed = errors.New("vsock: device closed")

// Config describes one vsock device.
type Config struct {
	// GuestCID is the guest's context ID, 3 ≤ GuestCID < 2^32-1 (0-2 are
	// reserved, the upper 32 bits must be zero, -1 is VMADDR_CID_ANY).
	GuestCID uint64
	// UDSPath is the Unix socket the device listens on for host-initiated
	// connections; guest connections to host port P go to UDSPath_P.
	UDSPath string
	// BufferSize is the per-connection buffer in each direction, and the
	// buf_alloc the device advertises to the guest (default 64 KiB).
	BufferSize uint32
	// MaxConnections bounds open connections, plus host clients still
	// sending their CONNECT line (default 256).
	MaxConnections int
	// ConnectTimeout bounds how long the guest may take to answer a
	// host-initiated connection request once delivered, and how long a host
	// client may take to send its CONNECT line (default 5 s).
	ConnectTimeout time.Duration
	// QueueSize is the maximum size of each of the three queues (default 256).
	QueueSize uint16
}

func (c *Config) setDefaults() error {
	if c.GuestCID < 3 || c.GuestCID >= 0xffff_ffff {
		return fmt.Errorf("vsock: guest CID %d outside [3, 2^32-1)", c.GuestCID)
	}
	if c.UDSPath == "" {
		return errors.New("vsock: empty socket path")
	}
	if c.BufferSize == 0 {
		c.BufferSize = DefaultBufferSize
	}
	if c.BufferSize < 4096 || c.BufferSize > 16<<20 {
		return fmt.Errorf("vsock: buffer size %d outside [4 KiB, 16 MiB]", c.BufferSize)
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = DefaultMaxConnections
	}
	if c.MaxConnections < 0 {
		return fmt.Errorf("vsock: max connections %d", c.MaxConnections)
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.ConnectTimeout < 0 {
		return fmt.Errorf("vsock: connect timeout %v", c.ConnectTimeout)
	}
	if c.QueueSize == 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.QueueSize > queue.MaxSize || c.QueueSize&(c.QueueSize-1) != 0 {
		return fmt.Errorf("vsock: queue size %d is not a power of two ≤ %d", c.QueueSize, queue.MaxSize)
	}
	return nil
}

// Stats counts the device's activity; all fields are atomic and may be read
// at any time. The second group counts guest mistakes: the packet is dropped
// (or answered with RST) and the device carries on.
type Stats struct {
	TxPackets         atomic.Uint64 // valid packets the guest sent
	TxBytes           atomic.Uint64 // stream bytes from the guest
	RxPackets         atomic.Uint64 // packets delivered to the guest
	RxBytes           atomic.Uint64 // stream bytes delivered to the guest
	HostConnects      atomic.Uint64 // host-initiated connections the guest accepted
	GuestConnects     atomic.Uint64 // guest-initiated connections to UDSPath_P
	HostConnectFails  atomic.Uint64 // host-initiated: guest answered RST or timed out
	ConnectTimeouts   atomic.Uint64 // host-initiated: no answer within ConnectTimeout
	GuestConnectFails atomic.Uint64 // guest-initiated: nothing listening at UDSPath_P
	BadHandshakes     atomic.Uint64 // host clients that did not send "CONNECT <port>\n"
	ConnLimit         atomic.Uint64 // connections refused at MaxConnections
	ResetsSent        atomic.Uint64 // RST packets delivered to the guest
	ResetsReceived    atomic.Uint64 // RST packets from the guest on a live connection
	HostErrors        atomic.Uint64 // host socket read/write failures (peer went away)
	AcceptErrors      atomic.Uint64 // failed accepts on UDSPath
	TransportResets   atomic.Uint64 // ResetTransport calls
	// RxHeldForReset counts rx rounds that had packets for the guest but
	// waited for the driver to handle a transport reset first.
	RxHeldForReset atomic.Uint64
	Interrupts     atomic.Uint64 // used-buffer interrupts raised

	InvalidChains    atomic.Uint64 // malformed descriptor chains on any queue
	ShortPackets     atomic.Uint64 // tx chains shorter than the header
	BadLength        atomic.Uint64 // len beyond the buffer, or on a control packet
	BadCID           atomic.Uint64 // src_cid not the guest's or dst_cid not the host (dropped)
	BadType          atomic.Uint64 // socket type other than STREAM (answered with RST)
	BadOp            atomic.Uint64 // unknown op, or op invalid in the connection's state
	UnknownConn      atomic.Uint64 // packets for no connection (answered with RST)
	CreditViolations atomic.Uint64 // data beyond the advertised credit (connection reset)
	RxBufferErrors   atomic.Uint64 // rx or event chains too small to hold a packet
}

// Device is a virtio-vsock device whose host side is Unix sockets. It
// implements mmio.Device. See the package documentation for the protocol.
type Device struct {
	cfg    Config
	config [8]byte // struct virtio_vsock_config, immutable
	ln     *net.UnixListener
	stats  Stats

	// wake is the worker's only wake-up: Notify, host goroutines and control
	// calls send on it without blocking. Buffered (1), never closed.
	wake   chan struct{}
	stop   chan struct{} // closed by Close
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the device started

	nmu      sync.Mutex
	notified []*conn // connections whose host side changed; guarded by nmu

	hsMu       sync.Mutex
	handshakes map[*net.UnixConn]struct{} // host clients before their CONNECT line; guarded by hsMu
	hsClosed   bool                       // guarded by hsMu

	// mu guards everything below and is held by the worker while it touches
	// guest memory, so Reset and Close wait for it.
	mu        sync.Mutex
	closed    bool
	paused    bool          // Pause: the worker leaves the queues alone until Resume
	mem       virtio.Memory // nil while not activated
	rxq, txq  *queue.Queue
	evq       *queue.Queue
	tr        virtio.Transport
	failed    bool                // a ring is corrupt: wait for reset
	conns     map[connKey]*conn   // every connection, by (host port, guest port)
	ephemeral map[uint32]struct{} // host ports assigned to host-initiated connections
	nextPort  uint32              // next ephemeral host port to try
	rxReady   []*conn             // connections with packets for the guest, round-robin
	rsts      []connKey           // RSTs owed for packets that matched no connection
	evPending bool                // a TRANSPORT_RESET event awaits an event buffer
	// evAwait: the reset was delivered and rx waits until the driver has
	// handled it, which it shows by making an event buffer available again
	// (its avail index moving past evAwaitIdx). Linux handles the event and
	// the rx queue in separate work items: a connection delivered before
	// the reset is handled would be reset with the stale ones.
	evAwait    bool
	evAwaitIdx uint16
	txStalled  bool            // tx processing paused until rsts drains
	rxScratch  [HeaderLen]byte // header encoding buffer
	txScratch  [HeaderLen]byte // header decoding buffer
}

// firstEphemeral is where host ports of host-initiated connections start:
// far above any port a guest service listens on.
const firstEphemeral = 1 << 30

// maxPendingRsts bounds RSTs owed to the guest for packets that matched no
// connection; tx processing pauses while it is full.
const maxPendingRsts = 256

// New checks cfg, listens on cfg.UDSPath and starts the device's worker. The
// guest side starts when the driver activates the device; host clients may
// connect before that and wait.
func New(cfg Config) (*Device, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	ln, err := listen(cfg.UDSPath)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Device{
		cfg:        cfg,
		ln:         ln,
		wake:       make(chan struct{}, 1),
		stop:       make(chan struct{}),
		ctx:        ctx,
		cancel:     cancel,
		handshakes: map[*net.UnixConn]struct{}{},
		conns:      map[connKey]*conn{},
		ephemeral:  map[uint32]struct{}{},
		nextPort:   firstEphemeral,
	}
	binary.LittleEndian.PutUint64(d.config[:], cfg.GuestCID)
	d.wg.Add(2)
	go d.run()
	go d.acceptLoop()
	return d, nil
}

// Stats returns the device's counters.
func (d *Device) Stats() *Stats { return &d.stats }

// Config returns the configuration with defaults filled in.
func (d *Device) Config() Config { return d.cfg }

// Type implements mmio.Device.
func (d *Device) Type() uint32 { return virtio.DeviceVsock }

// Features implements mmio.Device. No device-specific bit is offered: with
// none negotiated, the stream type is implied (§5.10.3).
func (d *Device) Features() uint64 { return virtio.FeatureVersion1 | queue.Features }

// QueueSizes implements mmio.Device: rx, tx and event.
func (d *Device) QueueSizes() []uint16 {
	return []uint16{d.cfg.QueueSize, d.cfg.QueueSize, d.cfg.QueueSize}
}

// ReadConfig implements mmio.Device: the space is guest_cid (le64).
func (d *Device) ReadConfig(offset uint64, data []byte) {
	clear(data)
	if offset < uint64(len(d.config)) {
		copy(data, d.config[offset:])
	}
}

// WriteConfig implements mmio.Device; guest_cid is read-only.
func (d *Device) WriteConfig(offset uint64, data []byte) {}

// Activate implements mmio.Device.
func (d *Device) Activate(mem virtio.Memory, queues []*queue.Queue, features uint64, t virtio.Transport) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.closed:
		return ErrClosed
	case d.mem != nil:
		return errors.New("vsock: already active")
	case len(queues) != 3:
		return fmt.Errorf("vsock: %d queues, want 3", len(queues))
	}
	for i, q := range queues {
		if !q.Ready() {
			return fmt.Errorf("vsock: queue %d not enabled", i)
		}
	}
	d.mem, d.tr = mem, t
	d.rxq, d.txq, d.evq = queues[QueueRx], queues[QueueTx], queues[QueueEvent]
	d.failed, d.evPending, d.txStalled, d.evAwait = false, false, false, false
	d.kick()
	return nil
}

// Notify implements mmio.Device: it wakes the worker and never blocks.
func (d *Device) Notify(q int) { d.kick() }

// kick wakes the worker without blocking.
func (d *Device) kick() {
	select {
	case d.wake <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// Reset implements mmio.Device: it drops every connection (host sides see
// their socket close) and forgets the queues. Host clients that connect
// afterwards wait for the next activation.
func (d *Device) Reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dropAll()
	d.deactivate()
}

// deactivate forgets the queues. mu held.
func (d *Device) deactivate() {
	d.mem, d.tr, d.rxq, d.txq, d.evq = nil, nil, nil, nil, nil
	d.failed, d.evPending, d.txStalled, d.evAwait = false, false, false, false
}

// ResetTransport drops every connection, closing the host sides, and tells
// an active driver with a VIRTIO_VSOCK_EVENT_TRANSPORT_RESET event, after
// which the guest resets its sockets and re-reads guest_cid. The monitor
// calls it after restoring a snapshot or forking, when the guest's
// connections no longer have host peers. The event is delivered as soon as
// the driver has an event buffer; packets to the guest wait until then, so
// none is seen before the reset.
func (d *Device) ResetTransport() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	d.resetTransport()
	return nil
}

// resetTransport drops every connection and owes an active driver a
// TRANSPORT_RESET event. mu held.
func (d *Device) resetTransport() {
	d.stats.TransportResets.Add(1)
	d.dropAll()
	if d.mem != nil && !d.failed {
		d.evPending = true
		d.kick()
	}
}

// Close stops the device for good: it closes the listening socket (removing
// it) and every host connection, and waits for all of the device's
// goroutines to end.
func (d *Device) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.dropAll()
	d.deactivate()
	d.mu.Unlock()

	err := d.ln.Close()
	d.hsMu.Lock()
	d.hsClosed = true
	for hc := range d.handshakes {
		hc.Close()
	}
	d.hsMu.Unlock()
	d.cancel()
	close(d.stop)
	d.wg.Wait()
	if err != nil {
		return fmt.Errorf("vsock: close listener: %w", err)
	}
	return nil
}

// dropAll closes every connection without telling the guest. mu held.
func (d *Device) dropAll() {
	for _, c := range d.conns {
		c.shutdownHost()
		c.removed = true
	}
	clear(d.conns)
	clear(d.ephemeral)
	d.rxReady, d.rsts = nil, nil
	d.txStalled = false
}

// numConns returns the number of connections the device tracks.
func (d *Device) numConns() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.conns)
}
