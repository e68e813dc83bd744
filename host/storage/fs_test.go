package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/boxd-dev/boxd/internal/loopfs"
	"github.com/boxd-dev/boxd/virtio/blk"
	"golang.org/x/sys/unix"
)

func needTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// xfsDir mounts a fresh 512 MiB XFS filesystem (reflink on).
func xfsDir(t testing.TB) string { return loopfs.XFS(t, 512<<20) }

func freeBytes(t testing.TB, dir string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bfree) * st.Bsize
}

func TestReflinkOnXFS(t *testing.T) {
	mnt := xfsDir(t)
	image := filepath.Join(t.TempDir(), "image.raw") // on another filesystem
	content := writeImage(t, image, 16<<20, 4)
	m, err := New(Config{Dir: filepath.Join(mnt, "disks"), Image: image})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// The first disk builds the base: a copy of the image's data.
	first, err := m.CreateDisk(ctx, "0000000000f0", 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(first, blk.CowPrefix) {
		t.Fatalf("disk on XFS is %s, want a reflinked raw file", first)
	}
	before := freeBytes(t, mnt)
	var specs []string
	for _, id := range []string{"0000000000f1", "0000000000f2", "0000000000f3"} {
		spec, err := m.CreateDisk(ctx, id, 64<<20)
		if err != nil {
			t.Fatal(err)
		}
		specs = append(specs, spec)
		wantDisk(t, spec, content, 64<<20)
	}
	used := before - freeBytes(t, mnt)
	t.Logf("three 64 MiB disks from a 16 MiB image (12 MiB of data): %d KiB used", used>>10)
	if used > 1<<20 {
		t.Errorf("three reflinked disks used %d bytes, want under 1 MiB: the image was copied", used)
	}
	// The filesystem unshares on write: the others keep the image's data.
	f, err := os.OpenFile(specs[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{0x5a}, 4096), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	wantDisk(t, specs[1], content, 64<<20)
	for _, id := range []string{"0000000000f0", "0000000000f1", "0000000000f2", "0000000000f3"} {
		if err := m.DeleteDisk(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(mnt, "disks"))
	if len(entries) != 1 || entries[0].Name() != basesDir {
		t.Errorf("after deleting every disk, %v remain, want only %s", entries, basesDir)
	}
}

// mkExt4 builds an ext4 image of size bytes holding /hello.
func mkExt4(t *testing.T, path string, size int64) {
	t.Helper()
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "hello"), []byte("hello from the base\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	run(t, "mkfs.ext4", "-q", "-F", "-d", root, path)
}

// extSize reads an ext filesystem's size from its superblock.
func extSize(t *testing.T, r io.ReaderAt) int64 {
	t.Helper()
	sb := make([]byte, 1024)
	if _, err := r.ReadAt(sb, 1024); err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	blocks := int64(le.Uint32(sb[4:])) | int64(le.Uint32(sb[0x150:]))<<32
	return blocks << (10 + le.Uint32(sb[24:]))
}

func TestBaseGrowsExt4(t *testing.T) {
	needTools(t, "mkfs.ext4", "resize2fs", "e2fsck", "debugfs")
	dir := t.TempDir()
	image := filepath.Join(dir, "root.ext4")
	mkExt4(t, image, 32<<20)
	m, err := New(Config{Dir: filepath.Join(dir, "disks"), Image: image, Mode: COW})
	if err != nil {
		t.Fatal(err)
	}
	spec, err := m.CreateDisk(context.Background(), "0000000000e4", 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	d, err := blk.OpenDisk(spec, true)
	if err != nil {
		t.Fatal(err)
	}
	defer d.(io.Closer).Close()
	if got := extSize(t, d); got != 1<<30 {
		t.Errorf("the disk's filesystem is %d bytes, want 1 GiB", got)
	}
	bases, err := filepath.Glob(filepath.Join(dir, "disks", basesDir, "*.img"))
	if err != nil || len(bases) != 1 {
		t.Fatalf("bases %v, %v", bases, err)
	}
	run(t, "e2fsck", "-fn", bases[0])
	if out := run(t, "debugfs", "-R", "cat /hello", bases[0]); !strings.Contains(out, "hello from the base") {
		t.Errorf("/hello in the grown base: %q", out)
	}
	// The image itself is untouched.
	img, err := os.Open(image)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	if got := extSize(t, img); got != 32<<20 {
		t.Errorf("the image's filesystem is now %d bytes, want it untouched (32 MiB)", got)
	}
}

// BenchmarkCreateDisk measures what the disk adds to a VM's start, once
// the base for its size exists: a COW overlay on ext4, a reflink on XFS.
func BenchmarkCreateDisk(b *testing.B) {
	modes := []struct {
		name string
		dir  func(b *testing.B) string
	}{
		{"cow", func(b *testing.B) string { return b.TempDir() }},
		{"reflink-xfs", func(b *testing.B) string { return xfsDir(b) }},
	}
	for _, mode := range modes {
		b.Run(mode.name, func(b *testing.B) {
			dir := mode.dir(b)
			image := filepath.Join(b.TempDir(), "image.raw")
			writeImage(b, image, 8<<20, 1)
			m, err := New(Config{Dir: filepath.Join(dir, "disks"), Image: image})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			const id = "0000000000bb"
			if _, err := m.CreateDisk(ctx, id, 100<<30); err != nil { // builds the base
				b.Fatal(err)
			}
			b.ResetTimer()
			for range b.N {
				if err := m.DeleteDisk(ctx, id); err != nil {
					b.Fatal(err)
				}
				if _, err := m.CreateDisk(ctx, id, 100<<30); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
