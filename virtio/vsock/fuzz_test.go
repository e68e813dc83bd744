package vsock

import (
	"encoding/binary"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/boxd-dev/boxd/virtio/queue"
	"github.com/boxd-dev/boxd/virtio/virtiotest"
)

// fakeTransport records Fail and turns Signal into the fake interrupt.
type fakeTransport struct {
	irq    *virtiotest.Interrupt
	failed atomic.Bool
}

func (f *fakeTransport) Signal(uint32) error { return f.irq.Trigger() }
func (f *fakeTransport) Fail(error)          { f.failed.Store(true); f.irq.Trigger() }

const (
	fuzzCID    = 3
	fuzzQueue  = 16
	fuzzRegion = 1 << 20
)

// Record flags of the fuzz input.
const (
	recSplit    = 1 << iota // split the bytes over two descriptors
	recWritable             // add a device-writable descriptor at the end
	recIndirect             // use an indirect table
	recRawDesc              // overwrite the head descriptor with the first 16 bytes
)

// fuzzRecord encodes one tx chain of the fuzz input: flags, a 16-bit
// length, then the bytes.
func fuzzRecord(flags byte, b []byte) []byte {
	out := []byte{flags, byte(len(b)), byte(len(b) >> 8)}
	return append(out, b...)
}

func fuzzPacket(op uint16, src, dst, length uint32, flags uint32, payload []byte) []byte {
	b := make([]byte, HeaderLen+len(payload))
	header{SrcCID: fuzzCID, DstCID: HostCID, SrcPort: src, DstPort: dst, Len: length,
		Type: typeStream, Op: op, Flags: flags, BufAlloc: 4096}.encode(b)
	copy(b[HeaderLen:], payload)
	return b
}

// FuzzVsockTx feeds the device arbitrary tx chains — any bytes, any
// descriptor layout, raw descriptors — with rx buffers available for its
// answers. The device must never panic, hang or return a tx chain with a
// non-zero length.
func FuzzVsockTx(f *testing.F) {
	cat := func(recs ...[]byte) []byte {
		var out []byte
		for _, r := range recs {
			out = append(out, r...)
		}
		return out
	}
	f.Add(cat(fuzzRecord(0, fuzzPacket(opRequest, 5000, 1024, 0, 0, nil))))
	f.Add(cat(
		fuzzRecord(recSplit, fuzzPacket(opRequest, 5000, 1024, 0, 0, nil)),
		fuzzRecord(0, fuzzPacket(opRW, 5000, 1024, 5, 0, []byte("hello"))),
		fuzzRecord(recIndirect, fuzzPacket(opCreditRequest, 5000, 1024, 0, 0, nil)),
		fuzzRecord(0, fuzzPacket(opShutdown, 5000, 1024, 0, shutBoth, nil)),
		fuzzRecord(recWritable, fuzzPacket(opRst, 5000, 1024, 0, 0, nil)),
	))
	f.Add(cat(
		fuzzRecord(0, fuzzPacket(opRW, 1, 2, 100, 0, []byte("short"))),
		fuzzRecord(0, fuzzPacket(9, 1, 2, 0, 0, nil)),
		fuzzRecord(0, fuzzPacket(opResponse, 1, 1<<30, 0, 0, nil)),
		fuzzRecord(0, make([]byte, 10)),
	))
	raw := make([]byte, 16)
	binary.LittleEndian.PutUint64(raw, 1<<40)
	binary.LittleEndian.PutUint32(raw[8:], HeaderLen)
	f.Add(cat(fuzzRecord(recRawDesc, raw), fuzzRecord(recRawDesc|recSplit, make([]byte, 40))))

	f.Fuzz(func(t *testing.T, data []byte) {
		// A deadlock guard (Close or Reset never returning), not a timing
		// assertion: fail with every goroutine's stack.
		wd := time.AfterFunc(30*time.Second, func() {
			buf := make([]byte, 1<<20)
			panic("vsock fuzz: device stuck\n" + string(buf[:runtime.Stack(buf, true)]))
		})
		defer wd.Stop()
		dev, err := New(Config{GuestCID: fuzzCID, UDSPath: filepath.Join(t.TempDir(), "v"),
			QueueSize: fuzzQueue, ConnectTimeout: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer dev.Close()
		mem := virtiotest.NewMemory(gBase, 3*fuzzRegion)
		var drv [3]*virtiotest.Driver
		qs := make([]*queue.Queue, 3)
		for i := range drv {
			drv[i] = virtiotest.NewDriver(mem, fuzzQueue, gBase+uint64(i)*fuzzRegion, fuzzRegion)
			drv[i].SetEventIdx(true)
		}
		for range fuzzQueue {
			drv[QueueRx].Add(nil, []queue.Buffer{drv[QueueRx].Buf(HeaderLen+64, nil)})
		}
		tx := drv[QueueTx]
		chains := 0
		for len(data) >= 3 && chains < fuzzQueue/2 {
			flags, n := data[0], int(binary.LittleEndian.Uint16(data[1:]))
			data = data[3:]
			n = min(n, len(data))
			b := data[:n]
			data = data[n:]
			bufs := []queue.Buffer{tx.Buf(uint32(len(b)), b)}
			if flags&recSplit != 0 && len(b) > 1 {
				bufs = []queue.Buffer{tx.Buf(uint32(len(b)/2), b[:len(b)/2]), tx.Buf(uint32(len(b)-len(b)/2), b[len(b)/2:])}
			}
			var w []queue.Buffer
			if flags&recWritable != 0 {
				w = []queue.Buffer{tx.Buf(8, nil)}
			}
			add := tx.Add
			if flags&recIndirect != 0 {
				add = tx.AddIndirect
			}
			head, err := add(bufs, w)
			if err != nil {
				break
			}
			if flags&recRawDesc != 0 && len(b) >= 16 {
				tx.WriteDesc(head, binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint32(b[8:]),
					binary.LittleEndian.Uint16(b[12:]), binary.LittleEndian.Uint16(b[14:]))
			}
			chains++
		}
		for i := range qs {
			if qs[i], err = queue.New(drv[i].State(), mem); err != nil {
				t.Fatal(err)
			}
		}
		irq := virtiotest.NewInterrupt()
		tr := &fakeTransport{irq: irq}
		if err := dev.Activate(mem, qs, 0, tr); err != nil {
			t.Fatal(err)
		}
		deadline := time.After(10 * time.Second)
		for int(tx.UsedIdx()) < chains && !tr.failed.Load() {
			select {
			case <-irq.C():
			case <-deadline:
				t.Fatalf("device returned %d of %d tx chains", tx.UsedIdx(), chains)
			}
		}
		used, err := tx.Reap()
		if err != nil && !tr.failed.Load() {
			t.Fatalf("tx reap: %v", err)
		}
		for _, u := range used {
			if u.Len != 0 {
				t.Errorf("tx chain %d returned with length %d", u.Head, u.Len)
			}
		}
		// The transport resets a failed device; either way Reset must return.
		dev.Reset()
	})
}
