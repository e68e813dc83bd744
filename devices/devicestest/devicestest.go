package devicestest

import (
	"sync/atomic"

	"github.com/boxd-dev/boxd/devices"
)

// Line is a devices.Interrupt that counts triggers. The zero Line is ready.
type Line struct {
	n atomic.Int64
}

// Trigger records one edge.
func (l *Line) Trigger() error {
	l.n.Add(1)
	return nil
}

// Count is the number of Trigger calls so far.
func (l *Line) Count() int64 { return l.n.Load() }

// Take returns the number of triggers since the previous Take (or since the
// start), so a test step can assert on the edges that step caused.
func (l *Line) Take() int64 {
	return l.n.Swap(0)
}

// Op is one decoded access.
type Op struct {
	Write  bool
	Offset uint64
	Data   []byte // the bytes written, or a buffer of the read's length
}

// lengths are the access sizes Ops draws from: the legal 1, 2, 4 and 8, plus
// lengths a device must survive even though the Bus never passes them.
var lengths = [8]int{1, 1, 2, 4, 8, 0, 3, 16}

// Ops decodes fuzz input into accesses against a device of the given size: each
// access takes a header byte (bit 0: write; bits 1-3: length index), an offset
// byte (reduced modulo size+8, so a few land past the end) and, for writes, its
// data bytes. Decoding stops when the input runs out.
func Ops(in []byte, size uint64) []Op {
	var ops []Op
	for len(in) >= 2 {
		h, off := in[0], uint64(in[1])%(size+8)
		in = in[2:]
		n := lengths[(h>>1)&7]
		op := Op{Write: h&1 == 1, Offset: off, Data: make([]byte, n)}
		if op.Write {
			n = copy(op.Data, in)
			op.Data = op.Data[:n]
			in = in[n:]
		}
		ops = append(ops, op)
	}
	return ops
}

// Apply performs op on d.
func Apply(d devices.Device, op Op) {
	if op.Write {
		d.Write(op.Offset, op.Data)
	} else {
		d.Read(op.Offset, op.Data)
	}
}
