package virtiotest

import (
	"encoding/binary"
	"fmt"

	"github.com/boxd-dev/boxd/virtio"
	"github.com/boxd-dev/boxd/virtio/mmio"
)

// Registers is a virtio-mmio register window (mmio.Transport, or anything
// that decodes guest MMIO accesses the same way).
type Registers interface {
	Read(offset uint64, data []byte)
	Write(offset uint64, data []byte)
}

// ReadReg reads a 32-bit register.
func ReadReg(r Registers, off uint64) uint32 {
	var b [4]byte
	r.Read(off, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

// WriteReg writes a 32-bit register.
func WriteReg(r Registers, off uint64, v uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	r.Write(off, b[:])
}

// ProbeOptions controls Probe.
type ProbeOptions struct {
	// Features the driver supports; it accepts offered&Features.
	// VIRTIO_F_VERSION_1 is always accepted.
	Features uint64
	// QueueSize caps each queue's size (0: use QueueNumMax).
	QueueSize uint16
	// Region is the start of fake memory given to the queues; each queue
	// gets RegionSize bytes for its rings and buffers.
	Region, RegionSize uint64
}

// Guest is a device probed through its registers: the negotiated features
// and one mock driver per queue, each kicking through QueueNotify.
type Guest struct {
	Regs     Registers
	Features uint64
	Queues   []*Driver
}

// Probe runs the initialization sequence of Linux's virtio_mmio and
// virtio_dev_probe: check magic, version and device ID, reset, ACKNOWLEDGE,
// DRIVER, read the device features (high word first), write the accepted
// ones, FEATURES_OK and read it back, set up every queue the device has
// (QueueSel, QueueReady must read 0, QueueNumMax, QueueNum, the three ring
// addresses, QueueReady=1), then DRIVER_OK.
func Probe(r Registers, mem *Memory, opt ProbeOptions) (*Guest, error) {
	if m := ReadReg(r, mmio.RegMagic); m != mmio.MagicValue {
		return nil, fmt.Errorf("magic %#x", m)
	}
	if v := ReadReg(r, mmio.RegVersion); v != mmio.Version {
		return nil, fmt.Errorf("version %d", v)
	}
	if id := ReadReg(r, mmio.RegDeviceID); id == 0 {
		return nil, fmt.Errorf("device ID 0 (placeholder)")
	}
	_ = ReadReg(r, mmio.RegVendorID)
	WriteReg(r, mmio.RegStatus, 0)
	status := virtio.StatusAcknowledge
	WriteReg(r, mmio.RegStatus, status)
	status |= virtio.StatusDriver
	WriteReg(r, mmio.RegStatus, status)

	WriteReg(r, mmio.RegDeviceFeaturesSel, 1)
	offered := uint64(ReadReg(r, mmio.RegDeviceFeatures)) << 32
	WriteReg(r, mmio.RegDeviceFeaturesSel, 0)
	offered |= uint64(ReadReg(r, mmio.RegDeviceFeatures))
	if offered&virtio.FeatureVersion1 == 0 {
		return nil, fmt.Errorf("device does not offer VIRTIO_F_VERSION_1")
	}
	accepted := offered & (opt.Features | virtio.FeatureVersion1)
	WriteReg(r, mmio.RegDriverFeaturesSel, 1)
	WriteReg(r, mmio.RegDriverFeatures, uint32(accepted>>32))
	WriteReg(r, mmio.RegDriverFeaturesSel, 0)
	WriteReg(r, mmio.RegDriverFeatures, uint32(accepted))
	status |= virtio.StatusFeaturesOK
	WriteReg(r, mmio.RegStatus, status)
	if ReadReg(r, mmio.RegStatus)&virtio.StatusFeaturesOK == 0 {
		WriteReg(r, mmio.RegStatus, status|virtio.StatusFailed)
		return nil, fmt.Errorf("device refused features %#x", accepted)
	}

	g := &Guest{Regs: r, Features: accepted}
	for i := uint32(0); ; i++ {
		WriteReg(r, mmio.RegQueueSel, i)
		if ReadReg(r, mmio.RegQueueReady) != 0 {
			return nil, fmt.Errorf("queue %d already ready", i)
		}
		max := ReadReg(r, mmio.RegQueueNumMax)
		if max == 0 {
			break
		}
		size := uint16(max)
		if opt.QueueSize != 0 && opt.QueueSize < size {
			size = opt.QueueSize
		}
		d := NewDriver(mem, size, opt.Region+uint64(i)*opt.RegionSize, opt.RegionSize)
		d.SetEventIdx(accepted&virtio.FeatureEventIdx != 0)
		WriteReg(r, mmio.RegQueueNum, uint32(size))
		for _, a := range []struct {
			lo, hi uint64
			addr   uint64
		}{
			{mmio.RegQueueDescLow, mmio.RegQueueDescHigh, d.DescAddr()},
			{mmio.RegQueueDriverLow, mmio.RegQueueDriverHigh, d.AvailAddr()},
			{mmio.RegQueueDeviceLow, mmio.RegQueueDeviceHigh, d.UsedAddr()},
		} {
			WriteReg(r, a.lo, uint32(a.addr))
			WriteReg(r, a.hi, uint32(a.addr>>32))
		}
		WriteReg(r, mmio.RegQueueReady, 1)
		if ReadReg(r, mmio.RegQueueReady) != 1 {
			return nil, fmt.Errorf("queue %d: device refused configuration", i)
		}
		idx := i
		d.Notify = func() { WriteReg(r, mmio.RegQueueNotify, idx) }
		g.Queues = append(g.Queues, d)
	}
	status |= virtio.StatusDriverOK
	WriteReg(r, mmio.RegStatus, status)
	if s := ReadReg(r, mmio.RegStatus); s&virtio.StatusDeviceNeedsReset != 0 || s&virtio.StatusDriverOK == 0 {
		return nil, fmt.Errorf("device not running after DRIVER_OK: status %#x", s)
	}
	return g, nil
}

// Ack reads InterruptStatus and acknowledges it, as the guest's interrupt
// handler does; it returns the causes.
func (g *Guest) Ack() uint32 {
	s := ReadReg(g.Regs, mmio.RegInterruptStatus)
	if s != 0 {
		WriteReg(g.Regs, mmio.RegInterruptACK, s)
	}
	return s
}

// ReadConfig reads n bytes of device configuration space at off.
func (g *Guest) ReadConfig(off uint64, n int) []byte {
	p := make([]byte, n)
	g.Regs.Read(mmio.ConfigOffset+off, p)
	return p
}
