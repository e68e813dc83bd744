package storage

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/boxd-dev/boxd/virtio/blk"
)

// writeImage writes a raw image of size bytes: random data with a hole in
// the middle. It is not ext4, so bases are not resized.
func writeImage(t testing.TB, path string, size int64, seed uint64) []byte {
	t.Helper()
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, 0))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	clear(b[size/4 : size/2])
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Leave the zeros a hole, as an image built sparse would.
	for _, r := range [][2]int64{{0, size / 4}, {size / 2, size}} {
		if _, err := f.WriteAt(b[r[0]:r[1]], r[0]); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// readDisk reads a whole disk through the spec CreateDisk returned, as the
// monitor would.
func readDisk(t *testing.T, spec string) []byte {
	t.Helper()
	d, err := blk.OpenDisk(spec, true)
	if err != nil {
		t.Fatalf("OpenDisk(%s): %v", spec, err)
	}
	defer d.(io.Closer).Close()
	b := make([]byte, d.Size())
	if _, err := d.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return b
}

func wantDisk(t *testing.T, spec string, image []byte, size int64) {
	t.Helper()
	got := readDisk(t, spec)
	if int64(len(got)) != size {
		t.Fatalf("%s is %d bytes, want %d", spec, len(got), size)
	}
	want := make([]byte, size)
	copy(want, image)
	if !bytes.Equal(got, want) {
		t.Fatalf("%s does not read as the image followed by zeros", spec)
	}
}

func TestCreateDeleteCOW(t *testing.T) {
	dir := t.TempDir()
	image := filepath.Join(dir, "image.raw")
	content := writeImage(t, image, 4<<20, 1)
	m, err := New(Config{Dir: filepath.Join(dir, "disks"), Image: image, Mode: COW, ClusterSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const id, id2 = "00000000000a", "00000000000b"
	spec, err := m.CreateDisk(ctx, id, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	if want := "cow:" + filepath.Join(dir, "disks", id+".cow"); spec != want {
		t.Errorf("spec %q, want %q", spec, want)
	}
	wantDisk(t, spec, content, 64<<20)

	if _, err := m.CreateDisk(ctx, id, 64<<20); !errors.Is(err, fs.ErrExist) {
		t.Errorf("second CreateDisk: %v, want fs.ErrExist", err)
	}
	if _, err := m.CreateDisk(ctx, id2, 1<<20); err == nil || !strings.Contains(err.Error(), "smaller than the base image") {
		t.Errorf("disk smaller than the image: %v", err)
	}
	// A second disk of the same size shares the base; a size not in MiB is
	// rounded up.
	spec2, err := m.CreateDisk(ctx, id2, 64<<20-100)
	if err != nil {
		t.Fatal(err)
	}
	bases, _ := os.ReadDir(filepath.Join(dir, "disks", basesDir))
	if len(bases) != 1 {
		t.Errorf("%d bases for two disks of one size, want 1", len(bases))
	}

	// Writes to one disk stay in it.
	d, err := blk.OpenDisk(spec2, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(bytes.Repeat([]byte{7}, 8192), 4096); err != nil {
		t.Fatal(err)
	}
	d.(io.Closer).Close()
	wantDisk(t, spec, content, 64<<20)
	if got := readDisk(t, spec2); got[4096] != 7 || got[12287] != 7 {
		t.Errorf("write to %s lost across reopen", spec2)
	}

	// Replacing the image leaves existing disks intact.
	newContent := writeImage(t, image+".new", 4<<20, 2)
	if err := os.Rename(image+".new", image); err != nil {
		t.Fatal(err)
	}
	wantDisk(t, spec, content, 64<<20)
	if err := m.DeleteDisk(ctx, id); err != nil {
		t.Fatal(err)
	}
	spec, err = m.CreateDisk(ctx, id, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	wantDisk(t, spec, newContent, 64<<20)

	for range 2 { // idempotent
		if err := m.DeleteDisk(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "disks", id+".cow")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("disk survived DeleteDisk: %v", err)
	}
}

func TestCreateDiskRejects(t *testing.T) {
	dir := t.TempDir()
	image := filepath.Join(dir, "image.raw")
	writeImage(t, image, 1<<20, 1)
	m, err := New(Config{Dir: dir, Image: image})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"", "../etc/pass", "0123456789AB", "0123456789abc"} {
		if _, err := m.CreateDisk(context.Background(), id, 0); err == nil {
			t.Errorf("CreateDisk(%q) succeeded", id)
		}
		if err := m.DeleteDisk(context.Background(), id); err == nil {
			t.Errorf("DeleteDisk(%q) succeeded", id)
		}
	}
	if _, err := New(Config{Dir: dir, Image: filepath.Join(dir, "missing")}); err == nil {
		t.Errorf("New with a missing image succeeded")
	}
}

func TestAutoMode(t *testing.T) {
	dir := t.TempDir()
	image := filepath.Join(dir, "image.raw")
	content := writeImage(t, image, 1<<20, 3)
	m, err := New(Config{Dir: dir, Image: image})
	if err != nil {
		t.Fatal(err)
	}
	spec, err := m.CreateDisk(context.Background(), "0000000000aa", 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("state directory %s: disk %s", dir, spec)
	wantDisk(t, spec, content, 8<<20)
}
