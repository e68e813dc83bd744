package machine

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"

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
