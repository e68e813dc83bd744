package mmio_test

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/boxd-dev/boxd/virtio"
	"github.com/boxd-dev/boxd/virtio/mmio"
	"github.com/boxd-dev/boxd/virtio/queue"
	"github.com/boxd-dev/boxd/virtio/virtiotest"
)

// snapDevice is a fakeDevice that can be paused and saved; its own blob is
// opaque bytes it checks on restore.
type snapDevice struct {
	*fakeDevice
	paused, resumes int
	blob            []byte
	restored        []byte
	restoreErr      error
}

var _ mmio.Snapshotter = (*snapDevice)(nil)

func newSnap() *snapDevice { return &snapDevice{fakeDevice: newFake(), blob: []byte("dev")} }

func (s *snapDevice) Pause()                     { s.paused++ }
func (s *snapDevice) Resume()                    { s.resumes++ }
func (s *snapDevice) SaveState() ([]byte, error) { return s.blob, nil }
func (s *snapDevice) RestoreState(b []byte) error {
	if s.restoreErr != nil {
		return s.restoreErr
	}
	s.restored = append([]byte(nil), b...)
	return nil
}

// running sets up a transport with a probed snapDevice (EVENT_IDX on) and
// completes one chain on queue 0, so the queue positions are not zero.
func running(t *testing.T) (*mmio.Transport, *snapDevice, *virtiotest.Memory, *virtiotest.Guest) {
	t.Helper()
	dev := newSnap()
	mem := virtiotest.NewMemory(memBase, memSize)
	tr, err := mmio.New(dev, mem, virtiotest.NewInterrupt())
	if err != nil {
		t.Fatal(err)
	}
	g := probe(t, tr, mem, virtio.FeatureEventIdx|1<<5)
	q := g.Queues[0]
	if _, err := q.Add(nil, []queue.Buffer{q.Buf(64, nil)}); err != nil {
		t.Fatal(err)
	}
	q.Kick()
	if used, err := q.Reap(); err != nil || len(used) != 1 {
		t.Fatalf("first chain: %v, %v", used, err)
	}
	write(tr, mmio.RegQueueSel, 1)
	return tr, dev, mem, g
}

func saveOf(t *testing.T, tr *mmio.Transport) []byte {
	t.Helper()
	b, err := tr.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Save mid-operation (a chain made available but not kicked), restore into a
// fresh transport over the same memory: the registers read the same, a save
// of the restore is identical, and after Resume the pending chain is
// served and the queue goes on.
func TestSaveRestoreContinues(t *testing.T) {
	tr, dev, mem, g := running(t)
	q := g.Queues[0]
	if _, err := q.Add(nil, []queue.Buffer{q.Buf(64, nil)}); err != nil {
		t.Fatal(err)
	}
	tr.Pause()
	if dev.paused != 1 {
		t.Fatalf("device paused %d times, want 1", dev.paused)
	}
	q.Kick() // dropped while paused
	if len(dev.fakeDevice.notifies) != 1 {
		t.Errorf("kick while paused reached the device: notifies %v", dev.fakeDevice.notifies)
	}
	blob := saveOf(t, tr)

	dev2 := newSnap()
	tr2, err := mmio.New(dev2, mem, virtiotest.NewInterrupt())
	if err != nil {
		t.Fatal(err)
	}
	tr2.Pause()
	if err := tr2.RestoreState(blob); err != nil {
		t.Fatal(err)
	}
	if string(dev2.restored) != "dev" {
		t.Errorf("device blob restored as %q", dev2.restored)
	}
	if d := cmp.Diff(blob, saveOf(t, tr2)); d != "" {
		t.Errorf("save → restore → save (-first +second):\n%s", d)
	}
	regs := func(tr *mmio.Transport) []uint32 {
		var v []uint32
		for _, off := range []uint64{mmio.RegStatus, mmio.RegInterruptStatus, mmio.RegConfigGeneration, mmio.RegQueueReady} {
			v = append(v, read(tr, off))
		}
		write(tr, mmio.RegQueueSel, 0)
		return append(v, read(tr, mmio.RegQueueReady))
	}
	if d := cmp.Diff(regs(tr), regs(tr2)); d != "" {
		t.Errorf("registers (-original +restored):\n%s", d)
	}
	if dev2.activates != 1 || dev2.negotiate != g.Features {
		t.Errorf("restored device activated %d times with features %#x, want once with %#x", dev2.activates, dev2.negotiate, g.Features)
	}
	// The restored device serves the guest from now on.
	q.Notify = func() { write(tr2, mmio.RegQueueNotify, 0) }
	tr2.Resume()
	if dev2.resumes != 1 {
		t.Errorf("device resumed %d times", dev2.resumes)
	}
	if used, err := q.Reap(); err != nil || len(used) != 1 {
		t.Fatalf("chain pending at save: reaped %v, %v; want it served on resume", used, err)
	}
	if _, err := q.Add(nil, []queue.Buffer{q.Buf(64, nil)}); err != nil {
		t.Fatal(err)
	}
	q.Kick()
	if used, err := q.Reap(); err != nil || len(used) != 1 {
		t.Fatalf("chain after restore: %v, %v", used, err)
	}
}

// Resume notifies every queue of a running device, so kicks dropped while
// paused are not lost.
func TestResumeNotifiesEveryQueue(t *testing.T) {
	tr, dev, _, _ := running(t)
	before := len(dev.fakeDevice.notifies)
	tr.Pause()
	tr.Notify(0)
	tr.Notify(1)
	tr.Resume()
	if got, want := dev.fakeDevice.notifies[before:], []int{0, 1}; !cmp.Equal(got, want) {
		t.Errorf("notifies after resume %v, want %v", got, want)
	}
}

func TestSaveNeedsPause(t *testing.T) {
	tr, _, _, _ := running(t)
	if _, err := tr.SaveState(); !errors.Is(err, mmio.ErrNotPaused) {
		t.Errorf("SaveState running = %v, want ErrNotPaused", err)
	}
	tr.Pause()
	blob := saveOf(t, tr)
	if err := tr.RestoreState(blob); err == nil {
		t.Error("restore into a transport in use accepted")
	}
	plain, _, _ := newTransport(t, newFake())
	plain.Pause()
	if _, err := plain.SaveState(); err == nil {
		t.Error("save of a device that is no Snapshotter accepted")
	}
}

// Hostile blobs are refused with an error naming the problem, and leave the
// transport untouched: status 0, device never activated.
func TestRestoreRejects(t *testing.T) {
	tr, _, _, _ := running(t)
	tr.Pause()
	good := saveOf(t, tr)
	le := binary.LittleEndian
	const q0 = 41 // first queue record
	with := func(f func(b []byte)) []byte {
		b := append([]byte(nil), good...)
		f(b)
		return b
	}
	for _, tc := range []struct {
		name string
		blob []byte
		want string
	}{
		{"empty", nil, "too short"},
		{"version", with(func(b []byte) { le.PutUint16(b, 7) }), "unknown state version 7"},
		{"header", good[:30], "want at least"},
		{"type", with(func(b []byte) { le.PutUint32(b[2:], virtio.DeviceNet) }), "device type 1"},
		{"status bits", with(func(b []byte) { le.PutUint32(b[6:], 0x10f) }), "unknown bits"},
		{"status order", with(func(b []byte) { le.PutUint32(b[6:], virtio.StatusDriverOK|virtio.StatusAcknowledge) }), "skips a step"},
		{"flags", with(func(b []byte) { b[10] = 0x80 }), "unknown flags"},
		{"isr", with(func(b []byte) { le.PutUint32(b[11:], 4) }), "interrupt status"},
		{"features", with(func(b []byte) { le.PutUint64(b[27:], le.Uint64(b[27:])|1<<7) }), "not offered"},
		{"no version 1", with(func(b []byte) { le.PutUint64(b[27:], 0) }), "VIRTIO_F_VERSION_1"},
		{"active without DRIVER_OK", with(func(b []byte) { le.PutUint32(b[6:], 0xb) }), "active device"},
		{"queue count", with(func(b []byte) { le.PutUint16(b[39:], 3) }), "3 queues"},
		{"max size", with(func(b []byte) { le.PutUint16(b[q0:], 32) }), "max size 32"},
		{"size", with(func(b []byte) { le.PutUint16(b[q0+2:], 12) }), "size 12"},
		{"ready flag", with(func(b []byte) { b[q0+4] = 2 }), "flag bytes"},
		{"ring outside RAM", with(func(b []byte) { le.PutUint64(b[q0+5:], 1<<40) }), "descriptor table"},
		{"ring misaligned", with(func(b []byte) { le.PutUint64(b[q0+21:], memBase+2) }), "not 4-aligned"},
		{"in flight", with(func(b []byte) { le.PutUint16(b[q0+29:], 100) }), "in flight"},
		{"device length", with(func(b []byte) { le.PutUint32(b[len(b)-7:], 99) }), "device state of 99 bytes"},
		{"truncated", good[:len(good)-1], "device state"},
		{"trailing", append(append([]byte(nil), good...), 0), "device state"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev := newSnap()
			tr, _ := newTransportFor(t, dev)
			tr.Pause()
			err := tr.RestoreState(tc.blob)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("RestoreState = %v, want an error with %q", err, tc.want)
			}
			if s := read(tr, mmio.RegStatus); s != 0 || dev.activates != 0 {
				t.Errorf("after a refused restore: status %#x, %d activations", s, dev.activates)
			}
		})
	}
	t.Run("device refuses", func(t *testing.T) {
		dev := newSnap()
		dev.restoreErr = errors.New("no")
		tr, _ := newTransportFor(t, dev)
		tr.Pause()
		if err := tr.RestoreState(good); err == nil {
			t.Fatal("accepted")
		}
		if s := read(tr, mmio.RegStatus); s != 0 || dev.resets != 1 {
			t.Errorf("after the device refused: status %#x, %d resets (want 0, 1)", s, dev.resets)
		}
	})
	t.Run("not paused", func(t *testing.T) {
		tr, _ := newTransportFor(t, newSnap())
		if err := tr.RestoreState(good); !errors.Is(err, mmio.ErrNotPaused) {
			t.Errorf("RestoreState = %v, want ErrNotPaused", err)
		}
	})
}

func newTransportFor(t testing.TB, dev *snapDevice) (*mmio.Transport, *virtiotest.Memory) {
	t.Helper()
	mem := virtiotest.NewMemory(memBase, memSize)
	tr, err := mmio.New(dev, mem, virtiotest.NewInterrupt())
	if err != nil {
		t.Fatal(err)
	}
	return tr, mem
}

func FuzzRestoreState(f *testing.F) {
	var seeds [][]byte
	dev := newSnap()
	mem := virtiotest.NewMemory(memBase, memSize)
	tr, _ := mmio.New(dev, mem, virtiotest.NewInterrupt())
	if g, err := virtiotest.Probe(tr, mem, virtiotest.ProbeOptions{Features: virtio.FeatureEventIdx, Region: memBase, RegionSize: regionSize}); err == nil {
		q := g.Queues[0]
		q.Add(nil, []queue.Buffer{q.Buf(64, nil)})
		q.Kick()
	}
	tr.Pause()
	if b, err := tr.SaveState(); err == nil {
		seeds = append(seeds, b)
	}
	fresh, _ := mmio.New(newSnap(), mem, virtiotest.NewInterrupt())
	fresh.Pause()
	if b, err := fresh.SaveState(); err == nil {
		seeds = append(seeds, b)
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		dev := newSnap()
		tr, _ := newTransportFor(t, dev)
		tr.Pause()
		if err := tr.RestoreState(b); err != nil {
			return
		}
		// Accepted state runs: resume, kick, reset, all without panics.
		tr.Resume()
		for q := range 3 {
			tr.Notify(q)
		}
		read(tr, mmio.RegQueueReady)
		write(tr, mmio.RegStatus, 0)
	})
}
