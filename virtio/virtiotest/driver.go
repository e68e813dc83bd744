package virtiotest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/boxd-dev/boxd/virtio/queue"
)

// Descriptor and ring flags, as a driver writes them.
const (
	DescNext     = 1
	DescWrite    = 2
	DescIndirect = 4

	AvailNoInterrupt = 1 // VRING_AVAIL_F_NO_INTERRUPT
	UsedNoNotify     = 1 // VRING_USED_F_NO_NOTIFY
)

// ErrNoSpace is returned by Add when the descriptor table is full.
var ErrNoSpace = errors.New("no free descriptors")

// Used is one used-ring entry as the driver sees it.
type Used struct {
	Head uint16
	Len  uint32
}

// Driver is a mock virtio driver for one split virtqueue: it lays out the
// rings in fake memory like Linux (descriptor table, then the available ring,
// then the used ring on the next 4 KiB boundary, as virtio-mmio aligns it),
// keeps a free list of descriptors, and adds, kicks and reaps chains. Buffers
// and indirect tables come from a bump allocator over the rest of its region.
//
// A Driver is used from one goroutine. Ring indices are accessed with
// queue.LoadIndex/StoreIndex, so tests that run a device worker concurrently
// are clean under the race detector.
type Driver struct {
	mem               *Memory
	size              uint16
	desc, avail, used uint64
	eventIdx          bool

	heap, heapEnd uint64
	free          []uint16
	chains        map[uint16][]uint16 // head -> descriptors to free
	indirect      map[uint16]uint64   // head -> indirect table reused for it

	availIdx uint16 // shadow of avail.idx
	kicked   uint16 // avail.idx at the last kick decision
	lastUsed uint16

	// Notify is called by Kick when the device wants a notification (for
	// example, a write to the transport's QueueNotify register).
	Notify func()
}

// NewDriver lays out a queue of the given size at the start of fake-memory
// region [region, region+regionSize) and keeps the rest for buffers. The rings
// are zeroed, as a driver allocates them.
func NewDriver(mem *Memory, size uint16, region, regionSize uint64) *Driver {
	n := uint64(size)
	d := &Driver{
		mem: mem, size: size,
		desc:     region,
		avail:    region + 16*n,
		chains:   map[uint16][]uint16{},
		indirect: map[uint16]uint64{},
	}
	d.used = alignUp(d.avail+6+2*n, 4096)
	d.heap = alignUp(d.used+6+8*n, 4096)
	d.heapEnd = region + regionSize
	if d.heap > d.heapEnd {
		panic(fmt.Sprintf("virtiotest: region of %#x bytes too small for a queue of %d", regionSize, size))
	}
	zero := make([]byte, d.heap-region)
	if _, err := mem.WriteAt(zero, int64(region)); err != nil {
		panic(fmt.Sprintf("virtiotest: queue region: %v", err))
	}
	for i := int(size) - 1; i >= 0; i-- {
		d.free = append(d.free, uint16(i))
	}
	return d
}

func alignUp(x, a uint64) uint64 { return (x + a - 1) &^ (a - 1) }

// Addresses of the three rings.
func (d *Driver) DescAddr() uint64  { return d.desc }
func (d *Driver) AvailAddr() uint64 { return d.avail }
func (d *Driver) UsedAddr() uint64  { return d.used }

// Size returns the queue size.
func (d *Driver) Size() uint16 { return d.size }

// SetEventIdx tells the driver whether VIRTIO_F_EVENT_IDX was negotiated.
func (d *Driver) SetEventIdx(on bool) { d.eventIdx = on }

// State is the queue configuration a transport would hold after the driver
// set it up: ready, with these rings.
func (d *Driver) State() queue.State {
	return queue.State{
		MaxSize: d.size, Size: d.size, Ready: true,
		DescTable: d.desc, AvailRing: d.avail, UsedRing: d.used,
		EventIdx: d.eventIdx,
	}
}

// Alloc returns n bytes (16-aligned) of the driver's region. It panics when
// the region is exhausted: a test sizing error.
func (d *Driver) Alloc(n uint64) uint64 {
	a := alignUp(d.heap, 16)
	if a+n > d.heapEnd || a+n < a {
		panic(fmt.Sprintf("virtiotest: driver region exhausted allocating %d bytes", n))
	}
	d.heap = a + n
	return a
}

// Buf allocates a buffer of n bytes holding data (zero-padded).
func (d *Driver) Buf(n uint32, data []byte) queue.Buffer {
	b := queue.Buffer{Addr: d.Alloc(uint64(n)), Len: n}
	d.Fill(b, data)
	return b
}

// Fill writes data at the start of b.
func (d *Driver) Fill(b queue.Buffer, data []byte) {
	if _, err := d.mem.WriteAt(data, int64(b.Addr)); err != nil {
		panic(fmt.Sprintf("virtiotest: fill: %v", err))
	}
}

// Read returns the contents of b.
func (d *Driver) Read(b queue.Buffer) []byte {
	p := make([]byte, b.Len)
	if _, err := d.mem.ReadAt(p, int64(b.Addr)); err != nil {
		panic(fmt.Sprintf("virtiotest: read: %v", err))
	}
	return p
}

// WriteDesc writes descriptor i of the queue's table as given, for tests that
// build malformed chains by hand.
func (d *Driver) WriteDesc(i uint16, addr uint64, length uint32, flags, next uint16) {
	writeDesc(d.mem, d.desc+16*uint64(i), addr, length, flags, next)
}

func writeDesc(mem *Memory, at, addr uint64, length uint32, flags, next uint16) {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[0:], addr)
	binary.LittleEndian.PutUint32(b[8:], length)
	binary.LittleEndian.PutUint16(b[12:], flags)
	binary.LittleEndian.PutUint16(b[14:], next)
	if _, err := mem.WriteAt(b[:], int64(at)); err != nil {
		panic(fmt.Sprintf("virtiotest: descriptor: %v", err))
	}
}

// Add makes a chain of readable then writable buffers available (direct
// descriptors) and returns its head. It does not notify; see Kick.
func (d *Driver) Add(readable, writable []queue.Buffer) (uint16, error) {
	n := len(readable) + len(writable)
	if n == 0 || n > len(d.free) {
		return 0, fmt.Errorf("%w: need %d, have %d", ErrNoSpace, n, len(d.free))
	}
	ids := d.free[len(d.free)-n:]
	d.free = d.free[:len(d.free)-n]
	ids = append([]uint16(nil), ids...)
	for i, b := range append(append([]queue.Buffer(nil), readable...), writable...) {
		var flags, next uint16
		if i >= len(readable) {
			flags |= DescWrite
		}
		if i < n-1 {
			flags |= DescNext
			next = ids[i+1]
		}
		d.WriteDesc(ids[i], b.Addr, b.Len, flags, next)
	}
	d.chains[ids[0]] = ids
	d.PushAvail(ids[0])
	return ids[0], nil
}

// AddIndirect makes the same chain available through one descriptor pointing
// at an indirect table, as Linux does for multi-buffer requests.
func (d *Driver) AddIndirect(readable, writable []queue.Buffer) (uint16, error) {
	n := len(readable) + len(writable)
	if n == 0 || len(d.free) == 0 {
		return 0, fmt.Errorf("%w: need 1, have %d", ErrNoSpace, len(d.free))
	}
	head := d.free[len(d.free)-1]
	d.free = d.free[:len(d.free)-1]
	table, ok := d.indirect[head]
	if !ok || n > int(d.size) {
		table = d.Alloc(16 * uint64(max(n, int(d.size))))
		d.indirect[head] = table
	}
	for i, b := range append(append([]queue.Buffer(nil), readable...), writable...) {
		var flags, next uint16
		if i >= len(readable) {
			flags |= DescWrite
		}
		if i < n-1 {
			flags |= DescNext
			next = uint16(i + 1)
		}
		writeDesc(d.mem, table+16*uint64(i), b.Addr, b.Len, flags, next)
	}
	d.WriteDesc(head, table, uint32(16*n), DescIndirect, 0)
	d.chains[head] = []uint16{head}
	d.PushAvail(head)
	return head, nil
}

// PushAvail appends head to the available ring and publishes it by bumping
// avail.idx, without touching descriptors or the free list.
func (d *Driver) PushAvail(head uint16) {
	slot := uint64(d.availIdx % d.size)
	var b [2]byte
	binary.LittleEndian.PutUint16(b[:], head)
	if _, err := d.mem.WriteAt(b[:], int64(d.avail+4+2*slot)); err != nil {
		panic(fmt.Sprintf("virtiotest: avail ring: %v", err))
	}
	d.SetAvailIdx(d.availIdx + 1)
}

// SetAvailIdx publishes v as avail.idx (tests use it to corrupt the index).
func (d *Driver) SetAvailIdx(v uint16) {
	d.availIdx = v
	d.storeIndex(d.avail+2, v)
}

// AvailIdx returns the driver's available index.
func (d *Driver) AvailIdx() uint16 { return d.availIdx }

// Kick notifies the device unless it suppressed notifications (avail_event
// with EVENT_IDX, VRING_USED_F_NO_NOTIFY otherwise), like
// virtqueue_kick_prepare. It reports whether it notified.
func (d *Driver) Kick() bool {
	old, cur := d.kicked, d.availIdx
	d.kicked = cur
	var need bool
	if d.eventIdx {
		event := d.loadIndex(d.used + 4 + 8*uint64(d.size))
		need = cur-event-1 < cur-old
	} else {
		need = d.loadIndex(d.used)&UsedNoNotify == 0
	}
	if need && d.Notify != nil {
		d.Notify()
	}
	return need
}

// UsedIdx returns the device's used index.
func (d *Driver) UsedIdx() uint16 { return d.loadIndex(d.used + 2) }

// AvailEvent returns the device's avail_event field.
func (d *Driver) AvailEvent() uint16 { return d.loadIndex(d.used + 4 + 8*uint64(d.size)) }

// SetUsedEvent writes used_event: with EVENT_IDX, the device interrupts when
// its used index passes v.
func (d *Driver) SetUsedEvent(v uint16) { d.storeIndex(d.avail+4+2*uint64(d.size), v) }

// SetNoInterrupt sets or clears VRING_AVAIL_F_NO_INTERRUPT.
func (d *Driver) SetNoInterrupt(on bool) {
	var f uint16
	if on {
		f = AvailNoInterrupt
	}
	d.storeIndex(d.avail, f)
}

// Reap returns the used entries the device published since the last call,
// frees their descriptors and, with EVENT_IDX, asks for an interrupt at the
// next used entry (virtqueue_enable_cb). Like Linux it re-checks the used
// index after publishing used_event: an entry the device pushed before it
// saw the new used_event would otherwise never be announced. An entry whose
// head is not an outstanding chain is an error: the device returned
// something it was not given.
func (d *Driver) Reap() ([]Used, error) {
	var out []Used
	for {
		idx := d.UsedIdx()
		if pending := idx - d.lastUsed; pending > d.size {
			return out, fmt.Errorf("used idx %d is %d ahead of %d", idx, pending, d.lastUsed)
		}
		for d.lastUsed != idx {
			var b [8]byte
			slot := uint64(d.lastUsed % d.size)
			if _, err := d.mem.ReadAt(b[:], int64(d.used+4+8*slot)); err != nil {
				return out, err
			}
			id := binary.LittleEndian.Uint32(b[0:])
			u := Used{Head: uint16(id), Len: binary.LittleEndian.Uint32(b[4:])}
			ids, ok := d.chains[u.Head]
			if id >= uint32(d.size) || !ok {
				return out, fmt.Errorf("used entry %d: head %d not outstanding", d.lastUsed, id)
			}
			delete(d.chains, u.Head)
			d.free = append(d.free, ids...)
			out = append(out, u)
			d.lastUsed++
		}
		if !d.eventIdx {
			return out, nil
		}
		d.SetUsedEvent(d.lastUsed)
		if d.UsedIdx() == d.lastUsed {
			return out, nil
		}
	}
}

// Wait reaps until at least n used entries arrived, sleeping on irq between
// checks. It fails after timeout (a deadlock guard, not a timing assertion).
func (d *Driver) Wait(irq *Interrupt, n int, timeout time.Duration) ([]Used, error) {
	var out []Used
	var deadline *time.Timer
	for {
		got, err := d.Reap()
		out = append(out, got...)
		if err != nil || len(out) >= n {
			return out, err
		}
		if deadline == nil {
			deadline = time.NewTimer(timeout)
			defer deadline.Stop()
		}
		select {
		case <-irq.C():
		case <-deadline.C:
			return out, fmt.Errorf("got %d of %d used entries after %v (used idx %d)", len(out), n, timeout, d.UsedIdx())
		}
	}
}

// Free returns the number of free descriptors.
func (d *Driver) Free() int { return len(d.free) }

func (d *Driver) loadIndex(gpa uint64) uint16 {
	v, err := queue.LoadIndex(d.mem, gpa)
	if err != nil {
		panic(fmt.Sprintf("virtiotest: ring index: %v", err))
	}
	return v
}

func (d *Driver) storeIndex(gpa uint64, v uint16) {
	if err := queue.StoreIndex(d.mem, gpa, v); err != nil {
		panic(fmt.Sprintf("virtiotest: ring index: %v", err))
	}
}
