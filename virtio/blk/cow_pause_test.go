package blk_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/boxd-dev/boxd/virtio/blk"
)

// Pausing a device over a copy-on-write overlay writes the overlay's
// cluster map out: a copy of the overlay file taken while the machine is
// paused (a fork's disk, a suspend) holds what the guest wrote.
func TestPauseWritesCOWMap(t *testing.T) {
	dir := t.TempDir()
	base, overlay := filepath.Join(dir, "base.img"), filepath.Join(dir, "disk.cow")
	if err := os.WriteFile(base, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := blk.CreateCOW(overlay, base, 1<<20, 0); err != nil {
		t.Fatal(err)
	}
	c, err := blk.OpenCOW(overlay, false)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvOn(t, c, blk.Config{}, allFeatures)
	data := pattern(4096, 7)
	if r := e.do1(request{typ: blk.TypeOut, sector: 8, out: data}); r.status != blk.StatusOK {
		t.Fatalf("write status %d", r.status)
	}
	e.dev.Pause()
	defer e.dev.Resume()

	// What a fork's disk clone does while the parent is paused: copy the
	// overlay file, then open the copy on its own.
	copyPath := filepath.Join(dir, "copy.cow")
	b, err := os.ReadFile(overlay)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(copyPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cp, err := blk.OpenCOW(copyPath, true)
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Close()
	got := make([]byte, len(data))
	if _, err := cp.ReadAt(got, 8*512); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Error("a copy of the overlay taken while paused misses the guest's write")
	}
}
