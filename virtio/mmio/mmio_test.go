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

func TestFeatureNegotiation(t *testing.T) {
	tests := []struct {
		name     string
		lo, hi   uint32
		wantOK   bool
		moreSets func(tr *mmio.Transport)
	}{
		{"version 1 only", 0, 1, true, nil},
		{"offered device bit", 1 << 5, 1, true, nil},
		{"not offered bit", 1 << 6, 1, false, nil},
		{"no version 1", 1 << 5, 0, false, nil},
		{"select 2 ignored", 0, 1, true, func(tr *mmio.Transport) {
			write(tr, mmio.RegDriverFeaturesSel, 2)
			write(tr, mmio.RegDriverFeatures, 0xffffffff)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, _, _ := newTransport(t, newFake())
			write(tr, mmio.RegStatus, 1)
			write(tr, mmio.RegStatus, 3)
			write(tr, mmio.RegDriverFeaturesSel, 0)
			write(tr, mmio.RegDriverFeatures, tt.lo)
			write(tr, mmio.RegDriverFeaturesSel, 1)
			write(tr, mmio.RegDriverFeatures, tt.hi)
			if tt.moreSets != nil {
				tt.moreSets(tr)
			}
			write(tr, mmio.RegStatus, 0xb)
			got := read(tr, mmio.RegStatus)&virtio.StatusFeaturesOK != 0
			if got != tt.wantOK {
				t.Errorf("FEATURES_OK accepted = %v, want %v (err %v)", got, tt.wantOK, tr.Err())
			}
		})
	}
}

func TestFeaturesFrozenAfterFeaturesOK(t *testing.T) {
	dev := newFake()
	tr, mem, _ := newTransport(t, dev)
	probe(t, tr, mem, 0)
	write(tr, mmio.RegDriverFeaturesSel, 0)
	before := tr.Stats().InvalidAccesses.Load()
	write(tr, mmio.RegDriverFeatures, 1<<5)
	if got := tr.Stats().InvalidAccesses.Load(); got != before+1 {
		t.Errorf("late feature write not refused: invalid accesses %d -> %d", before, got)
	}
	if dev.negotiate != virtio.FeatureVersion1 {
		t.Errorf("negotiated = %#x", dev.negotiate)
	}
}

func TestStatusStateMachine(t *testing.T) {
	tests := []struct {
		name      string
		writes    []uint32
		want      uint32
		activates int
	}{
		{"in order", []uint32{1, 3, 0xb, 0xf}, 0xf, 1},
		{"driver before acknowledge", []uint32{2}, 0, 0},
		{"features ok before driver", []uint32{1, 9}, 1, 0},
		{"driver ok before features ok", []uint32{1, 3, 7}, 3, 0},
		{"clearing a bit", []uint32{1, 3, 1}, 3, 0},
		{"all at once, no features written", []uint32{0xf}, 0x3, 0},
		{"failed", []uint32{1, 3, 0x83}, 0x83, 0},
		{"driver after failed", []uint32{1, 0x81, 0x83}, 0x81, 0},
		{"needs-reset bit from driver ignored", []uint32{0x41}, 1, 0},
		{"unknown bit", []uint32{0x11}, 0, 0},
		{"rewrite same", []uint32{1, 3, 0xb, 0xf, 0xf}, 0xf, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dev := newFake()
			tr, _, _ := newTransport(t, dev)
			write(tr, mmio.RegDriverFeaturesSel, 1)
			for _, w := range tt.writes {
				if w&virtio.StatusDriver != 0 {
					write(tr, mmio.RegDriverFeatures, 1) // VERSION_1 while allowed
				}
				write(tr, mmio.RegStatus, w)
			}
			if got := read(tr, mmio.RegStatus); got != tt.want {
				t.Errorf("status = %#x, want %#x", got, tt.want)
			}
			if dev.activates != tt.activates {
				t.Errorf("activates = %d, want %d", dev.activates, tt.activates)
			}
		})
	}
}

func TestQueueConfigRules(t *testing.T) {
	tr, _, _ := newTransport(t, newFake())
	write(tr, mmio.RegQueueSel, 0)
	write(tr, mmio.RegQueueNum, 8) // before FEATURES_OK: ignored
	write(tr, mmio.RegQueueReady, 1)
	if read(tr, mmio.RegQueueReady) != 0 {
		t.Error("queue enabled before FEATURES_OK")
	}
	write(tr, mmio.RegStatus, 1)
	write(tr, mmio.RegStatus, 3)
	write(tr, mmio.RegDriverFeaturesSel, 1)
	write(tr, mmio.RegDriverFeatures, 1)
	write(tr, mmio.RegStatus, 0xb)
	write(tr, mmio.RegQueueReady, 1) // no size yet
	if read(tr, mmio.RegQueueReady) != 0 {
		t.Error("queue enabled without a size")
	}
	for _, bad := range []uint32{0, 12, 32} {
		write(tr, mmio.RegQueueNum, bad)
	}
	write(tr, mmio.RegQueueSel, 7)
	if read(tr, mmio.RegQueueNumMax) != 0 {
		t.Error("QueueNumMax of a missing queue is not 0")
	}
	write(tr, mmio.RegQueueNum, 8) // missing queue: ignored
	if got := tr.Stats().InvalidAccesses.Load(); got != 7 {
		t.Errorf("invalid accesses = %d, want 7", got)
	}
}

// Queue addresses are only checked against guest RAM at DRIVER_OK; bad ones
// make the device need a reset instead of activating it.
func TestActivateWithBadRings(t *testing.T) {
	dev := newFake()
	tr, _, irq := newTransport(t, dev)
	write(tr, mmio.RegStatus, 1)
	write(tr, mmio.RegStatus, 3)
	write(tr, mmio.RegDriverFeaturesSel, 1)
	write(tr, mmio.RegDriverFeatures, 1)
	write(tr, mmio.RegStatus, 0xb)
	write(tr, mmio.RegQueueSel, 0)
	write(tr, mmio.RegQueueNum, 16)
	write(tr, mmio.RegQueueDescLow, 0x1000) // below RAM
	write(tr, mmio.RegQueueReady, 1)
	write(tr, mmio.RegStatus, 0xf)
	if got := read(tr, mmio.RegStatus); got != 0x4f {
		t.Errorf("status = %#x, want DEVICE_NEEDS_RESET|0xf", got)
	}
	if dev.activates != 0 || tr.Err() == nil {
		t.Errorf("activates = %d, err = %v", dev.activates, tr.Err())
	}
	if irq.Count() != 1 || read(tr, mmio.RegInterruptStatus) != virtio.InterruptConfigChange {
		t.Error("no config-change interrupt for DEVICE_NEEDS_RESET")
	}
	write(tr, mmio.RegQueueNotify, 0)
	if len(dev.notifies) != 0 {
		t.Error("notify forwarded to a device that was not activated")
	}
}

func TestActivateError(t *testing.T) {
	dev := newFake()
	dev.activateErr = errors.New("boom")
	tr, mem, _ := newTransport(t, dev)
	if _, err := virtiotest.Probe(tr, mem, virtiotest.ProbeOptions{Region: memBase, RegionSize: regionSize}); err == nil {
		t.Fatal("Probe succeeded with a failing device")
	}
	if read(tr, mmio.RegStatus)&virtio.StatusDeviceNeedsReset == 0 {
		t.Error("DEVICE_NEEDS_RESET not set")
	}
	if !errors.Is(tr.Err(), dev.activateErr) {
		t.Errorf("Err = %v", tr.Err())
	}
}

func TestReset(t *testing.T) {
	dev := newFake()
	tr, mem, _ := newTransport(t, dev)
	probe(t, tr, mem, virtio.FeatureEventIdx)
	if err := tr.Signal(virtio.InterruptUsedBuffer); err != nil {
		t.Fatal(err)
	}
	tr.Fail(errors.New("ring corrupt"))
	write(tr, mmio.RegStatus, 0)
	if dev.resets != 1 {
		t.Errorf("device resets = %d", dev.resets)
	}
	for _, r := range []struct {
		name string
		off  uint64
	}{{"status", mmio.RegStatus}, {"interrupt status", mmio.RegInterruptStatus}, {"queue ready", mmio.RegQueueReady}} {
		if got := read(tr, r.off); got != 0 {
			t.Errorf("%s after reset = %#x", r.name, got)
		}
	}
	// Linux's del_vqs writes QueueReady=0 after resetting: accepted quietly.
	before := tr.Stats().InvalidAccesses.Load()
	write(tr, mmio.RegQueueReady, 0)
	if tr.Stats().InvalidAccesses.Load() != before {
		t.Error("QueueReady=0 after reset counted as invalid")
	}
	write(tr, mmio.RegQueueNotify, 0)
	if len(dev.notifies) != 0 {
		t.Error("notify reached a reset device")
	}
	// The device comes back with a second probe, as after a driver reload.
	g := probe(t, tr, mem, 0)
	if dev.activates != 2 || g.Features != virtio.FeatureVersion1 {
		t.Errorf("activates = %d, features = %#x", dev.activates, g.Features)
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
