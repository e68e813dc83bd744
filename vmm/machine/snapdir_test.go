package machine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/sys/unix"

	"github.com/boxd-dev/boxd/internal/testguest"
	"github.com/boxd-dev/boxd/vmm/kvm"
	"github.com/boxd-dev/boxd/vmm/memory"
	"github.com/boxd-dev/boxd/vmm/snapshot"
)

// counterAddr is the guest page memCounter counts in.
const counterAddr = 0x300000

// memCounter counts a quadword in guest RAM (counterAddr) up to n, reporting
// it to progressAddr every 2^20 steps, then writes it to ResultAddr and
// DoneAddr and spins. Its state is in memory, so a fork that lost a written
// page would restart from a stale count.
//
//	mov rbx, MMIOBase; mov rdi, counterAddr
//	loop: mov rax, [rdi]; inc rax; mov [rdi], rax
//	test eax, 0xfffff; jnz skip; mov [rbx+0x10], rax
//	skip: mov rcx, n; cmp rax, rcx; jne loop
//	mov [rbx], rax; mov [rbx+8], eax; spin: jmp spin
func memCounter(n uint64) []byte {
	code := binary.LittleEndian.AppendUint64([]byte{0x48, 0xbb}, testguest.MMIOBase)
	code = append(code, 0x48, 0xc7, 0xc7)
	code = binary.LittleEndian.AppendUint32(code, counterAddr)
	code = append(code,
		0x48, 0x8b, 0x07, // mov rax, [rdi]
		0x48, 0xff, 0xc0, // inc rax
		0x48, 0x89, 0x07, // mov [rdi], rax
		0xa9, 0xff, 0xff, 0x0f, 0x00, // test eax, 0xfffff
		0x75, 0x04, // jnz skip
		0x48, 0x89, 0x43, 0x10, // mov [rbx+0x10], rax
		0x48, 0xb9) // mov rcx, n
	code = binary.LittleEndian.AppendUint64(code, n)
	return append(code,
		0x48, 0x39, 0xc8, // cmp rax, rcx
		0x75, 0xdd, // jne loop (-35)
		0x48, 0x89, 0x03, 0x89, 0x43, 0x08, 0xeb, 0xfe)
}

func ramU64(t *testing.T, m *Machine, gpa int64) uint64 {
	t.Helper()
	var b [8]byte
	if _, err := m.RAM().ReadAt(b[:], gpa); err != nil {
		t.Fatal(err)
	}
	return binary.LittleEndian.Uint64(b[:])
}

func ramStr(t *testing.T, m *Machine, gpa int64) string {
	t.Helper()
	b := make([]byte, 8)
	if _, err := m.RAM().ReadAt(b, gpa); err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Three generations of forks through snapshot directories, each directory
// deleted once its child runs: every generation continues the count from
// exactly where its parent was paused and finishes it, and a page each
// generation marks before its fork and overwrites after shows that memories
// diverge: each child has its parent's page as at the fork, the parent its
// own later write.
func TestForkOfForkDir(t *testing.T) {
	for _, mode := range []string{"RestoreDir", "Standby.RestoreDir", "Fork", "Standby.Fork"} {
		t.Run(mode, func(t *testing.T) { testForkOfFork(t, mode) })
	}
}

func testForkOfFork(t *testing.T, mode string) {
	const n = 1 << 28
	const marks = 0x500000 // one page per generation
	memDir := t.TempDir()
	gen0, rep0 := newRing3MemDir(t, 1, 32, memCounter(n), memDir)
	if err := gen0.Start(); err != nil {
		t.Fatal(err)
	}
	wait(t, "gen 0", gen0, rep0.first)
	gens := []*Machine{gen0}
	reps := []*reporter{rep0}
	forkedAt := []uint64{0}
	for g := 1; g <= 3; g++ {
		parent := gens[g-1]
		if err := parent.Pause(); err != nil {
			t.Fatal(err)
		}
		at := ramU64(t, parent, counterAddr)
		page := int64(marks + g*4096)
		parent.RAM().WriteAt(fmt.Appendf(nil, "fork %d  ", g), page)
		child := forkBy(t, mode, parent, memDir)
		t.Cleanup(func() { stopAndClose(t, child) })
		rep := attach(t, child)
		parent.RAM().WriteAt([]byte("parent  "), page)
		if got := ramU64(t, child, counterAddr); got != at {
			t.Fatalf("gen %d starts its count at %d, parent paused at %d", g, got, at)
		}
		if err := child.Start(); err != nil {
			t.Fatal(err)
		}
		if err := parent.Resume(); err != nil {
			t.Fatal(err)
		}
		gens, reps, forkedAt = append(gens, child), append(reps, rep), append(forkedAt, at)
		if g < 3 {
			wait(t, fmt.Sprintf("gen %d", g), child, rep.first)
		}
	}
	for g, m := range gens {
		wait(t, fmt.Sprintf("gen %d", g), m, reps[g].done)
		res, progress := reps[g].snapshot()
		if res != n {
			t.Errorf("gen %d counted to %d, want %d", g, res, n)
		}
		if g == 0 {
			continue
		}
		// The first report after the fork is the next multiple of 2^20.
		if want := (forkedAt[g] | 0xfffff) + 1; len(progress) == 0 || progress[0] != want {
			t.Errorf("gen %d: first progress %v, want %d (forked at %d)", g, progress[:min(1, len(progress))], want, forkedAt[g])
		}
	}
	// The page of fork p is written by its parent, generation p-1: "fork p"
	// before the fork, "parent" after. Generation p and its descendants
	// have the first, p-1 the second, older ones never wrote it.
	for g, m := range gens {
		for p := 1; p <= 3; p++ {
			want := "\x00\x00\x00\x00\x00\x00\x00\x00"
			switch {
			case g >= p:
				want = fmt.Sprintf("fork %d  ", p)
			case g == p-1:
				want = "parent  "
			}
			if got := ramStr(t, m, int64(marks+p*4096)); got != want {
				t.Errorf("gen %d, page of fork %d: %q, want %q", g, p, got, want)
			}
		}
	}
}

// forkBy makes a child of the paused parent by one of the ways there are:
// through a directory (deleted once the child exists) or in process, into a
// new machine or a standby one.
func forkBy(t *testing.T, mode string, parent *Machine, memDir string) *Machine {
	t.Helper()
	var sb *Standby
	if mode == "Standby.RestoreDir" || mode == "Standby.Fork" {
		var err error
		if sb, err = NewStandby(Config{CPUs: 1, MemMiB: int(parent.RAM().Size() >> 20), MemDir: memDir}); err != nil {
			t.Fatal(err)
		}
		defer sb.Close()
	}
	var child *Machine
	var err error
	switch mode {
	case "Fork":
		child, _, err = parent.Fork(Config{})
	case "Standby.Fork":
		child, _, err = sb.Fork(parent)
	default:
		dir := t.TempDir()
		if _, err := SaveFork(parent, dir); err != nil {
			t.Fatal(err)
		}
		if sb != nil {
			child, err = sb.RestoreDir(dir)
		} else {
			child, err = RestoreDir(Config{MemDir: memDir}, dir)
		}
		if rerr := os.RemoveAll(dir); rerr != nil {
			t.Fatal(rerr)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	return child
}

// newRing3MemDir is ring3Machine with RAM in a memory folder.
func newRing3MemDir(t *testing.T, cpus, memMiB int, code []byte, memDir string) (*Machine, *reporter) {
	t.Helper()
	m := newRing3Cfg(t, Config{CPUs: cpus, MemMiB: memMiB, MemDir: memDir}, code)
	t.Cleanup(func() { stopAndClose(t, m) })
	return m, attach(t, m)
}

// newRing3Cfg builds a machine from cfg running code at ring 3 (no reporter).
func newRing3Cfg(t testing.TB, cfg Config, code []byte) *Machine {
	t.Helper()
	cfg.Load = func(mem *memory.RAM, bsp *kvm.VCPU, _ string) error {
		if err := testguest.Load(mem, code); err != nil {
			return err
		}
		return testguest.SetupVCPU(bsp, 3)
	}
	m, err := New(cfg)
	if errors.Is(err, kvm.ErrNoKVM) {
		t.Skipf("tier 2 needs /dev/kvm: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// SaveFull writes a directory that restores to the same state and memory,
// with nothing shared with the original.
func TestSaveFullRestoreDir(t *testing.T) {
	const n = 1 << 27
	m, rep := newRing3MemDir(t, 2, 32, memCounter(n), t.TempDir())
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	wait(t, "guest", m, rep.first)
	if err := m.Pause(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	stats, err := SaveFull(m, dir)
	if err != nil {
		t.Fatal(err)
	}
	s1, err := m.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	r, err := RestoreDir(Config{}, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopAndClose(t, r) })
	s2, err := r.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(comparable(s1), comparable(s2), cmpopts.EquateEmpty(), cmpopts.IgnoreFields(snapshot.State{}, "SavedAt")); d != "" {
		t.Errorf("state after SaveFull → RestoreDir (-saved +restored):\n%s", d)
	}
	a, b := make([]byte, 32<<20), make([]byte, 32<<20)
	for _, x := range []struct {
		m *Machine
		p []byte
	}{{m, a}, {r, b}} {
		for _, reg := range x.m.RAM().Regions() {
			if _, err := x.m.RAM().ReadAt(x.p[reg.Offset:reg.Offset+reg.Size], int64(reg.GPA)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if string(a) != string(b) {
		t.Error("restored memory differs")
	}
	if stats.MemoryBytes == 0 || stats.MemoryBytes > 1<<20 {
		t.Errorf("wrote %d bytes of memory; the guest uses a few pages", stats.MemoryBytes)
	}
	rrep := attach(t, r)
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	wait(t, "restored", r, rrep.done)
	if got, _ := rrep.snapshot(); got != n {
		t.Errorf("restored guest counted to %d, want %d", got, n)
	}
}

// A corrupt, foreign or incomplete directory is refused before any VM exists.
func TestRestoreDirRefuses(t *testing.T) {
	memDir := t.TempDir()
	m, _ := newRing3MemDir(t, 1, 16, []byte{0xeb, 0xfe}, memDir)
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	if err := m.Pause(); err != nil {
		t.Fatal(err)
	}
	good := t.TempDir()
	if _, err := SaveFork(m, good); err != nil {
		t.Fatal(err)
	}
	// The parent's own link to its frozen memory file.
	kept, _ := os.ReadDir(memDir)
	copyDir := func(t *testing.T) string {
		d := t.TempDir()
		for _, name := range []string{StateFile, ManifestFile, "mem.0"} {
			if err := os.Link(filepath.Join(good, name), filepath.Join(d, name)); err != nil {
				t.Fatal(err)
			}
		}
		return d
	}
	flip := func(name string, off int) func(d string) {
		return func(d string) {
			p := filepath.Join(d, name)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			b[off%len(b)] ^= 0x20
			os.Remove(p) // a link: do not change the shared file
			os.WriteFile(p, b, 0o600)
		}
	}
	for _, tc := range []struct {
		name string
		f    func(d string)
		is   error
	}{
		{"state bit flip", flip(StateFile, 100), snapshot.ErrFormat},
		{"state header", flip(StateFile, 9), snapshot.ErrFormat},
		{"manifest bit flip", flip(ManifestFile, 20), memory.ErrManifest},
		{"state is a manifest", func(d string) {
			os.Remove(filepath.Join(d, StateFile))
			os.Link(filepath.Join(d, ManifestFile), filepath.Join(d, StateFile))
		}, snapshot.ErrFormat},
		{"no state", func(d string) { os.Remove(filepath.Join(d, StateFile)) }, os.ErrNotExist},
		{"no memory", func(d string) { os.Remove(filepath.Join(d, "mem.0")) }, os.ErrNotExist},
		{"short memory", func(d string) {
			p := filepath.Join(d, "mem.0")
			os.Remove(p)
			os.WriteFile(p, make([]byte, 8<<20), 0o600)
		}, memory.ErrManifest},
		{"manifest names a symlink by path", func(d string) {
			os.Symlink(filepath.Join(d, "mem.0"), filepath.Join(d, "link"))
			pathManifest(t, d, filepath.Join(d, "link"))
		}, memory.ErrManifest},
		{"manifest names a FIFO by path", func(d string) {
			unix.Mkfifo(filepath.Join(d, "fifo"), 0o600)
			pathManifest(t, d, filepath.Join(d, "fifo"))
		}, memory.ErrManifest},
		{"manifest names a device by path", func(d string) { pathManifest(t, d, "/dev/zero") }, memory.ErrManifest},
		{"manifest names a short file by path", func(d string) {
			os.WriteFile(filepath.Join(d, "short"), make([]byte, 8<<20), 0o600)
			pathManifest(t, d, filepath.Join(d, "short"))
		}, memory.ErrManifest},
		{"manifest names a missing file by path", func(d string) { pathManifest(t, d, filepath.Join(d, "nope")) }, os.ErrNotExist},
		{"manifest for another size", func(d string) {
			b, _ := (&memory.Manifest{Size: 32 << 20, Base: "mem.0"}).Encode()
			os.Remove(filepath.Join(d, ManifestFile))
			os.WriteFile(filepath.Join(d, ManifestFile), b, 0o600)
		}, memory.ErrManifest},
	} {
		d := copyDir(t)
		tc.f(d)
		r, err := RestoreDir(Config{MemDir: memDir}, d)
		if err == nil {
			r.Close()
			t.Errorf("%s: restored", tc.name)
			continue
		}
		if !errors.Is(err, tc.is) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.is)
		}
	}
	// Nothing was left linked in the memory folder by the refusals.
	if ents, _ := os.ReadDir(memDir); len(ents) != len(kept) {
		t.Errorf("memory folder holds %d files after refused restores, %d before", len(ents), len(kept))
	}
}

// pathManifest replaces d's manifest by one whose base is the absolute path p.
func pathManifest(t *testing.T, d, p string) {
	t.Helper()
	b, err := (&memory.Manifest{Size: 16 << 20, Base: p}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(d, ManifestFile))
	if err := os.WriteFile(filepath.Join(d, ManifestFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A VM whose memory is a memfd cannot be forked across processes, and says why.
func TestSaveForkNeedsMemDir(t *testing.T) {
	m, _ := ring3Machine(t, 1, 16, []byte{0xeb, 0xfe})
	m.Start()
	if err := m.Pause(); err != nil {
		t.Fatal(err)
	}
	if _, err := SaveFork(m, t.TempDir()); err == nil {
		t.Fatal("forked a memfd VM into a directory")
	} else {
		t.Log(err)
	}
}
