package mmio

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/boxd-dev/boxd/virtio"
	"github.com/boxd-dev/boxd/virtio/queue"
)

// Register offsets of the virtio-mmio version 2 layout.
const (
	RegMagic             = 0x000
	RegVersion           = 0x004
	RegDeviceID          = 0x008
	RegVendorID          = 0x00c
	RegDeviceFeatures    = 0x010
	RegDeviceFeaturesSel = 0x014
	RegDriverFeatures    = 0x020
	RegDriverFeaturesSel = 0x024
	RegQueueSel          = 0x030
	RegQueueNumMax       = 0x034
	RegQueueNum          = 0x038
	RegQueueReady        = 0x044
	RegQueueNotify       = 0x050
	RegInterruptStatus   = 0x060
	RegInterruptACK      = 0x064
	RegStatus            = 0x070
	RegQueueDescLow      = 0x080
	RegQueueDescHigh     = 0x084
	RegQueueDriverLow    = 0x090
	RegQueueDriverHigh   = 0x094
	RegQueueDeviceLow    = 0x0a0
	RegQueueDeviceHigh   = 0x0a4
	RegSHMSel            = 0x0ac
	RegSHMLenLow         = 0x0b0
	RegSHMLenHigh        = 0x0b4
	RegSHMBaseLow        = 0x0b8
	RegSHMBaseHigh       = 0x0bc
	RegQueueReset        = 0x0c0
	RegConfigGeneration  = 0x0fc
	// ConfigOffset is where the device-specific configuration space starts.
	ConfigOffset = 0x100

	// NotifyOffset is the QueueNotify register: the monitor registers an
	// ioeventfd here (4-byte write, datamatch = queue index) and calls
	// Transport.Notify when it fires, so a kick does not exit the vCPU.
	NotifyOffset = RegQueueNotify

	// Size is the MMIO window of one device.
	Size = 0x1000

	// MagicValue is "virt" in little endian; Version is the modern layout.
	MagicValue = 0x74726976
	Version    = 2
	// VendorID is "BOXD" in little endian.
	VendorID = 0x44584f42
)

// Device is a virtio device behind a transport. Implementations: virtio/blk
// (and later net, vsock).
//
// Threading contract: the transport calls ReadConfig, WriteConfig, Activate
// and Reset with its register lock held, from a vCPU goroutine; they must not
// block on the guest. Notify may be called from any goroutine at any time
// (also before Activate and after Reset, when it must do nothing) and must not
// block: it only wakes the device's worker.
type Device interface {
	// Type returns the virtio device ID (virtio.DeviceBlock, ...).
	Type() uint32
	// Features returns the feature bits the device offers, including
	// virtio.FeatureVersion1 and the ring features it supports (queue.Features).
	Features() uint64
	// QueueSizes returns the maximum size of each queue (QueueNumMax); its
	// length is the number of queues. Each is a power of two ≤ queue.MaxSize.
	QueueSizes() []uint16
	// ReadConfig fills data from device configuration space at offset; bytes
	// beyond the space read as zero.
	ReadConfig(offset uint64, data []byte)
	// WriteConfig handles a driver write to configuration space.
	WriteConfig(offset uint64, data []byte)
	// Activate starts the device when the driver sets DRIVER_OK. queues has
	// one entry per QueueSizes entry (queues the driver did not enable are not
	// Ready); the device owns them until Reset. features is what was
	// negotiated. t is how the device raises interrupts and reports fatal
	// errors. An error sets DEVICE_NEEDS_RESET.
	Activate(mem virtio.Memory, queues []*queue.Queue, features uint64, t virtio.Transport) error
	// Notify tells the device the driver made buffers available on queue q.
	Notify(q int)
	// Reset stops the device and returns it to its pre-activation state. When
	// it returns, the device no longer accesses guest memory or the queues.
	Reset()
}

// KickFDUser is a Device whose worker waits on its queues' notification
// eventfds itself. The monitor registers one ioeventfd per queue on the
// QueueNotify register; for a KickFDUser it hands those eventfds to the
// device instead of reading them on a goroutine of its own and calling
// Notify, so a guest kick wakes the device's worker with one eventfd signal
// and no hop through the Go scheduler. A kick that reaches the register as
// a trapped MMIO write still arrives through Notify.
type KickFDUser interface {
	// UseKickFDs is called once, before the guest runs, with fds[q] the
	// eventfd for queue q (len(fds) == len(QueueSizes())). The device keeps
	// duplicates of what it uses (the caller closes its own fds whenever
	// it likes) and closes them in Close. A readable fd means what
	// Notify(q) means and is only acted on while the device is active and
	// not paused: the fd may turn readable at any time, and a wake-up with
	// nothing in the ring is harmless.
	UseKickFDs(fds []int) error
}

// Stats counts what a driver did wrong; all fields are atomic.
type Stats struct {
	InvalidAccesses atomic.Uint64 // bad offset/size, write to read-only register, out-of-order config
	RejectedStatus  atomic.Uint64 // status writes refused by the state machine
	ActivateErrors  atomic.Uint64 // DRIVER_OK failed: bad queue config or device error
	DeviceFailures  atomic.Uint64 // Fail calls from the device
	Interrupts      atomic.Uint64 // interrupts raised
	InterruptErrors atomic.Uint64 // Interrupt.Trigger failures
}

// Transport is one virtio-mmio device window. It implements the monitor's
// bus Device (Read/Write) structurally and virtio.Transport for its device.
type Transport struct {
	dev    Device
	mem    virtio.Memory
	irq    virtio.Interrupt
	sizes  []uint16
	offers uint64
	stats  Stats

	// Lock-free state, shared with the device worker and the ioeventfd path.
	status     atomic.Uint32 // device status; written only with mu held
	isr        atomic.Uint32 // InterruptStatus bits not yet acknowledged
	needsReset atomic.Bool   // DEVICE_NEEDS_RESET, set by Fail or a failed activation
	active     atomic.Bool   // Activate succeeded and no reset since
	generation atomic.Uint32 // ConfigGeneration
	paused     atomic.Bool   // Pause: notifications are dropped until Resume; written only with mu held
	lastErr    atomic.Pointer[error]

	mu         sync.Mutex // guards the register file below and device config/lifecycle calls
	devFeatSel uint32
	drvFeatSel uint32
	drvFeat    uint64
	queueSel   uint32
	queues     []queue.State
	live       []*queue.Queue // the queues handed to Activate; nil while not active
}

// New returns a transport for dev over guest memory mem, raising irq.
// It fails if the device describes itself inconsistently.
func New(dev Device, mem virtio.Memory, irq virtio.Interrupt) (*Transport, error) {
	sizes := append([]uint16(nil), dev.QueueSizes()...)
	for i, s := range sizes {
		if s == 0 || s > queue.MaxSize || s&(s-1) != 0 {
			return nil, fmt.Errorf("mmio: device queue %d: max size %d is not a power of two ≤ %d", i, s, queue.MaxSize)
		}
	}
	if dev.Features()&virtio.FeatureVersion1 == 0 {
		return nil, fmt.Errorf("mmio: device type %d does not offer VIRTIO_F_VERSION_1", dev.Type())
	}
	t := &Transport{dev: dev, mem: mem, irq: irq, sizes: sizes, offers: dev.Features()}
	t.mu.Lock()
	t.resetRegisters()
	t.mu.Unlock()
	return t, nil
}

// Device returns the wrapped device.
func (t *Transport) Device() Device { return t.dev }

// Stats returns the transport's counters.
func (t *Transport) Stats() *Stats { return &t.stats }

// Err returns the error that last set DEVICE_NEEDS_RESET or refused
// activation, for diagnostics.
func (t *Transport) Err() error {
	if e := t.lastErr.Load(); e != nil {
		return *e
	}
	return nil
}

// resetRegisters returns the register file to its initial state. mu held.
func (t *Transport) resetRegisters() {
	t.status.Store(0)
	t.isr.Store(0)
	t.needsReset.Store(false)
	t.active.Store(false)
	t.devFeatSel, t.drvFeatSel, t.drvFeat, t.queueSel = 0, 0, 0, 0
	t.live = nil
	t.queues = make([]queue.State, len(t.sizes))
	for i, s := range t.sizes {
		t.queues[i] = queue.State{MaxSize: s}
	}
}

// Notify delivers a queue notification to the device if it is running. It
// is the ioeventfd path: lock-free and safe from any goroutine.
func (t *Transport) Notify(q int) {
	if q < 0 || q >= len(t.sizes) || !t.active.Load() || t.needsReset.Load() || t.paused.Load() {
		// While paused the kick is dropped: Resume notifies every queue.
		return
	}
	t.dev.Notify(q)
}

// Signal implements virtio.Transport: it records cause in InterruptStatus and
// raises the interrupt.
func (t *Transport) Signal(cause uint32) error {
	cause &= virtio.InterruptUsedBuffer | virtio.InterruptConfigChange
	if cause == 0 {
		return nil
	}
	if cause&virtio.InterruptConfigChange != 0 {
		t.generation.Add(1)
	}
	t.isr.Or(cause)
	t.stats.Interrupts.Add(1)
	if err := t.irq.Trigger(); err != nil {
		t.stats.InterruptErrors.Add(1)
		return fmt.Errorf("mmio: interrupt: %w", err)
	}
	return nil
}

// Fail implements virtio.Transport: it sets DEVICE_NEEDS_RESET and, if the
// driver is running, tells it with a configuration-change interrupt.
func (t *Transport) Fail(err error) {
	t.stats.DeviceFailures.Add(1)
	if t.needsReset.Swap(true) {
		return
	}
	t.lastErr.Store(&err)
	if t.status.Load()&virtio.StatusDriverOK != 0 {
		_ = t.Signal(virtio.InterruptConfigChange)
	}
}

// CmdlineArg returns the kernel command-line argument that declares a
// virtio-mmio device of size bytes at base on interrupt irq, e.g.
// "virtio_mmio.device=4K@0xd0000000:5".
func CmdlineArg(base, size uint64, irq uint32) string {
	var sz string
	switch {
	case size != 0 && size%(1<<20) == 0:
		sz = fmt.Sprintf("%dM", size>>20)
	case size != 0 && size%(1<<10) == 0:
		sz = fmt.Sprintf("%dK", size>>10)
	default:
		sz = fmt.Sprintf("%d", size)
	}
	return fmt.Sprintf("virtio_mmio.device=%s@%#x:%d", sz, base, irq)
}

func le32(data []byte) uint32 { return binary.LittleEndian.Uint32(data) }
