package blk

import (
	"encoding/binary"
	"errors"

	"github.com/boxd-dev/boxd/virtio/queue"
)

// zeros is the source for backends that can neither punch holes nor zero
// ranges: the only case where the device writes zeros.
var zeros = make([]byte, 64<<10)

type segment struct {
	sector, sectors uint64
	unmap           bool
}

// discardOrZero runs VIRTIO_BLK_T_DISCARD or VIRTIO_BLK_T_WRITE_ZEROES: every
// segment is validated before any is applied.
func (w *worker) discardOrZero(c *queue.Chain, typ uint32) (byte, uint64) {
	feature := FeatureDiscard
	if typ == TypeWriteZeroes {
		feature = FeatureWriteZeroes
	}
	if w.features&feature == 0 || w.d.cfg.ReadOnly {
		return StatusUnsupp, 0
	}
	n := c.Readable.Len() - headerLen
	if n == 0 || n%segmentLen != 0 || n/segmentLen > MaxDiscardSeg {
		return w.invalid()
	}
	raw := make([]byte, n)
	if _, err := c.Readable.ReadAt(w.mem, raw, headerLen); err != nil {
		return w.invalid()
	}
	segs := make([]segment, 0, n/segmentLen)
	for b := raw; len(b) > 0; b = b[segmentLen:] {
		s := segment{
			sector:  binary.LittleEndian.Uint64(b[0:]),
			sectors: uint64(binary.LittleEndian.Uint32(b[8:])),
		}
		flags := binary.LittleEndian.Uint32(b[12:])
		s.unmap = flags&unmapFlag != 0
		// §5.2.6.2: unknown flags, or unmap on a discard, are UNSUPP.
		if flags&^unmapFlag != 0 || typ == TypeDiscard && s.unmap {
			return StatusUnsupp, 0
		}
		if s.sectors > MaxDiscardSectors || s.sector > w.d.capacity || s.sectors > w.d.capacity-s.sector {
			return w.invalid()
		}
		segs = append(segs, s)
	}
	for _, s := range segs {
		off, length := int64(s.sector*SectorSize), int64(s.sectors*SectorSize)
		if length == 0 {
			continue
		}
		var err error
		if typ == TypeDiscard {
			err = w.discard(off, length)
			w.d.stats.Discards.Add(1)
		} else {
			err = w.zero(off, length)
			w.d.stats.WriteZeroes.Add(1)
		}
		if err != nil {
			return w.ioErr()
		}
	}
	return StatusOK, 0
}

// discard deallocates a range if the backend can; discard is only a hint, so
// a backend that cannot has still succeeded.
func (w *worker) discard(off, n int64) error {
	d, ok := w.d.backend.(Discarder)
	if !ok {
		return nil
	}
	if err := d.PunchHole(off, n); err != nil && !errors.Is(err, errors.ErrUnsupported) {
		return err
	}
	return nil
}

// zero makes a range read as zeros, cheapest first: punch a hole, else zero
// the range in place, and only as a last resort write zeros.
//
// The hole is punched even when the driver did not set unmap (Linux's
// REQ_NOUNMAP, e.g. BLKZEROOUT during mkfs): reads return zeros either way,
// which is all §5.2.6.2 requires, and on thin-provisioned disks host space is
// the scarce resource; honouring NOUNMAP would let a guest reserve its whole
// 100 GB with one request.
func (w *worker) zero(off, n int64) error {
	if d, ok := w.d.backend.(Discarder); ok {
		err := d.PunchHole(off, n)
		if !errors.Is(err, errors.ErrUnsupported) {
			return err
		}
	}
	if z, ok := w.d.backend.(Zeroer); ok {
		err := z.ZeroRange(off, n)
		if !errors.Is(err, errors.ErrUnsupported) {
			return err
		}
	}
	for n > 0 {
		chunk := min(n, int64(len(zeros)))
		if _, err := w.d.backend.WriteAt(zeros[:chunk], off); err != nil {
			return err
		}
		off += chunk
		n -= chunk
	}
	return nil
}
