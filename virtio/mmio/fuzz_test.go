package mmio_test

import (
	"encoding/binary"
	"testing"

	"github.com/boxd-dev/boxd/virtio"
	"github.com/boxd-dev/boxd/virtio/mmio"
	"github.com/boxd-dev/boxd/virtio/virtiotest"
)

// Fuzz ops are 8 bytes: kind, offset (2 bytes), width, value (4 bytes).
const (
	opRead   = 0 // read width bytes at offset
	opWrite  = 1 // write width bytes at offset
	opNotify = 2 // ioeventfd path: Transport.Notify(value)
	opRing   = 3 // write a RAM address (memBase + value, aligned) to a queue address register
)

func op(kind byte, off uint16, v uint32) []byte {
	b := []byte{kind, byte(off), byte(off >> 8), 2, 0, 0, 0, 0}
	binary.LittleEndian.PutUint32(b[4:], v)
	return b
}

// linuxInit encodes the probe sequence for one queue of 8 entries with rings
// laid out inside fake RAM, then a kick.
func linuxInit() []byte {
	var p []byte
	for _, o := range [][]byte{
		op(opRead, mmio.RegMagic, 0),
		op(opWrite, mmio.RegStatus, 0),
		op(opWrite, mmio.RegStatus, 1),
		op(opWrite, mmio.RegStatus, 3),
		op(opWrite, mmio.RegDeviceFeaturesSel, 1),
		op(opRead, mmio.RegDeviceFeatures, 0),
		op(opWrite, mmio.RegDriverFeaturesSel, 1),
		op(opWrite, mmio.RegDriverFeatures, 1),
		op(opWrite, mmio.RegDriverFeaturesSel, 0),
		op(opWrite, mmio.RegDriverFeatures, uint32(virtio.FeatureEventIdx)),
		op(opWrite, mmio.RegStatus, 0xb),
		op(opWrite, mmio.RegQueueSel, 0),
		op(opWrite, mmio.RegQueueNum, 8),
		op(opRing, mmio.RegQueueDescLow, 0),
		op(opRing, mmio.RegQueueDriverLow, 0x80),
		op(opRing, mmio.RegQueueDeviceLow, 0x1000),
		op(opWrite, mmio.RegQueueReady, 1),
		op(opWrite, mmio.RegStatus, 0xf),
		op(opWrite, mmio.RegQueueNotify, 0),
		op(opNotify, 0, 0),
		op(opRead, mmio.RegInterruptStatus, 0),
		op(opWrite, mmio.RegInterruptACK, 1),
		op(opRead, mmio.ConfigOffset+4, 0),
		op(opWrite, mmio.RegStatus, 0),
	} {
		p = append(p, o...)
	}
	return p
}

// FuzzMMIORegisters drives a transport with arbitrary register accesses over
// memory whose contents the fuzzer also chooses. Nothing may panic, and the
// status register never shows DRIVER_OK without FEATURES_OK.
func FuzzMMIORegisters(f *testing.F) {
	f.Add(linuxInit(), []byte{})
	f.Add(linuxInit()[:18*8], []byte{0x00, 0x10, 0x10, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 1, 0})
	f.Add(op(opWrite, mmio.RegStatus, 0xff), []byte{})
	f.Fuzz(func(t *testing.T, ops, image []byte) {
		dev := newFake()
		mem := virtiotest.NewMemory(memBase, 0x4000)
		copy(mem.Bytes(), image)
		tr, err := mmio.New(dev, mem, virtiotest.NewInterrupt())
		if err != nil {
			t.Fatal(err)
		}
		widths := [4]int{1, 2, 4, 8}
		for len(ops) >= 8 {
			o := ops[:8]
			ops = ops[8:]
			off := uint64(binary.LittleEndian.Uint16(o[1:])) % (mmio.Size + 0x10)
			v := binary.LittleEndian.Uint32(o[4:])
			buf := make([]byte, widths[o[3]%4])
			copy(buf, o[4:])
			switch o[0] % 4 {
			case opRead:
				tr.Read(off, buf)
			case opWrite:
				tr.Write(off, buf)
			case opNotify:
				tr.Notify(int(int32(v)))
			case opRing:
				virtiotest.WriteReg(tr, off&^3, uint32(memBase+uint64(v)%0x4000)&^15)
			}
			s := virtiotest.ReadReg(tr, mmio.RegStatus)
			if s&virtio.StatusDriverOK != 0 && s&virtio.StatusFeaturesOK == 0 {
				t.Fatalf("status %#x: DRIVER_OK without FEATURES_OK", s)
			}
		}
		virtiotest.WriteReg(tr, mmio.RegStatus, 0)
		if s := virtiotest.ReadReg(tr, mmio.RegStatus); s != 0 {
			t.Fatalf("status after reset = %#x", s)
		}
	})
}
