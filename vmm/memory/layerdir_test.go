package memory

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// twoFilesystems returns a folder on tmpfs (/dev/shm, where memory folders
// and forks live) and one on another filesystem (t.TempDir(), standing for
// the disk where snapshots are suspended to), both removed after the test.
func twoFilesystems(t *testing.T) (shm, disk string) {
	t.Helper()
	shm, err := os.MkdirTemp("/dev/shm", "boxd-memtest-")
	if err != nil {
		t.Skipf("needs /dev/shm: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(shm) })
	disk = t.TempDir()
	var a, b unix.Stat_t
	if err := unix.Stat(shm, &a); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(disk, &b); err != nil {
		t.Fatal(err)
	}
	if a.Dev == b.Dev {
		t.Skipf("%s and %s are one filesystem: no cross-filesystem link to test", shm, disk)
	}
	return shm, disk
}

func mkdir(t *testing.T, parent, name string) string {
	t.Helper()
	d := filepath.Join(parent, name)
	if err := os.Mkdir(d, 0o700); err != nil {
		t.Fatal(err)
	}
	return d
}

func entries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, filepath.Join(dir, e.Name()))
	}
	return out
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// A VM resumed from a snapshot on disk (memory folder on tmpfs, layer folder
// on disk) forks into a tmpfs folder after the snapshot is deleted; its fork
// forks again after the parent and the first fork folder are gone. The disk
// layer is never copied: every generation maps the same file.
func TestLayerDirAcrossFilesystems(t *testing.T) {
	const size = 4 << 20
	shm, disk := twoFilesystems(t)

	// Suspend to disk: the whole memory in one file.
	g0, err := New(size, Options{Dir: mkdir(t, shm, "mem0")})
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, g0, 0x1000, "g0")
	mustWrite(t, g0, 0x9000, "g0")
	snap := mkdir(t, disk, "snap")
	f, err := os.Create(filepath.Join(snap, "mem.0"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g0.WriteSparse(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	g0.Close()
	diskFile := inode(t, filepath.Join(snap, "mem.0"))

	// Resume, then the daemon deletes the snapshot.
	mem1, layers1 := mkdir(t, shm, "mem1"), mkdir(t, disk, "layers1")
	g1, err := MapManifest(snap, &Manifest{Size: size, Base: "mem.0"}, Options{Dir: mem1, LayerDir: layers1})
	if err != nil {
		t.Fatal(err)
	}
	defer g1.Close()
	if got := entries(t, layers1); len(got) != 1 || len(entries(t, mem1)) != 0 {
		t.Fatalf("after the restore the layer folder holds %q, the memory folder %q; want the disk layer in the layer folder", got, entries(t, mem1))
	}
	if err := os.RemoveAll(snap); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, g1, 0x2000, "g1")

	fork1 := mkdir(t, shm, "fork1")
	man1, _, err := g1.Freeze(fork1)
	if err != nil {
		t.Fatal(err)
	}
	if want := entries(t, layers1)[0]; man1.Base != want || !slices.Equal(man1.Files(), []string{want, "mem.1"}) {
		t.Fatalf("fork manifest names %q, want the parent's link %s and mem.1", man1.Files(), want)
	}
	enc, err := man1.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if man1, err = DecodeManifest(enc); err != nil {
		t.Fatal(err)
	}

	// The child links the disk layer into its own layer folder at once.
	mem2, layers2 := mkdir(t, shm, "mem2"), mkdir(t, disk, "layers2")
	g2, err := MapManifest(fork1, man1, Options{Dir: mem2, LayerDir: layers2})
	if err != nil {
		t.Fatal(err)
	}
	defer g2.Close()
	if got := entries(t, layers2); len(got) != 1 || inode(t, got[0]) != diskFile {
		t.Fatalf("child's layer folder holds %q, want one link to the suspended memory file", got)
	}
	if got := entries(t, mem2); len(got) != 1 || inode(t, got[0]) != inode(t, filepath.Join(fork1, "mem.1")) {
		t.Fatalf("child's memory folder holds %q, want one link to the fork's mem.1", got)
	}
	mustWrite(t, g1, 0x2000, "P1") // the parent after the fork

	// The parent and the fork folder go; the parent's links go with it.
	g1.Close()
	if err := os.RemoveAll(fork1); err != nil {
		t.Fatal(err)
	}
	if got := append(entries(t, layers1), entries(t, mem1)...); len(got) != 0 {
		t.Errorf("a closed RAM left links behind: %q", got)
	}

	mustWrite(t, g2, 0x3000, "g2")
	fork2 := mkdir(t, shm, "fork2")
	man2, _, err := g2.Freeze(fork2)
	if err != nil {
		t.Fatalf("fork of a fork of a VM resumed from disk: %v", err)
	}
	g3, err := MapManifest(fork2, man2, Options{Dir: mkdir(t, shm, "mem3"), LayerDir: mkdir(t, disk, "layers3")})
	if err != nil {
		t.Fatal(err)
	}
	defer g3.Close()
	g2.Close()
	if err := os.RemoveAll(fork2); err != nil {
		t.Fatal(err)
	}
	// g3 depends on nothing gone: it forks again.
	if _, _, err := g3.Freeze(mkdir(t, shm, "fork3")); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, off := range []uint64{0x1000, 0x2000, 0x3000, 0x9000} {
		got = append(got, readStr(t, g3, off, 2))
	}
	if d := cmp.Diff([]string{"g0", "g1", "g2", "g0"}, got); d != "" {
		t.Errorf("third generation's memory (-want +got):\n%s", d)
	}
}

// Without a layer folder a disk layer cannot be named by a fork on tmpfs:
// the freeze fails, says so, and leaves the RAM as it was.
func TestFreezeNeedsLayerDir(t *testing.T) {
	const size = 2 << 20
	shm, disk := twoFilesystems(t)
	if err := os.WriteFile(filepath.Join(disk, "mem.0"), []byte("base"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filepath.Join(disk, "mem.0"), size); err != nil {
		t.Fatal(err)
	}
	m, err := MapManifest(disk, &Manifest{Size: size, Base: "mem.0"}, Options{Dir: mkdir(t, shm, "mem")})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	mustWrite(t, m, 0x1000, "dirty")
	_, _, err = m.Freeze(mkdir(t, shm, "fork"))
	if err == nil || !strings.Contains(err.Error(), "layer folder") {
		t.Fatalf("Freeze = %v, want an error asking for a layer folder", err)
	}
	if got := readStr(t, m, 0, 4) + readStr(t, m, 0x1000, 5); got != "basedirty" {
		t.Errorf("after the failed freeze memory reads %q", got)
	}
}

// A manifest naming by absolute path anything but a regular file long
// enough is refused, and opening it has no effect: a FIFO does not block.
func TestMapManifestRefusesPaths(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, n int) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, make([]byte, n), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	base := write("base", 2<<20)
	short := write("short", 2<<20-4096)
	link := filepath.Join(dir, "link")
	if err := os.Symlink(base, link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	sub := mkdir(t, dir, "sub")
	for _, tc := range []struct {
		name, path string
		is         error
	}{
		{"symlink", link, ErrManifest},
		{"fifo", fifo, ErrManifest},
		{"directory", sub, ErrManifest},
		{"character device", "/dev/null", ErrManifest},
		{"short", short, ErrManifest},
		{"missing", filepath.Join(dir, "nope"), os.ErrNotExist},
	} {
		for _, man := range []Manifest{
			{Size: 2 << 20, Base: tc.path},
			{Size: 2 << 20, Base: "base", Extents: []Extent{{0, 2 << 20, tc.path, 0}}},
		} {
			m, err := MapManifest(dir, &man, Options{})
			if err == nil {
				m.Close()
				t.Errorf("%s: mapped %+v", tc.name, man)
				continue
			}
			if !errors.Is(err, tc.is) {
				t.Errorf("%s: %v, want %v", tc.name, err, tc.is)
			}
		}
	}
	// The same file by name in the folder and by path: both fine.
	m, err := MapManifest(dir, &Manifest{Size: 2 << 20, Base: "base", Extents: []Extent{{0, 4096, base, 0}}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
}

// A VM forks again after its earlier fork folders are deleted (and no child
// holds their files): the RAM keeps names of its own for its layers.
func TestRefreezeAfterFoldersGone(t *testing.T) {
	const size = 2 << 20
	memDir := t.TempDir()
	m, err := New(size, Options{Dir: memDir})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var dir string
	for i, s := range []string{"a", "b", "c"} {
		mustWrite(t, m, uint64(i+1)*0x1000, s)
		dir = t.TempDir()
		if _, _, err := m.Freeze(dir); err != nil {
			t.Fatalf("freeze %d: %v", i, err)
		}
		if i < 2 {
			os.RemoveAll(dir)
		}
	}
	man, err := DecodeManifest(mustEncode(t, m.manifest(nil)))
	if err != nil {
		t.Fatal(err)
	}
	c, err := MapManifest(dir, man, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := readStr(t, c, 0x1000, 1) + readStr(t, c, 0x2000, 1) + readStr(t, c, 0x3000, 1); got != "abc" {
		t.Errorf("last fork reads %q, want abc", got)
	}
	m.Close()
	if got := entries(t, memDir); len(got) != 0 {
		t.Errorf("a closed RAM left links behind: %q", got)
	}
}

func mustEncode(t *testing.T, m *Manifest) []byte {
	t.Helper()
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
