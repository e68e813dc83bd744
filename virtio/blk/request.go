package blk

import (
	"encoding/binary"
	"errors"
	"io"

	"github.com/boxd-dev/boxd/virtio/queue"
)

// handle executes one request chain and writes its status byte. It returns
// the number of bytes written into the chain's writable buffers (data plus
// the status byte), or 0 if there was no room for a status.
func (w *worker) handle(c *queue.Chain) uint32 {
	wlen := c.Writable.Len()
	if wlen == 0 {
		// No status byte to answer in: hand the chain back untouched.
		w.d.stats.InvalidRequests.Add(1)
		return 0
	}
	status, n := w.execute(c, wlen-1)
	switch status {
	case StatusIOErr:
		// Counted where the cause is known (invalid vs backend error).
	case StatusUnsupp:
		w.d.stats.Unsupported.Add(1)
	}
	w.status[0] = status
	if _, err := c.Writable.WriteAt(w.mem, w.status[:], wlen-1); err != nil {
		// Pop checked the buffer was RAM; only a memory change can fail.
		w.d.stats.InvalidRequests.Add(1)
		return 0
	}
	return uint32(n) + 1
}

// execute runs the request whose writable data area is the first dataOut
// bytes of the writable buffers. It returns the status and how many data
// bytes it wrote into guest memory.
func (w *worker) execute(c *queue.Chain, dataOut uint64) (status byte, written uint64) {
	hdr := w.hdr[:]
	if c.Readable.Len() < headerLen {
		return w.invalid()
	}
	if _, err := c.Readable.ReadAt(w.mem, hdr, 0); err != nil {
		return w.invalid()
	}
	typ := binary.LittleEndian.Uint32(hdr[0:])
	sector := binary.LittleEndian.Uint64(hdr[8:])
	dataIn := c.Readable.Len() - headerLen

	switch typ {
	case TypeIn:
		data, err := c.Writable.AppendRange(w.bufs[:0], 0, dataOut)
		w.bufs = data
		if err != nil || !w.rangeOK(sector, dataOut) {
			return w.invalid()
		}
		if err := w.read(data, sector); err != nil {
			return w.ioErr()
		}
		w.d.stats.ReadBytes.Add(dataOut)
		return StatusOK, dataOut
	case TypeOut:
		if w.d.cfg.ReadOnly {
			// §5.2.6.2: IOERR and no data written.
			return StatusIOErr, 0
		}
		data, err := c.Readable.AppendRange(w.bufs[:0], headerLen, dataIn)
		w.bufs = data
		if err != nil || !w.rangeOK(sector, dataIn) {
			return w.invalid()
		}
		if err := w.write(data, sector); err != nil {
			return w.ioErr()
		}
		w.d.stats.WriteBytes.Add(dataIn)
		return StatusOK, 0
	case TypeFlush:
		w.d.stats.Flushes.Add(1)
		if w.d.cfg.ReadOnly {
			return StatusOK, 0
		}
		if err := w.d.backend.Sync(); err != nil {
			return w.ioErr()
		}
		return StatusOK, 0
	case TypeGetID:
		n := min(dataOut, IDLen)
		if _, err := c.Writable.WriteAt(w.mem, w.d.id[:n], 0); err != nil {
			return w.invalid()
		}
		return StatusOK, n
	case TypeDiscard, TypeWriteZeroes:
		return w.discardOrZero(c, typ)
	default:
		return StatusUnsupp, 0
	}
}

func (w *worker) invalid() (byte, uint64) {
	w.d.stats.InvalidRequests.Add(1)
	return StatusIOErr, 0
}

func (w *worker) ioErr() (byte, uint64) {
	w.d.stats.IOErrors.Add(1)
	return StatusIOErr, 0
}

// rangeOK checks a read or write of n bytes at sector: whole sectors, inside
// the disk, within the size the device advertised.
func (w *worker) rangeOK(sector, n uint64) bool {
	if n%SectorSize != 0 || n > w.maxData {
		return false
	}
	return sector <= w.d.capacity && n/SectorSize <= w.d.capacity-sector
}

// slices maps the request's guest buffers to host memory, for vectored I/O.
// The slice is scratch space reused by the next request.
func (w *worker) slices(bufs queue.Buffers) ([][]byte, error) {
	out := w.iov[:0]
	for _, b := range bufs {
		p, err := w.mem.Slice(b.Addr, uint64(b.Len))
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	w.iov = out
	return out, nil
}

// read fills the guest buffers from the backend, zero-copy.
func (w *worker) read(bufs queue.Buffers, sector uint64) error {
	off := int64(sector * SectorSize)
	if v, ok := w.d.backend.(Vectored); ok {
		iov, err := w.slices(bufs)
		if err != nil {
			return err
		}
		return v.ReadvAt(iov, off)
	}
	for _, b := range bufs {
		p, err := w.mem.Slice(b.Addr, uint64(b.Len))
		if err != nil {
			return err
		}
		n, err := w.d.backend.ReadAt(p, off)
		if err != nil && !(errors.Is(err, io.EOF) && n == len(p)) {
			return err
		}
		off += int64(b.Len)
	}
	return nil
}

// write stores the guest buffers in the backend, zero-copy.
func (w *worker) write(bufs queue.Buffers, sector uint64) error {
	off := int64(sector * SectorSize)
	if v, ok := w.d.backend.(Vectored); ok {
		iov, err := w.slices(bufs)
		if err != nil {
			return err
		}
		return v.WritevAt(iov, off)
	}
	for _, b := range bufs {
		p, err := w.mem.Slice(b.Addr, uint64(b.Len))
		if err != nil {
			return err
		}
		if _, err := w.d.backend.WriteAt(p, off); err != nil {
			return err
		}
		off += int64(b.Len)
	}
	return nil
}
