package storage

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/boxd-dev/boxd/virtio/blk"
)

// writeDisk writes b at off through the disk spec, as a monitor would, and
// closes it (which flushes an overlay's bitmap).
func writeDisk(t *testing.T, spec string, off int64, b []byte) {
	t.Helper()
	d, err := blk.OpenDisk(spec, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	if err := d.(io.Closer).Close(); err != nil {
		t.Fatal(err)
	}
}

func layersIn(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), layerPrefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

func TestCloneCOW(t *testing.T) {
	dir := t.TempDir()
	image := filepath.Join(dir, "image.raw")
	content := writeImage(t, image, 4<<20, 3)
	disks := filepath.Join(dir, "disks")
	m, err := New(Config{Dir: disks, Image: image, Mode: COW, ClusterSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const src, live, gold1, gold2, gold3 = "0000000000a0", "0000000000a1", "0000000000a2", "0000000000a3", "0000000000a4"
	spec, err := m.CreateDisk(ctx, src, 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	sevens := bytes.Repeat([]byte{7}, 8192)
	writeDisk(t, spec, 4096, sevens)
	want := readDisk(t, spec)
	if !bytes.Equal(want[4096:12288], sevens) || !bytes.Equal(want[:4096], content[:4096]) {
		t.Fatal("the source does not read back what was written over the image")
	}

	// A live source is copied: its written clusters, not the whole disk.
	c, err := m.CloneDisk(ctx, src, live, true)
	if err != nil {
		t.Fatal(err)
	}
	if c.Method != MethodCopy || c.CopiedBytes <= 0 || c.CopiedBytes >= 16<<20 {
		t.Errorf("live clone: %+v, want a copy of less than the disk", c)
	}
	if !bytes.Equal(readDisk(t, c.Path), want) {
		t.Error("the live copy differs from its source")
	}

	// A source without a monitor is frozen into a layer under both.
	c, err = m.CloneDisk(ctx, src, gold1, false)
	if err != nil {
		t.Fatal(err)
	}
	if c.Method != MethodCOWLayer || c.CopiedBytes != 0 {
		t.Errorf("golden clone: %+v, want cow-layer", c)
	}
	if l := layersIn(t, disks); len(l) != 1 {
		t.Fatalf("layers after one golden clone: %v, want 1", l)
	}
	for _, s := range []string{spec, c.Path} {
		if !bytes.Equal(readDisk(t, s), want) {
			t.Errorf("%s differs from the source as it was", s)
		}
	}
	// The source and its copy diverge.
	writeDisk(t, c.Path, 0, []byte("child"))
	writeDisk(t, spec, 0, []byte("paren"))
	if got := readDisk(t, c.Path); string(got[:5]) != "child" || !bytes.Equal(got[4096:12288], sevens) {
		t.Error("the copy lost its own write or the source's earlier ones")
	}
	if got := readDisk(t, spec); string(got[:5]) != "paren" {
		t.Error("the source lost its write")
	}

	// The source wrote since: a second layer. Then, unchanged, a third
	// clone shares the source's base without freezing again.
	if _, err := m.CloneDisk(ctx, src, gold2, false); err != nil {
		t.Fatal(err)
	}
	if _, err := m.CloneDisk(ctx, src, gold3, false); err != nil {
		t.Fatal(err)
	}
	if l := layersIn(t, disks); len(l) != 2 {
		t.Errorf("layers after a clone of an unchanged source: %v, want still 2", l)
	}
	if got := readDisk(t, blk.CowPrefix+m.cowPath(gold3)); string(got[:5]) != "paren" {
		t.Error("the third copy does not see the source's write")
	}
	if _, err := m.CloneDisk(ctx, src, gold3, false); !errors.Is(err, fs.ErrExist) {
		t.Errorf("clone onto an existing disk: %v, want fs.ErrExist", err)
	}

	// Layers go with the last overlay built on them, not before.
	for _, id := range []string{src, gold2, gold3} {
		if err := m.DeleteDisk(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if l := layersIn(t, disks); len(l) != 1 {
		t.Errorf("layers while gold1 lives: %v, want its one", l)
	}
	if got := readDisk(t, blk.CowPrefix+m.cowPath(gold1)); string(got[:5]) != "child" {
		t.Error("gold1 lost its content when the others were deleted")
	}
	for _, id := range []string{gold1, live} {
		if err := m.DeleteDisk(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if l := layersIn(t, disks); len(l) != 0 {
		t.Errorf("layers left after every disk was deleted: %v", l)
	}
}

func TestCloneRawReflink(t *testing.T) {
	dir := t.TempDir()
	image := filepath.Join(dir, "image.raw")
	writeImage(t, image, 4<<20, 4)
	m, err := New(Config{Dir: filepath.Join(dir, "disks"), Image: image})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	spec, err := m.CreateDisk(ctx, "0000000000b0", 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(spec, blk.CowPrefix) {
		t.Skip("the test folder's filesystem cannot reflink: raw disks are not made here")
	}
	c, err := m.CloneDisk(ctx, "0000000000b0", "0000000000b1", true)
	if err != nil {
		t.Fatal(err)
	}
	if c.Method != MethodReflink {
		t.Errorf("clone of a reflinked disk: %+v", c)
	}
	if !bytes.Equal(readDisk(t, c.Path), readDisk(t, spec)) {
		t.Error("the reflinked copy differs")
	}
}
