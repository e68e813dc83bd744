package mmio_test

import (
	"errors"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/boxd-dev/boxd/virtio"
	"github.com/boxd-dev/boxd/virtio/mmio"
	"github.com/boxd-dev/boxd/virtio/queue"
	"github.com/boxd-dev/boxd/virtio/virtiotest"
)

const (
	memBase    = 0x100000
	memSize    = 0x100000
	regionSize = 0x20000
)

// fakeDevice records what the transport does to it. On Notify it completes
// every available chain synchronously (writing nothing) so tests and the
// fuzzer exercise the queues the transport built.
type fakeDevice struct {
	features    uint64
	sizes       []uint16
	config      []byte
	activateErr error

	mu        sync.Mutex
	mem       virtio.Memory
	queues    []*queue.Queue
	negotiate uint64
	t         virtio.Transport
	notifies  []int
	resets    int
	activates int
}

var _ mmio.Device = (*fakeDevice)(nil)

func newFake() *fakeDevice {
	return &fakeDevice{
		features: virtio.FeatureVersion1 | queue.Features | 1<<5,
		sizes:    []uint16{16, 8},
		config:   []byte{1, 2, 3, 4, 5, 6, 7, 8},
	}
}

func (f *fakeDevice) Type() uint32         { return virtio.DeviceBlock }
func (f *fakeDevice) Features() uint64     { return f.features }
func (f *fakeDevice) QueueSizes() []uint16 { return f.sizes }

func (f *fakeDevice) ReadConfig(off uint64, data []byte) {
	if off < uint64(len(f.config)) {
		copy(data, f.config[off:])
	}
}

func (f *fakeDevice) WriteConfig(off uint64, data []byte) {
	if off < uint64(len(f.config)) {
		copy(f.config[off:], data)
	}
}

func (f *fakeDevice) Activate(mem virtio.Memory, qs []*queue.Queue, features uint64, t virtio.Transport) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.activates++
	if f.activateErr != nil {
		return f.activateErr
	}
	f.mem, f.queues, f.negotiate, f.t = mem, qs, features, t
	return nil
}

func (f *fakeDevice) Notify(q int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.notifies = append(f.notifies, q)
	if f.queues == nil || !f.queues[q].Ready() {
		return
	}
	qq := f.queues[q]
	for range 64 {
		c, err := qq.Pop(f.mem)
		var ce *queue.ChainError
		switch {
		case errors.As(err, &ce):
			_ = qq.Push(f.mem, ce.Head, 0)
			continue
		case errors.Is(err, queue.ErrInvalidChain):
			continue
		case err != nil:
			f.t.Fail(err)
			return
		case c == nil:
			return
		}
		if err := qq.Push(f.mem, c.Head, 0); err != nil {
			f.t.Fail(err)
			return
		}
		if qq.NeedsInterrupt(f.mem) {
			_ = f.t.Signal(virtio.InterruptUsedBuffer)
		}
	}
}

func (f *fakeDevice) Reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resets++
	f.mem, f.queues, f.t = nil, nil, nil
}

func newTransport(t testing.TB, dev *fakeDevice) (*mmio.Transport, *virtiotest.Memory, *virtiotest.Interrupt) {
	t.Helper()
	mem := virtiotest.NewMemory(memBase, memSize)
	irq := virtiotest.NewInterrupt()
	tr, err := mmio.New(dev, mem, irq)
	if err != nil {
		t.Fatalf("mmio.New: %v", err)
	}
	return tr, mem, irq
}

func probe(t *testing.T, tr *mmio.Transport, mem *virtiotest.Memory, features uint64) *virtiotest.Guest {
	t.Helper()
	g, err := virtiotest.Probe(tr, mem, virtiotest.ProbeOptions{
		Features: features, Region: memBase, RegionSize: regionSize,
	})
	if err != nil {
		t.Fatalf("Probe: %v", err)
	}
	return g
}

func read(tr *mmio.Transport, off uint64) uint32     { return virtiotest.ReadReg(tr, off) }
func write(tr *mmio.Transport, off uint64, v uint32) { virtiotest.WriteReg(tr, off, v) }

func TestIdentity(t *testing.T) {
	tr, _, _ := newTransport(t, newFake())
	for _, tt := range []struct {
		name string
		off  uint64
		want uint32
	}{
		{"magic", mmio.RegMagic, 0x74726976},
		{"version", mmio.RegVersion, 2},
		{"device ID", mmio.RegDeviceID, virtio.DeviceBlock},
		{"vendor ID", mmio.RegVendorID, mmio.VendorID},
		{"status", mmio.RegStatus, 0},
		{"queue num max (queue 0)", mmio.RegQueueNumMax, 16},
		{"shm length", mmio.RegSHMLenLow, 0xffffffff},
	} {
		if got := read(tr, tt.off); got != tt.want {
			t.Errorf("%s = %#x, want %#x", tt.name, got, tt.want)
		}
	}
}

func TestProbe(t *testing.T) {
	dev := newFake()
	tr, mem, irq := newTransport(t, dev)
	g := probe(t, tr, mem, virtio.FeatureEventIdx|1<<5)
	want := virtio.FeatureVersion1 | virtio.FeatureEventIdx | 1<<5
	if g.Features != want || dev.negotiate != want {
		t.Errorf("negotiated %#x (device saw %#x), want %#x", g.Features, dev.negotiate, want)
	}
	if dev.activates != 1 || len(dev.queues) != 2 {
		t.Fatalf("activates = %d, queues = %d", dev.activates, len(dev.queues))
	}
	for i, q := range dev.queues {
		want := g.Queues[i].State()
		want.MaxSize = dev.sizes[i]
		want.EventIdx = true
		if diff := cmp.Diff(want, q.State()); diff != "" {
			t.Errorf("queue %d state (-want +got):\n%s", i, diff)
		}
	}
	if got := read(tr, mmio.RegStatus); got != 0xf {
		t.Errorf("status = %#x, want 0xf", got)
	}

	// A kick through QueueNotify reaches the device, which completes the
	// chain and interrupts.
	d := g.Queues[1]
	if _, err := d.Add([]queue.Buffer{d.Buf(8, nil)}, nil); err != nil {
		t.Fatal(err)
	}
	if !d.Kick() {
		t.Fatal("driver did not kick")
	}
	if diff := cmp.Diff([]int{1}, dev.notifies); diff != "" {
		t.Errorf("notifies (-want +got):\n%s", diff)
	}
	if irq.Count() != 1 || g.Ack() != virtio.InterruptUsedBuffer {
		t.Errorf("interrupts = %d", irq.Count())
	}
	if got := read(tr, mmio.RegInterruptStatus); got != 0 {
		t.Errorf("InterruptStatus after ACK = %#x", got)
	}
	if used, err := d.Reap(); err != nil || len(used) != 1 {
		t.Errorf("Reap = %v, %v", used, err)
	}
}

func TestConfigSpace(t *testing.T) {
	dev := newFake()
	tr, _, _ := newTransport(t, dev)
	b := make([]byte, 2)
	tr.Read(mmio.ConfigOffset+2, b)
	if diff := cmp.Diff([]byte{3, 4}, b); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
	tr.Write(mmio.ConfigOffset+7, []byte{0x99})
	if dev.config[7] != 0x99 {
		t.Errorf("config write not forwarded")
	}
	gen := read(tr, mmio.RegConfigGeneration)
	b = make([]byte, 8)
	tr.Read(mmio.Size-4, b) // crosses the end of the window
	if diff := cmp.Diff(make([]byte, 8), b); diff != "" {
		t.Errorf("read past window (-want +got):\n%s", diff)
	}
	if read(tr, mmio.RegConfigGeneration) != gen {
		t.Error("generation moved without a config change")
	}
}

func TestFail(t *testing.T) {
	dev := newFake()
	tr, mem, irq := newTransport(t, dev)
	probe(t, tr, mem, 0)
	tr.Fail(errors.New("avail idx corrupt"))
	tr.Fail(errors.New("again"))
	if got := read(tr, mmio.RegStatus); got != 0x4f {
		t.Errorf("status = %#x, want 0x4f", got)
	}
	if irq.Count() != 1 {
		t.Errorf("interrupts = %d, want one config change", irq.Count())
	}
	gen := read(tr, mmio.RegConfigGeneration)
	if gen == 0 {
		t.Error("config generation did not move")
	}
	tr.Notify(0)
	if len(dev.notifies) != 0 {
		t.Error("notify reached a failed device")
	}
}

func TestNotifyPaths(t *testing.T) {
	dev := newFake()
	tr, mem, _ := newTransport(t, dev)
	tr.Notify(0) // before activation
	probe(t, tr, mem, 0)
	tr.Notify(1)
	tr.Notify(2)  // no such queue
	tr.Notify(-1) // no such queue
	write(tr, mmio.NotifyOffset, 0)
	write(tr, mmio.NotifyOffset, 9)
	if diff := cmp.Diff([]int{1, 0}, dev.notifies); diff != "" {
		t.Errorf("notifies (-want +got):\n%s", diff)
	}
}

func TestBadAccessWidths(t *testing.T) {
	tr, _, _ := newTransport(t, newFake())
	b := []byte{0xff, 0xff}
	tr.Read(mmio.RegMagic, b)
	if b[0] != 0 || b[1] != 0 {
		t.Errorf("2-byte register read = % x, want zeros", b)
	}
	b = []byte{0xff, 0xff, 0xff, 0xff}
	tr.Read(mmio.RegMagic+2, b)
	if b[0] != 0 {
		t.Errorf("misaligned register read = % x, want zeros", b)
	}
	tr.Write(mmio.RegStatus, []byte{1})
	tr.Write(mmio.RegStatus, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	if read(tr, mmio.RegStatus) != 0 {
		t.Error("odd-width status write applied")
	}
	read(tr, mmio.RegQueueNum) // write-only
	write(tr, mmio.RegMagic, 1)
	if got := tr.Stats().InvalidAccesses.Load(); got != 6 {
		t.Errorf("invalid accesses = %d, want 6", got)
	}
}

func TestInterruptStatus(t *testing.T) {
	tr, _, irq := newTransport(t, newFake())
	gen := read(tr, mmio.RegConfigGeneration)
	if err := tr.Signal(virtio.InterruptUsedBuffer); err != nil {
		t.Fatal(err)
	}
	if err := tr.Signal(virtio.InterruptConfigChange); err != nil {
		t.Fatal(err)
	}
	if got := read(tr, mmio.RegInterruptStatus); got != 3 {
		t.Errorf("InterruptStatus = %#x, want 3", got)
	}
	if read(tr, mmio.RegConfigGeneration) == gen {
		t.Error("config change did not move the generation")
	}
	write(tr, mmio.RegInterruptACK, 1)
	if got := read(tr, mmio.RegInterruptStatus); got != 2 {
		t.Errorf("InterruptStatus after ACK 1 = %#x, want 2", got)
	}
	irq.FailWith(errors.New("irqfd closed"))
	if err := tr.Signal(virtio.InterruptUsedBuffer); err == nil {
		t.Error("Signal hid the interrupt error")
	}
	if tr.Stats().InterruptErrors.Load() != 1 || irq.Count() != 2 {
		t.Errorf("interrupt errors = %d, count = %d", tr.Stats().InterruptErrors.Load(), irq.Count())
	}
}

// Register accesses from vCPU goroutines race with the device worker's
// Signal/Fail and the ioeventfd path; run them together under -race.
func TestConcurrentAccess(t *testing.T) {
	dev := newFake()
	tr, mem, _ := newTransport(t, dev)
	probe(t, tr, mem, 0)
	var wg sync.WaitGroup
	const n = 2000
	wg.Add(3)
	go func() {
		defer wg.Done()
		for range n {
			_ = tr.Signal(virtio.InterruptUsedBuffer)
		}
	}()
	go func() {
		defer wg.Done()
		for range n {
			s := read(tr, mmio.RegInterruptStatus)
			write(tr, mmio.RegInterruptACK, s)
			read(tr, mmio.RegStatus)
		}
	}()
	go func() {
		defer wg.Done()
		for range n {
			tr.Notify(0)
		}
	}()
	wg.Wait()
	write(tr, mmio.RegStatus, 0)
	if got := tr.Stats().Interrupts.Load(); got != n {
		t.Errorf("interrupts = %d, want %d", got, n)
	}
}

func TestCmdlineArg(t *testing.T) {
	for _, tt := range []struct {
		base, size uint64
		irq        uint32
		want       string
	}{
		{0xd0000000, 0x1000, 5, "virtio_mmio.device=4K@0xd0000000:5"},
		{0xd0001000, 0x200, 6, "virtio_mmio.device=512@0xd0001000:6"},
		{0x100000000, 1 << 20, 20, "virtio_mmio.device=1M@0x100000000:20"},
	} {
		if got := mmio.CmdlineArg(tt.base, tt.size, tt.irq); got != tt.want {
			t.Errorf("CmdlineArg(%#x, %#x, %d) = %q, want %q", tt.base, tt.size, tt.irq, got, tt.want)
		}
	}
}

func TestNewRejectsBadDevice(t *testing.T) {
	mem := virtiotest.NewMemory(0, 0x1000)
	for _, f := range []func(*fakeDevice){
		func(d *fakeDevice) { d.sizes = []uint16{12} },
		func(d *fakeDevice) { d.sizes = []uint16{0} },
		func(d *fakeDevice) { d.features = 0 },
	} {
		dev := newFake()
		f(dev)
		if _, err := mmio.New(dev, mem, virtiotest.NewInterrupt()); err == nil {
			t.Errorf("New accepted %+v", dev)
		}
	}
}
