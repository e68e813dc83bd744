package memory

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

func mustWrite(t *testing.T, m *RAM, off uint64, s string) {
	t.Helper()
	if _, err := m.WriteAt([]byte(s), int64(off)); err != nil {
		t.Fatal(err)
	}
}

func readStr(t *testing.T, m *RAM, off uint64, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := m.ReadAt(b, int64(off)); err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDirty(t *testing.T) {
	const size = 8 << 20
	m, err := New(size, Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	mustWrite(t, m, 0x3000, "x") // before the fork: in the file, not dirty
	if _, _, err := m.Freeze(""); err != nil {
		t.Fatal(err)
	}
	readStr(t, m, 0x5000, 1) // a read makes no private copy
	for _, off := range []uint64{0x1000, 0x2000, 0x2fff, 0x7000, size - 1} {
		mustWrite(t, m, off, "y")
	}
	want := []Run{{0x1000, 0x2000}, {0x7000, 0x1000}, {size - PageSize, PageSize}}
	for name, f := range map[string]func(*os.File) ([]Run, error){"scan": m.dirtyScan, "pagemap": m.dirtyPagemap} {
		pm, err := os.Open("/proc/self/pagemap")
		if err != nil {
			t.Fatal(err)
		}
		got, err := f(pm)
		pm.Close()
		if errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EINVAL) {
			t.Logf("%s: not supported by this kernel: %v", name, err)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("%s: dirty runs (-want +got):\n%s", name, d)
		}
	}
}

// Three generations through snapshot folders: each child sees its parent's
// memory as at the freeze, each writes its own, nothing leaks across, and a
// folder can be deleted once its children hold links of their own.
func TestFreezeGenerations(t *testing.T) {
	const size = 4 << 20
	memDir := t.TempDir()
	g0, err := New(size, Options{Dir: memDir})
	if err != nil {
		t.Fatal(err)
	}
	defer g0.Close()
	mustWrite(t, g0, 0x1000, "g0")
	mustWrite(t, g0, 0x9000, "g0")

	dir1 := t.TempDir()
	man1, st, err := g0.Freeze(dir1)
	if err != nil {
		t.Fatal(err)
	}
	if st.Layers != 1 || len(man1.Extents) != 0 {
		t.Errorf("first freeze: %+v, manifest %+v", st, man1)
	}
	g1, err := MapManifest(dir1, man1, Options{Dir: memDir})
	if err != nil {
		t.Fatal(err)
	}
	defer g1.Close()
	mustWrite(t, g0, 0x1000, "P0") // parent after the fork
	mustWrite(t, g1, 0x2000, "g1")
	mustWrite(t, g1, 0x3000, "g1")
	mustWrite(t, g1, 0x9000, "g1")
	if err := os.RemoveAll(dir1); err != nil { // the daemon removes it once children run
		t.Fatal(err)
	}

	dir2 := t.TempDir()
	man2, st, err := g1.Freeze(dir2)
	if err != nil {
		t.Fatal(err)
	}
	if st.DirtyBytes != 3*PageSize || st.DirtyRuns != 2 {
		t.Errorf("second freeze wrote %d bytes in %d runs, want 3 pages in 2", st.DirtyBytes, st.DirtyRuns)
	}
	if runs, _ := g1.Dirty(); len(runs) != 0 {
		t.Errorf("after a freeze g1 still has private pages %v", runs)
	}
	g2, err := MapManifest(dir2, man2, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer g2.Close()
	mustWrite(t, g1, 0x2000, "P1")
	mustWrite(t, g2, 0x3000, "g2")

	// A second freeze of g1 only writes what changed since the first.
	dir3 := t.TempDir()
	man3, st, err := g1.Freeze(dir3)
	if err != nil {
		t.Fatal(err)
	}
	if st.DirtyBytes != PageSize {
		t.Errorf("re-freeze wrote %d bytes, want one page", st.DirtyBytes)
	}
	g1b, err := MapManifest(dir3, man3, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer g1b.Close()
	// An in-process clone of g2, frozen with its own write.
	if _, _, err := g2.Freeze(""); err != nil {
		t.Fatal(err)
	}
	g3, err := g2.Clone()
	if err != nil {
		t.Fatal(err)
	}
	defer g3.Close()
	mustWrite(t, g3, 0x9000, "g3")

	want := map[string][]string{ // pages 0x1000, 0x2000, 0x3000, 0x9000
		"g0":  {"P0", "\x00\x00", "\x00\x00", "g0"},
		"g1":  {"g0", "P1", "g1", "g1"},
		"g1b": {"g0", "P1", "g1", "g1"},
		"g2":  {"g0", "g1", "g2", "g1"},
		"g3":  {"g0", "g1", "g2", "g3"},
	}
	got := map[string][]string{}
	for name, m := range map[string]*RAM{"g0": g0, "g1": g1, "g1b": g1b, "g2": g2, "g3": g3} {
		for _, off := range []uint64{0x1000, 0x2000, 0x3000, 0x9000} {
			got[name] = append(got[name], readStr(t, m, off, 2))
		}
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("memories (-want +got):\n%s", d)
	}
	if g1.Layers() != 3 {
		t.Errorf("g1 maps %d files, want base + 2 deltas", g1.Layers())
	}
}

func TestFreezeRefusesMemfd(t *testing.T) {
	m, err := New(2<<20, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, _, err := m.Freeze(t.TempDir()); err == nil {
		t.Fatal("froze a memfd into a folder")
	}
}

func TestWriteSparse(t *testing.T) {
	const size = 16 << 20
	g0, err := New(size, Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer g0.Close()
	mustWrite(t, g0, 0x1000, "base")
	mustWrite(t, g0, 0x2000, "gone")
	if _, _, err := g0.Freeze(""); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, g0, 0x2000, "\x00\x00\x00\x00") // private page, all zero now
	mustWrite(t, g0, 8<<20, "dirty")
	f, err := os.Create(filepath.Join(t.TempDir(), "full"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, err := g0.WriteSparse(f)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2*PageSize {
		t.Errorf("wrote %d bytes of data, want two pages", n)
	}
	full, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(full, g0.host) {
		t.Error("sparse file differs from memory")
	}
	var st unix.Stat_t
	unix.Fstat(int(f.Fd()), &st)
	if st.Blocks*512 > 1<<20 {
		t.Errorf("file uses %d bytes on disk: zero pages were written", st.Blocks*512)
	}
}

func TestMapManifestRefuses(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, n int) {
		if err := os.WriteFile(filepath.Join(dir, name), make([]byte, n), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("base", 2<<20)
	write("short", 2<<20-1)
	write("delta", 8192)
	os.Symlink("/etc/passwd", filepath.Join(dir, "link"))
	os.Mkdir(filepath.Join(dir, "sub"), 0o700)
	for _, tc := range []struct {
		name string
		man  Manifest
	}{
		{"short base", Manifest{Size: 2 << 20, Base: "short"}},
		{"missing", Manifest{Size: 2 << 20, Base: "nope"}},
		{"symlink", Manifest{Size: 2 << 20, Base: "link"}},
		{"directory", Manifest{Size: 2 << 20, Base: "sub"}},
		{"path", Manifest{Size: 2 << 20, Base: "../base"}},
		{"short delta", Manifest{Size: 2 << 20, Base: "base", Extents: []Extent{{0, 8192, "delta", 4096}}}},
		{"past end", Manifest{Size: 2 << 20, Base: "base", Extents: []Extent{{2<<20 - 4096, 8192, "delta", 0}}}},
	} {
		if m, err := MapManifest(dir, &tc.man, Options{}); err == nil {
			m.Close()
			t.Errorf("%s: mapped", tc.name)
		}
	}
}

func TestOverlay(t *testing.T) {
	e := func(off, n, fo uint64, l int) extent { return extent{off, n, fo, l} }
	for _, tc := range []struct {
		bottom, top, want []extent
	}{
		{nil, []extent{e(0, 10, 0, 1)}, []extent{e(0, 10, 0, 1)}},
		{[]extent{e(0, 10, 100, 1)}, []extent{e(3, 2, 0, 2)}, []extent{e(0, 3, 100, 1), e(3, 2, 0, 2), e(5, 5, 105, 1)}},
		{[]extent{e(0, 10, 100, 1), e(20, 5, 0, 1)}, []extent{e(5, 20, 0, 2)}, []extent{e(0, 5, 100, 1), e(5, 20, 0, 2)}},
		{[]extent{e(10, 5, 0, 1)}, []extent{e(0, 2, 0, 2), e(20, 2, 2, 2)}, []extent{e(0, 2, 0, 2), e(10, 5, 0, 1), e(20, 2, 2, 2)}},
		{[]extent{e(0, 4, 0, 1)}, []extent{e(4, 4, 4, 1)}, []extent{e(0, 8, 0, 1)}}, // continues: merged
	} {
		if d := cmp.Diff(tc.want, overlay(tc.bottom, tc.top), cmp.AllowUnexported(extent{})); d != "" {
			t.Errorf("overlay(%v, %v) (-want +got):\n%s", tc.bottom, tc.top, d)
		}
	}
}
