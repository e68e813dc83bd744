package machine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/boxd-dev/boxd/internal/testguest"
	"github.com/boxd-dev/boxd/virtio/blk"
	"github.com/boxd-dev/boxd/virtio/mmio"
	"github.com/boxd-dev/boxd/virtio/vsock"
	"github.com/boxd-dev/boxd/vmm/boot"
	"github.com/boxd-dev/boxd/vmm/kvm"
	"github.com/boxd-dev/boxd/vmm/memory"
	"github.com/boxd-dev/boxd/vmm/snapshot"
)

// progressAddr receives the loop counter of progressLoop now and then.
const progressAddr = testguest.MMIOBase + 0x10

// progressLoop is SumLoop(n) that also writes its remaining count (RCX) to
// progressAddr every 2^20 iterations, so a test can catch it mid-run.
//
//	mov rcx, n; xor eax, eax; mov rbx, ResultAddr
//	loop: add rax, rcx; test ecx, 0xfffff; jnz skip; mov [rbx+0x10], rcx
//	skip: dec rcx; jnz loop
//	mov [rbx], rax; mov [rbx+8], eax; spin: jmp spin
func progressLoop(n uint64) []byte {
	code := binary.LittleEndian.AppendUint64([]byte{0x48, 0xb9}, n)
	code = append(code, 0x31, 0xc0, 0x48, 0xbb)
	code = binary.LittleEndian.AppendUint64(code, testguest.ResultAddr)
	code = append(code,
		0x48, 0x01, 0xc8, // add rax, rcx
		0xf7, 0xc1, 0xff, 0xff, 0x0f, 0x00, // test ecx, 0xfffff
		0x75, 0x04, // jnz skip
		0x48, 0x89, 0x4b, 0x10, // mov [rbx+0x10], rcx
		0x48, 0xff, 0xc9, // dec rcx
		0x75, 0xec, // jnz loop (-20)
		0x48, 0x89, 0x03, 0x89, 0x43, 0x08, 0xeb, 0xfe)
	return code
}

// reporter is the test guests' MMIO window.
type reporter struct {
	mu       sync.Mutex
	result   uint64
	progress []uint64
	first    chan struct{} // closed on the first progress write
	done     chan struct{} // closed on the write to DoneAddr
}

func newReporter() *reporter {
	return &reporter{first: make(chan struct{}), done: make(chan struct{})}
}

func (r *reporter) Read(uint64, []byte) {}

func (r *reporter) Write(off uint64, data []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var v uint64
	for i, b := range data {
		v |= uint64(b) << (8 * i)
	}
	switch off {
	case testguest.ResultAddr - testguest.MMIOBase:
		r.result = v
	case testguest.DoneAddr - testguest.MMIOBase:
		close(r.done)
	case progressAddr - testguest.MMIOBase:
		if len(r.progress) == 0 {
			close(r.first)
		}
		r.progress = append(r.progress, v)
	}
}

func (r *reporter) snapshot() (uint64, []uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.result, append([]uint64(nil), r.progress...)
}

// ring3Machine builds a one-vCPU-or-more machine running code at ring 3 with a
// reporter on the test guest's MMIO window.
func ring3Machine(t testing.TB, cpus, memMiB int, code []byte) (*Machine, *reporter) {
	t.Helper()
	m, r := newRing3(t, cpus, memMiB, code)
	t.Cleanup(func() { stopAndClose(t, m) })
	return m, r
}

// newRing3 is ring3Machine without the cleanup: the caller closes it.
func newRing3(t testing.TB, cpus, memMiB int, code []byte) (*Machine, *reporter) {
	return newRing3At(t, cpus, memMiB, code, testguest.MMIOBase)
}

// newRing3At puts the reporter at base (guests larger than 256 MiB have RAM at
// testguest.MMIOBase).
func newRing3At(t testing.TB, cpus, memMiB int, code []byte, base uint64) (*Machine, *reporter) {
	t.Helper()
	m, err := New(Config{CPUs: cpus, MemMiB: memMiB, Load: func(mem *memory.RAM, bsp *kvm.VCPU, _ string) error {
		if err := testguest.Load(mem, code); err != nil {
			return err
		}
		return testguest.SetupVCPU(bsp, 3)
	}})
	if errors.Is(err, kvm.ErrNoKVM) {
		t.Skipf("tier 2 needs /dev/kvm: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return m, attachAt(t, m, base)
}

func attach(t testing.TB, m *Machine) *reporter {
	t.Helper()
	return attachAt(t, m, testguest.MMIOBase)
}

func attachAt(t testing.TB, m *Machine, base uint64) *reporter {
	t.Helper()
	r := newReporter()
	if err := m.MMIO.Insert(base, 0x1000, r); err != nil {
		t.Fatal(err)
	}
	return r
}

func stopAndClose(t testing.TB, m *Machine) {
	if st := m.State(); st == Running || st == Paused {
		m.Stop()
		m.Wait()
	}
	if err := m.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
}

// wait blocks until ch closes or the machine stops (a crash is a failure).
func wait(t *testing.T, what string, m *Machine, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-m.Done():
		t.Fatalf("%s: machine stopped first: %+v", what, m.Wait())
	}
}

// State that legitimately differs between a save and a save of its restore:
// the TSC (MSR 0x10) and kvmclock advance with host time, each PIT
// channel's count_load_time is a host timestamp, and SavedAt is when each
// save happened. Nothing else may differ, devices included.
var volatileMSRs = map[uint32]bool{0x10: true}

func comparable(s *snapshot.State) *snapshot.State {
	c := *s
	c.SavedAt = 0
	c.VM.Clock = kvm.ClockData{}
	// kvm_pit_state2: three 24-byte kvm_pit_channel_state, each ending in
	// the s64 count_load_time.
	for ch := range 3 {
		clear(c.VM.PIT[24*ch+16 : 24*ch+24])
	}
	c.VCPUs = nil
	for _, v := range s.VCPUs {
		var msrs []kvm.MSR
		for _, m := range v.MSRs {
			if !volatileMSRs[m.Index] {
				msrs = append(msrs, m)
			}
		}
		v.MSRs = msrs
		c.VCPUs = append(c.VCPUs, v)
	}
	return &c
}

// Save, encode, decode, restore into a new VM, save again: the same state.
func TestSaveRestoreSave(t *testing.T) {
	const n = 1 << 22
	m, rep := ring3Machine(t, 2, 32, progressLoop(n))
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	wait(t, "guest", m, rep.first)
	if err := m.Pause(); err != nil {
		t.Fatal(err)
	}
	s1, err := m.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	enc, err := snapshot.Encode(s1)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := snapshot.Decode(enc)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Restore(Config{}, dec, mapCopy(t, m, dec.MemSize))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopAndClose(t, r) })
	s2, err := r.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(comparable(s1), comparable(s2), cmpopts.EquateEmpty()); d != "" {
		t.Errorf("save → restore → save (-first +second):\n%s", d)
	}
	if len(s1.VCPUs[0].MSRs) == 0 {
		t.Error("no MSRs saved")
	}
}

// A guest forked mid-computation finishes it in both parent and child, and the
// child continues from where the parent was, not from the start.
func TestForkContinuesComputation(t *testing.T) {
	const n = 1 << 29
	parent, prep := ring3Machine(t, 1, 32, progressLoop(n))
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	wait(t, "parent", parent, prep.first)
	if err := parent.Pause(); err != nil {
		t.Fatal(err)
	}
	_, before := prep.snapshot()
	child, _, err := parent.Fork(Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopAndClose(t, child) })
	crep := attach(t, child)
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	if err := parent.Resume(); err != nil {
		t.Fatal(err)
	}
	wait(t, "parent", parent, prep.done)
	wait(t, "child", child, crep.done)
	for _, c := range []struct {
		name string
		r    *reporter
	}{{"parent", prep}, {"child", crep}} {
		if got, _ := c.r.snapshot(); got != testguest.Sum(n) {
			t.Errorf("%s computed %d, want %d", c.name, got, testguest.Sum(n))
		}
	}
	// The counter counts down: every value the child reports must be below
	// the last one the parent reported before the fork.
	_, after := crep.snapshot()
	last := before[len(before)-1]
	if len(after) == 0 || after[0] >= last {
		t.Errorf("child's first progress %v, parent's last before fork %d: child did not continue", after[:min(1, len(after))], last)
	}
}

// After a fork, parent and child write different values to the same guest
// page; each reads its own back, and the memory file keeps the original.
func TestForkCopyOnWrite(t *testing.T) {
	const gpa = 0x100000
	parent, prep := ring3Machine(t, 1, 32, testguest.SumLoop(1000))
	if _, err := parent.RAM().WriteAt([]byte("original"), gpa); err != nil {
		t.Fatal(err)
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	wait(t, "parent", parent, prep.done)
	if err := parent.Pause(); err != nil {
		t.Fatal(err)
	}
	child, _, err := parent.Fork(Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopAndClose(t, child) })
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	if err := parent.Resume(); err != nil {
		t.Fatal(err)
	}
	parent.RAM().WriteAt([]byte("parent!!"), gpa)
	child.RAM().WriteAt([]byte("child!!!"), gpa)
	read := func(ram *memory.RAM) string {
		b := make([]byte, 8)
		if _, err := ram.ReadAt(b, gpa); err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	file := make([]byte, 8)
	if _, err := parent.RAM().File().ReadAt(file, gpa); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{"parent": read(parent.RAM()), "child": read(child.RAM()), "file": string(file)}
	want := map[string]string{"parent": "parent!!", "child": "child!!!", "file": "original"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("memory after fork (-want +got):\n%s", d)
	}
	// A fork of a fork carries the child's private pages.
	if err := child.Pause(); err != nil {
		t.Fatal(err)
	}
	gc, _, err := child.Fork(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer gc.Close()
	if got := read(gc.RAM()); got != "child!!!" {
		t.Errorf("grandchild reads %q, want the child's %q", got, "child!!!")
	}
}

func TestSnapshotNeedsPause(t *testing.T) {
	m, _ := ring3Machine(t, 1, 16, []byte{0xeb, 0xfe})
	m.Start()
	if _, err := m.Snapshot(); !errors.Is(err, ErrState) {
		t.Fatalf("snapshot of a running machine: %v, want ErrState", err)
	}
}

// Guest-physical layout of TestSnapshotDevices' driver: rings, then buffers.
const (
	blkRings   = 0x1000000
	vsockRings = 0x1010000
	bufs       = 0x1100000
	eventBuf   = 0x1200000
)

// getID makes a virtio-blk GET_ID request available at buffer area at.
func getID(t *testing.T, r *vring, at uint64) {
	t.Helper()
	hdr := make([]byte, 16)
	binary.LittleEndian.PutUint32(hdr, blk.TypeGetID)
	if _, err := r.ram.WriteAt(hdr, int64(at)); err != nil {
		t.Fatal(err)
	}
	r.add(t, vbuf{at, 16, false}, vbuf{at + 0x20, blk.IDLen, true}, vbuf{at + 0x40, 1, true})
}

// deviceRig makes the virtio devices of TestSnapshotDevices: a disk over a
// file in dir and a vsock device listening on dir/sock.
func deviceRig(t *testing.T, dir, sock string) []mmio.Device {
	t.Helper()
	disk := filepath.Join(dir, "disk")
	if err := os.WriteFile(disk, nil, 0o600); err != nil && !errors.Is(err, os.ErrExist) {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, 1<<20); err != nil {
		t.Fatal(err)
	}
	b, err := blk.OpenFile(disk, false)
	if err != nil {
		t.Fatal(err)
	}
	d, err := blk.New(b, blk.Config{ID: "snapshot-disk"})
	if err != nil {
		t.Fatal(err)
	}
	v, err := vsock.New(vsock.Config{GuestCID: 3, UDSPath: filepath.Join(dir, sock)})
	if err != nil {
		d.Close()
		t.Fatal(err)
	}
	return []mmio.Device{d, v}
}

// mapCopy maps m's memory file privately, for a restore.
func mapCopy(t testing.TB, m *Machine, size uint64) *memory.RAM {
	t.Helper()
	f, err := dupFile(m.RAM().File())
	if err != nil {
		t.Fatal(err)
	}
	ram, err := memory.MapPrivate(f, size)
	if err != nil {
		t.Fatal(err)
	}
	return ram
}

// A machine with a disk and a vsock device, saved with a request kicked
// while paused: the request waits (Pause quiesces); save → restore → save
// gives equal state, devices included; the restored machine serves the
// request and tells the guest's vsock driver its transport was reset; the
// original serves the request once resumed.
func TestSnapshotDevices(t *testing.T) {
	dir := t.TempDir()
	load := func(mem *memory.RAM, bsp *kvm.VCPU, _ string) error {
		if err := testguest.Load(mem, progressLoop(1<<29)); err != nil {
			return err
		}
		return testguest.SetupVCPU(bsp, 3)
	}
	m, err := New(Config{CPUs: 1, MemMiB: 32, Load: load, Virtio: deviceRig(t, dir, "v1")})
	if errors.Is(err, kvm.ErrNoKVM) {
		t.Skipf("tier 2 needs /dev/kvm: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopAndClose(t, m) })
	rep := attach(t, m)
	blkBase, vsockBase := uint64(boot.VirtioMMIOBase), uint64(boot.VirtioMMIOBase+boot.VirtioMMIOStride)
	bq := probeVirtio(t, m, blkBase, 1, blkRings)[0]
	vq := probeVirtio(t, m, vsockBase, 3, vsockRings)
	getID(t, bq, bufs)
	kick(m, blkBase, 0)
	bq.waitUsed(t, "request before the snapshot", 1)
	vq[vsock.QueueEvent].add(t, vbuf{eventBuf, 8, true})
	kick(m, vsockBase, vsock.QueueEvent)

	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	wait(t, "guest", m, rep.first)
	if err := m.Pause(); err != nil {
		t.Fatal(err)
	}
	getID(t, bq, bufs+0x100)
	kick(m, blkBase, 0)
	s1, err := m.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if n := bq.usedIdx(t); n != 1 {
		t.Fatalf("used index %d after a kick while paused, want 1: the device ran", n)
	}
	var names []string
	for _, d := range s1.Devices {
		names = append(names, d.Name)
	}
	want := []string{"serial@0x3f8", "i8042@0x60", "rtc@0x70", "virtio-blk@0xd0000000", "virtio-vsock@0xd0001000"}
	if d := cmp.Diff(want, names); d != "" {
		t.Errorf("device names (-want +got):\n%s", d)
	}
	if s1.SavedAt == 0 {
		t.Error("SavedAt not set")
	}
	enc, err := snapshot.Encode(s1)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := snapshot.Decode(enc)
	if err != nil {
		t.Fatal(err)
	}

	r, err := Restore(Config{Virtio: deviceRig(t, dir, "v2")}, dec, mapCopy(t, m, dec.MemSize))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopAndClose(t, r) })
	s2, err := r.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(comparable(s1), comparable(s2), cmpopts.EquateEmpty()); d != "" {
		t.Errorf("save → restore → save (-first +second):\n%s", d)
	}

	attach(t, r)
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	rq := bq.on(r.RAM())
	rq.waitUsed(t, "restored machine: request kicked while paused", 2)
	id := make([]byte, blk.IDLen+0x21)
	if _, err := r.RAM().ReadAt(id, bufs+0x120); err != nil {
		t.Fatal(err)
	}
	if got := string(bytes.TrimRight(id[:blk.IDLen], "\x00")); got != "snapshot-disk" || id[0x20] != blk.StatusOK {
		t.Errorf("restored machine's GET_ID: %q, status %d", got, id[0x20])
	}
	vq[vsock.QueueEvent].on(r.RAM()).waitUsed(t, "restored machine: vsock event", 1)
	ev := make([]byte, 4)
	if _, err := r.RAM().ReadAt(ev, eventBuf); err != nil {
		t.Fatal(err)
	}
	if id := binary.LittleEndian.Uint32(ev); id != 0 {
		t.Errorf("vsock event id %d, want 0 (VIRTIO_VSOCK_EVENT_TRANSPORT_RESET)", id)
	}

	if err := m.Resume(); err != nil {
		t.Fatal(err)
	}
	bq.waitUsed(t, "resumed original: request kicked while paused", 2)
	if n := vq[vsock.QueueEvent].usedIdx(t); n != 0 {
		t.Errorf("original's vsock sent %d events, want none", n)
	}
}

// Restore refuses a state whose devices are not the machine's, and one
// whose device blob is corrupt, naming the device.
func TestRestoreDeviceMismatch(t *testing.T) {
	dir := t.TempDir()
	m, err := New(Config{CPUs: 1, MemMiB: 16, Load: programLoader(testguest.Spin), Virtio: deviceRig(t, dir, "v1")})
	if errors.Is(err, kvm.ErrNoKVM) {
		t.Skipf("tier 2 needs /dev/kvm: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopAndClose(t, m) })
	st, err := m.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	corrupt := *st
	corrupt.Devices = append([]snapshot.Device(nil), st.Devices...)
	for i, d := range corrupt.Devices {
		if d.Name == "virtio-blk@0xd0000000" {
			corrupt.Devices[i].Data = append([]byte{9}, d.Data[1:]...)
		}
	}
	swapped := func() []mmio.Device { d := deviceRig(t, dir, "v2"); return []mmio.Device{d[1], d[0]} }
	for _, tc := range []struct {
		name  string
		devs  func() []mmio.Device
		st    *snapshot.State
		wants []string
	}{
		{"missing", func() []mmio.Device { return nil }, st, []string{"snapshot has device virtio-blk@0xd0000000", "virtio-vsock@0xd0001000"}},
		{"swapped", swapped, st, []string{"machine has device virtio-vsock@0xd0000000", "snapshot has device virtio-blk@0xd0000000"}},
		{"extra", func() []mmio.Device { return append(deviceRig(t, dir, "v3"), &fakeDev{}) }, st, []string{"machine has device virtio-blk@0xd0002000"}},
		{"corrupt", func() []mmio.Device { return deviceRig(t, dir, "v4") }, &corrupt, []string{"device virtio-blk@0xd0000000", "unknown state version"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Restore(Config{Virtio: tc.devs()}, tc.st, mapCopy(t, m, st.MemSize))
			if err == nil {
				r.Close()
				t.Fatal("restore accepted")
			}
			for _, w := range tc.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// The kvmclock of a restored guest advances by the host time since the save.
func TestRestoredClock(t *testing.T) {
	now := time.Unix(1000, 0)
	for _, tc := range []struct {
		savedAt int64
		want    uint64
	}{
		{0, 5000},                          // unknown: as saved
		{now.UnixNano() - 3e9, 5000 + 3e9}, // saved 3 s ago
		{now.UnixNano() + 1e9, 5000},       // in the future: no change
	} {
		st := &snapshot.State{SavedAt: tc.savedAt, VM: snapshot.VM{Clock: kvm.ClockData{Clock: 5000}}}
		if got := restoredClock(st, now); got != tc.want {
			t.Errorf("SavedAt %d: clock %d, want %d", tc.savedAt, got, tc.want)
		}
	}
}

// A Linux guest in TSC-deadline mode has its next timer interrupt armed in
// MSR 0x6e0. Restore must bring it back: written before the LAPIC is in
// TSC-deadline mode (or before the TSC), KVM drops it and the restored
// guest never gets another timer tick.
func TestRestoreKeepsTSCDeadline(t *testing.T) {
	const (
		msrTSCDeadline = 0x6e0
		lvtt           = 0x320     // LAPIC timer LVT register offset
		tscDeadline    = 2 << 17   // its timer-mode field: TSC-deadline
		deadlineDelta  = 1 << 40   // far enough never to fire in the test
		masked         = uint32(0) // delivery is not what is tested
	)
	m, _ := ring3Machine(t, 1, 32, testguest.SumLoop(1))
	c := m.kvcpus[0]
	l, err := c.LAPIC()
	if err != nil {
		t.Fatal(err)
	}
	binary.LittleEndian.PutUint32(l[lvtt:], tscDeadline|masked|0xec)
	if err := c.SetLAPIC(l); err != nil {
		t.Fatal(err)
	}
	tsc, err := c.MSRs([]uint32{msrIA32TSC})
	if err != nil {
		t.Fatal(err)
	}
	deadline := tsc[0].Data + deadlineDelta
	if err := c.SetMSRs([]kvm.MSR{{Index: msrTSCDeadline, Data: deadline}}); err != nil {
		t.Fatal(err)
	}
	if got, err := c.MSRs([]uint32{msrTSCDeadline}); err != nil || got[0].Data == 0 {
		t.Skipf("this KVM does not keep a TSC deadline for the vCPU (read %v, %v)", got, err)
	}
	s, err := m.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	r, err := Restore(Config{}, s, mapCopy(t, m, s.MemSize))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := r.kvcpus[0].MSRs([]uint32{msrTSCDeadline})
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Data != deadline {
		t.Errorf("restored TSC deadline %#x, want %#x", got[0].Data, deadline)
	}
}

func TestMSRsTSCFirst(t *testing.T) {
	in := []kvm.MSR{{Index: 0x6e0, Data: 1}, {Index: 0x1b}, {Index: msrIA32TSC, Data: 7}}
	want := []kvm.MSR{{Index: msrIA32TSC, Data: 7}, {Index: 0x6e0, Data: 1}, {Index: 0x1b}}
	if d := cmp.Diff(want, msrsTSCFirst(in)); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}
