package machine

import (
	"encoding/binary"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/boxd-dev/boxd/devices/power"
	"github.com/boxd-dev/boxd/internal/testguest"
	"github.com/boxd-dev/boxd/virtio"
	"github.com/boxd-dev/boxd/virtio/mmio"
	"github.com/boxd-dev/boxd/virtio/queue"
	"github.com/boxd-dev/boxd/vmm/boot"
	"github.com/boxd-dev/boxd/vmm/kvm"
	"github.com/boxd-dev/boxd/vmm/memory"
)

// fakeDev is a one-queue virtio device that reports notifications.
type fakeDev struct {
	notified chan int
	resets   int
}

func (d *fakeDev) Type() uint32               { return virtio.DeviceBlock }
func (d *fakeDev) Features() uint64           { return virtio.FeatureVersion1 }
func (d *fakeDev) QueueSizes() []uint16       { return []uint16{16} }
func (d *fakeDev) ReadConfig(uint64, []byte)  {}
func (d *fakeDev) WriteConfig(uint64, []byte) {}
func (d *fakeDev) Notify(q int)               { d.notified <- q }
func (d *fakeDev) Reset()                     { d.resets++ }
func (d *fakeDev) Activate(virtio.Memory, []*queue.Queue, uint64, virtio.Transport) error {
	return nil
}

// activate plays the guest driver's initialization over the MMIO bus, with the
// queue's rings in guest RAM at 1 MiB.
func activate(t *testing.T, m *Machine, base uint64) {
	t.Helper()
	w := func(off uint64, v uint32) {
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], v)
		if !m.MMIO.Write(base+off, b[:]) {
			t.Fatalf("no device at %#x", base+off)
		}
	}
	w(mmio.RegStatus, virtio.StatusAcknowledge|virtio.StatusDriver)
	w(mmio.RegDriverFeaturesSel, 1)
	w(mmio.RegDriverFeatures, 1) // VERSION_1 is bit 32
	w(mmio.RegStatus, virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusFeaturesOK)
	w(mmio.RegQueueSel, 0)
	w(mmio.RegQueueNum, 16)
	w(mmio.RegQueueDescLow, 0x100000)
	w(mmio.RegQueueDriverLow, 0x101000)
	w(mmio.RegQueueDeviceLow, 0x102000)
	w(mmio.RegQueueReady, 1)
	w(mmio.RegStatus, virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusFeaturesOK|virtio.StatusDriverOK)
}

// TestVirtioKickThroughIOEventFD: a guest store to QueueNotify reaches the
// device through the ioeventfd, and the device is declared on the command line.
func TestVirtioKickThroughIOEventFD(t *testing.T) {
	dev := &fakeDev{notified: make(chan int, 4)}
	code := append(testguest.Store(boot.VirtioMMIOBase+mmio.NotifyOffset, 0), testguest.Store(boot.PowerAddr, power.Poweroff)...)
	var cmdline string
	load := func(mem *memory.RAM, bsp *kvm.VCPU, extra string) error {
		cmdline = extra
		return programLoader(append(code, testguest.Spin...))(mem, bsp, extra)
	}
	m, err := New(Config{CPUs: 1, MemMiB: 32, Load: load, Virtio: []mmio.Device{dev}})
	if errors.Is(err, kvm.ErrNoKVM) {
		t.Skipf("tier 2 needs /dev/kvm: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if want := "virtio_mmio.device=4K@0xd0000000:5"; !strings.Contains(cmdline, want) {
		t.Errorf("cmdline %q lacks %q", cmdline, want)
	}
	activate(t, m, boot.VirtioMMIOBase)
	m.Start()
	if r := m.Wait(); r.Kind != Poweroff {
		t.Fatalf("result = %+v", r)
	}
	if q := <-dev.notified; q != 0 {
		t.Errorf("notified queue %d, want 0", q)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if dev.resets == 0 {
		t.Error("device not reset on close")
	}
}

// vring is a minimal guest driver for one split queue of vringSize entries
// in guest RAM, played by the test: descriptors at desc, the available ring
// at avail, the used ring at used.
type vring struct {
	ram               *memory.RAM
	desc, avail, used uint64
	nextDesc, idx     uint16
}

const vringSize = 16

// vbuf is one buffer of a chain.
type vbuf struct {
	addr  uint64
	len   uint32
	write bool
}

// add makes a chain of bufs available (no notification).
func (r *vring) add(t *testing.T, bufs ...vbuf) {
	t.Helper()
	head := r.nextDesc
	for i, b := range bufs {
		var d [16]byte
		binary.LittleEndian.PutUint64(d[0:], b.addr)
		binary.LittleEndian.PutUint32(d[8:], b.len)
		var flags uint16
		if b.write {
			flags |= 2
		}
		if i < len(bufs)-1 {
			flags |= 1
			binary.LittleEndian.PutUint16(d[14:], (r.nextDesc+1)%vringSize)
		}
		binary.LittleEndian.PutUint16(d[12:], flags)
		if _, err := r.ram.WriteAt(d[:], int64(r.desc+16*uint64(r.nextDesc))); err != nil {
			t.Fatal(err)
		}
		r.nextDesc = (r.nextDesc + 1) % vringSize
	}
	var e [2]byte
	binary.LittleEndian.PutUint16(e[:], head)
	if _, err := r.ram.WriteAt(e[:], int64(r.avail+4+2*uint64(r.idx%vringSize))); err != nil {
		t.Fatal(err)
	}
	r.idx++
	if err := queue.StoreIndex(r.ram, r.avail+2, r.idx); err != nil {
		t.Fatal(err)
	}
}

// usedIdx is the device's used index.
func (r *vring) usedIdx(t *testing.T) uint16 {
	t.Helper()
	v, err := queue.LoadIndex(r.ram, r.used+2)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// waitUsed polls the used index until it reaches n: the device runs on its
// own goroutine and the guest's interrupt goes to KVM, not to the test. The
// deadline only guards against a hang.
func (r *vring) waitUsed(t *testing.T, what string, n uint16) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for r.usedIdx(t) != n {
		if time.Now().After(deadline) {
			t.Fatalf("%s: used index %d, want %d", what, r.usedIdx(t), n)
		}
		runtime.Gosched()
	}
}

// on returns the same ring seen through another machine's RAM.
func (r *vring) on(ram *memory.RAM) *vring { c := *r; c.ram = ram; return &c }

// probeVirtio plays the guest driver's initialization of the virtio-mmio
// device at base over the MMIO bus, accepting only VIRTIO_F_VERSION_1, with
// nq queues of vringSize entries laid out from region on.
func probeVirtio(t *testing.T, m *Machine, base uint64, nq int, region uint64) []*vring {
	t.Helper()
	w := func(off uint64, v uint32) {
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], v)
		if !m.MMIO.Write(base+off, b[:]) {
			t.Fatalf("no device at %#x", base+off)
		}
	}
	status := virtio.StatusAcknowledge | virtio.StatusDriver
	w(mmio.RegStatus, virtio.StatusAcknowledge)
	w(mmio.RegStatus, status)
	w(mmio.RegDriverFeaturesSel, 1)
	w(mmio.RegDriverFeatures, 1) // VERSION_1 is bit 32
	w(mmio.RegDriverFeaturesSel, 0)
	w(mmio.RegDriverFeatures, 0)
	status |= virtio.StatusFeaturesOK
	w(mmio.RegStatus, status)
	var rings []*vring
	for q := range nq {
		r := &vring{ram: m.RAM(), desc: region + uint64(q)*0x3000}
		r.avail, r.used = r.desc+0x100, r.desc+0x1000
		zero := make([]byte, 0x2000)
		if _, err := m.RAM().WriteAt(zero, int64(r.desc)); err != nil {
			t.Fatal(err)
		}
		w(mmio.RegQueueSel, uint32(q))
		w(mmio.RegQueueNum, vringSize)
		w(mmio.RegQueueDescLow, uint32(r.desc))
		w(mmio.RegQueueDriverLow, uint32(r.avail))
		w(mmio.RegQueueDeviceLow, uint32(r.used))
		w(mmio.RegQueueReady, 1)
		rings = append(rings, r)
	}
	w(mmio.RegStatus, status|virtio.StatusDriverOK)
	var b [4]byte
	m.MMIO.Read(base+mmio.RegStatus, b[:])
	if s := binary.LittleEndian.Uint32(b[:]); s&virtio.StatusDriverOK == 0 || s&virtio.StatusDeviceNeedsReset != 0 {
		t.Fatalf("device at %#x not running: status %#x", base, s)
	}
	return rings
}

// kick writes QueueNotify for queue q through the bus, as a guest store
// that missed the ioeventfd would.
func kick(m *Machine, base uint64, q uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], q)
	m.MMIO.Write(base+mmio.NotifyOffset, b[:])
}

// A machine stopped while paused, with running virtio devices, stops and
// closes without hanging, and every goroutine it started ends.
func TestStopWhilePaused(t *testing.T) {
	base := runtime.NumGoroutine()
	dir := t.TempDir()
	m, err := New(Config{CPUs: 2, MemMiB: 32, Load: programLoader(testguest.Spin), Virtio: deviceRig(t, dir, "v")})
	if errors.Is(err, kvm.ErrNoKVM) {
		t.Skipf("tier 2 needs /dev/kvm: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	bq := probeVirtio(t, m, boot.VirtioMMIOBase, 1, blkRings)[0]
	probeVirtio(t, m, boot.VirtioMMIOBase+boot.VirtioMMIOStride, 3, vsockRings)
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	if err := m.Pause(); err != nil {
		t.Fatal(err)
	}
	getID(t, bq, bufs)
	kick(m, boot.VirtioMMIOBase, 0)
	m.Stop()
	if r := m.Wait(); r.Kind != HostStop {
		t.Errorf("result %+v, want host-stop", r)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines after close, %d before the machine", runtime.NumGoroutine(), base)
		}
		runtime.Gosched()
	}
}
