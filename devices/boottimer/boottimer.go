package boottimer

import (
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/boxd-dev/boxd/devices"
)

// Size is the length of the device's MMIO range: one page.
const Size = 0x1000

// Mark ids with a meaning to the host.
const (
	MarkInit       = 1 // the kernel started init
	MarkAgentReady = 2 // the guest agent is serving
)

// FirecrackerInitByte is the byte Firecracker's guests store to say init started.
const FirecrackerInitByte = 123

// DefaultMaxMarks bounds Marks when Config.MaxMarks is zero.
const DefaultMaxMarks = 64

// Mark is one milestone the guest reported.
type Mark struct {
	ID uint64        // MarkInit, MarkAgentReady or a custom id
	At time.Duration // host monotonic time since the start instant
}

func (m Mark) String() string {
	return fmt.Sprintf("mark %d at %.3f ms", m.ID, float64(m.At)/float64(time.Millisecond))
}

// Config wires a Timer to the monitor.
type Config struct {
	// Start is the instant marks are measured from; zero means when New runs.
	// It should carry a monotonic reading (come from time.Now).
	Start time.Time
	// Now is the clock; nil means time.Now. Tests inject a fake.
	Now func() time.Time
	// Log receives one line per mark; nil means no log.
	Log io.Writer
	// OnMark, if set, is called for each recorded mark on the vCPU goroutine
	// that wrote it, after the Timer's lock is released. It must not block.
	OnMark func(Mark)
	// MaxMarks bounds the marks kept; 0 means DefaultMaxMarks.
	MaxMarks int
}

// Timer is the boot-timer device. It implements devices.Device.
type Timer struct {
	now    func() time.Time
	log    io.Writer
	onMark func(Mark)
	max    int

	mu sync.Mutex
	// All fields below are guarded by mu.
	start   time.Time
	marks   []Mark
	dropped uint64 // marks beyond max
	ignored uint64 // stores that are not marks
}

var _ devices.Device = (*Timer)(nil)

// New returns a Timer with no marks.
func New(cfg Config) *Timer {
	t := &Timer{now: cfg.Now, log: cfg.Log, onMark: cfg.OnMark, max: cfg.MaxMarks}
	if t.now == nil {
		t.now = time.Now
	}
	if t.max <= 0 {
		t.max = DefaultMaxMarks
	}
	t.start = cfg.Start
	if t.start.IsZero() {
		t.start = t.now()
	}
	return t
}

// SetStart moves the instant later marks are measured from; the monitor calls
// it just before the first KVM_RUN (or after a restore) so marks measure guest
// boot, not VM assembly. Marks already recorded keep their times.
func (t *Timer) SetStart(start time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.start = start
}

// Read implements devices.Device: the page reads as zeros.
func (t *Timer) Read(_ uint64, data []byte) { clear(data) }

// Write implements devices.Device: a store at offset 0 records a mark.
func (t *Timer) Write(offset uint64, data []byte) {
	id, ok := markID(offset, data)
	t.mu.Lock()
	if !ok {
		t.ignored++
		t.mu.Unlock()
		return
	}
	if len(t.marks) >= t.max {
		t.dropped++
		t.mu.Unlock()
		return
	}
	m := Mark{ID: id, At: t.now().Sub(t.start)}
	t.marks = append(t.marks, m)
	if t.log != nil {
		// Under the lock so concurrent marks log in the order they were recorded.
		fmt.Fprintf(t.log, "boot-timer: %v\n", m)
	}
	t.mu.Unlock()
	if t.onMark != nil {
		t.onMark(m)
	}
}

// markID decodes a store into a mark id, or reports that it is not a mark.
func markID(offset uint64, data []byte) (uint64, bool) {
	if offset != 0 {
		return 0, false
	}
	var id uint64
	switch len(data) {
	case 1:
		id = uint64(data[0])
		if id == FirecrackerInitByte {
			id = MarkInit
		}
	case 2:
		id = uint64(binary.LittleEndian.Uint16(data))
	case 4:
		id = uint64(binary.LittleEndian.Uint32(data))
	case 8:
		id = binary.LittleEndian.Uint64(data)
	default:
		return 0, false
	}
	return id, id != 0
}

// Marks returns a copy of the marks recorded so far, in the order written.
func (t *Timer) Marks() []Mark {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.marks)
}

// Dropped is the number of marks not kept because MaxMarks was reached.
func (t *Timer) Dropped() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.dropped
}

// Ignored is the number of stores that were not marks (wrong offset or width,
// or a zero value).
func (t *Timer) Ignored() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ignored
}
