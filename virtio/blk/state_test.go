package blk_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/boxd-dev/boxd/virtio/blk"
	"github.com/boxd-dev/boxd/virtio/mmio"
	"github.com/boxd-dev/boxd/virtio/virtiotest"
)

// A write completes before the pause; a read kicked while paused waits (the
// kick is dropped, the worker stopped); the state restored into a fresh
// device over the same disk and memory serves the read on Resume, and the
// queue goes on.
func TestSaveRestoreContinues(t *testing.T) {
	e := newEnv(t, 1<<20, blk.Config{}, allFeatures)
	data := pattern(4096, 7)
	if r := e.do1(request{typ: blk.TypeOut, sector: 8, out: data}); r.status != blk.StatusOK {
		t.Fatalf("write status %d", r.status)
	}
	e.tr.Pause()
	_, collect := e.add(request{typ: blk.TypeIn, sector: 8, in: 4096})
	e.q.Kick()
	if used, _ := e.q.Reap(); len(used) != 0 {
		t.Fatalf("served while paused: %v", used)
	}
	blob, err := e.tr.SaveState()
	if err != nil {
		t.Fatal(err)
	}

	f, err := blk.OpenFile(e.path, false)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := blk.New(f, blk.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	irq := virtiotest.NewInterrupt()
	tr, err := mmio.New(dev, e.mem, irq)
	if err != nil {
		t.Fatal(err)
	}
	tr.Pause()
	if err := tr.RestoreState(blob); err != nil {
		t.Fatal(err)
	}
	if again, err := tr.SaveState(); err != nil || !bytes.Equal(again, blob) {
		t.Errorf("save → restore → save differs (%v)", err)
	}
	e.q.Notify = func() { virtiotest.WriteReg(tr, mmio.RegQueueNotify, 0) }
	e.tr, e.irq, e.dev = tr, irq, dev
	tr.Resume()
	used, err := e.q.Wait(irq, 1, timeout)
	if err != nil {
		t.Fatal(err)
	}
	if r := collect(used[0]); r.status != blk.StatusOK || !bytes.Equal(r.in, data) {
		t.Errorf("read kicked while paused: status %d, data equal %v", r.status, bytes.Equal(r.in, data))
	}
	if r := e.do1(request{typ: blk.TypeIn, sector: 8, in: 512}); r.status != blk.StatusOK || !bytes.Equal(r.in, data[:512]) {
		t.Errorf("read after restore: status %d", r.status)
	}
}

// A state saved for another disk size or mode is refused.
func TestRestoreOtherDisk(t *testing.T) {
	e := newEnv(t, 1<<20, blk.Config{}, allFeatures)
	e.tr.Pause()
	blob, err := e.tr.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		size int64
		ro   bool
		want string
	}{
		{"bigger", 2 << 20, false, "2048 sectors, this one 4096"},
		{"read-only", 1 << 20, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "d")
			if err := os.WriteFile(path, make([]byte, tc.size), 0o600); err != nil {
				t.Fatal(err)
			}
			f, err := blk.OpenFile(path, tc.ro)
			if err != nil {
				t.Fatal(err)
			}
			dev, err := blk.New(f, blk.Config{ReadOnly: tc.ro})
			if err != nil {
				t.Fatal(err)
			}
			defer dev.Close()
			tr, err := mmio.New(dev, e.mem, virtiotest.NewInterrupt())
			if err != nil {
				t.Fatal(err)
			}
			tr.Pause()
			err = tr.RestoreState(blob)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("RestoreState = %v, want an error with %q", err, tc.want)
			}
			if s := virtiotest.ReadReg(tr, mmio.RegStatus); s != 0 {
				t.Errorf("status %#x after a refused restore", s)
			}
		})
	}
}

func FuzzRestoreState(f *testing.F) {
	e := newEnv(f, 1<<20, blk.Config{}, allFeatures)
	f.Add(mustSave(f, e.dev))
	f.Add([]byte{1, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := e.dev.RestoreState(b); err == nil && !bytes.Equal(b, mustSave(t, e.dev)) {
			t.Fatalf("accepted %x, not what the device saves", b)
		}
	})
}

func mustSave(t testing.TB, d *blk.Device) []byte {
	t.Helper()
	b, err := d.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
