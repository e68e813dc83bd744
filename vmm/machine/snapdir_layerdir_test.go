package machine

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// A VM suspended to disk, resumed with its memory folder on tmpfs and its
// layer folder on disk, forks into a tmpfs folder after its snapshot is
// deleted, and the fork's child continues the computation exactly after the
// parent and the fork folder are gone too: nothing relies on the snapshot's
// path, and the disk layer is linked, never copied.
func TestForkOfVMResumedFromDisk(t *testing.T) {
	for _, mode := range []string{"RestoreDir", "Standby.RestoreDir"} {
		t.Run(mode, func(t *testing.T) { testForkOfResumed(t, mode) })
	}
}

func testForkOfResumed(t *testing.T, mode string) {
	const n = 1 << 28
	const memMiB = 32
	shm, err := os.MkdirTemp("/dev/shm", "boxd-machinetest-")
	if err != nil {
		t.Skipf("needs /dev/shm: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(shm) })
	disk := t.TempDir()
	var a, b unix.Stat_t
	if unix.Stat(shm, &a) != nil || unix.Stat(disk, &b) != nil || a.Dev == b.Dev {
		t.Skipf("%s and %s are not two filesystems: no cross-filesystem layer to test", shm, disk)
	}
	dir := func(parent, name string) string {
		d := filepath.Join(parent, name)
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		return d
	}
	restore := func(cfg Config, snap string) *Machine {
		t.Helper()
		var m *Machine
		var err error
		if mode == "Standby.RestoreDir" {
			cfg.CPUs, cfg.MemMiB = 1, memMiB
			sb, serr := NewStandby(cfg)
			if serr != nil {
				t.Fatal(serr)
			}
			defer sb.Close() // nothing once used
			m, err = sb.RestoreDir(snap)
		} else {
			m, err = RestoreDir(cfg, snap)
		}
		if err != nil {
			t.Fatal(err)
		}
		return m
	}

	// Suspend to disk.
	orig := newRing3Cfg(t, Config{CPUs: 1, MemMiB: memMiB, MemDir: dir(shm, "mem0")}, memCounter(n))
	rep := attach(t, orig)
	if err := orig.Start(); err != nil {
		t.Fatal(err)
	}
	wait(t, "original", orig, rep.first)
	if err := orig.Pause(); err != nil {
		t.Fatal(err)
	}
	snap := filepath.Join(disk, "snapshots", "s1")
	if _, err := SaveFull(orig, snap); err != nil {
		t.Fatal(err)
	}
	stopAndClose(t, orig)
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(snap, "mem.0"), &st); err != nil {
		t.Fatal(err)
	}
	snapIno := st.Ino

	// Resume; the daemon deletes the snapshot once the VM runs.
	layers1 := dir(disk, "layers1")
	r := restore(Config{MemDir: dir(shm, "mem1"), LayerDir: layers1}, snap)
	rrep := attach(t, r)
	if err := os.RemoveAll(snap); err != nil {
		t.Fatal(err)
	}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	wait(t, "resumed", r, rrep.first)
	if err := r.Pause(); err != nil {
		t.Fatal(err)
	}
	at := ramU64(t, r, counterAddr)

	// Fork into tmpfs; the child restores, then the parent and the fork
	// folder go.
	fork := filepath.Join(shm, "fork")
	if _, err := SaveFork(r, fork); err != nil {
		t.Fatalf("fork of a VM resumed from disk: %v", err)
	}
	layers2 := dir(disk, "layers2")
	c := restore(Config{MemDir: dir(shm, "mem2"), LayerDir: layers2}, fork)
	t.Cleanup(func() { stopAndClose(t, c) })
	stopAndClose(t, r)
	if err := os.RemoveAll(fork); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(layers1); len(ents) != 0 {
		t.Errorf("the closed parent left %d links in its layer folder", len(ents))
	}
	ents, _ := os.ReadDir(layers2)
	if len(ents) != 1 {
		t.Fatalf("child's layer folder holds %d files, want its link to the suspended memory", len(ents))
	}
	if err := unix.Stat(filepath.Join(layers2, ents[0].Name()), &st); err != nil || st.Ino != snapIno {
		t.Errorf("child's disk layer is not the suspended memory file (%v): copied?", err)
	}

	crep := attach(t, c)
	if got := ramU64(t, c, counterAddr); got != at {
		t.Fatalf("child starts its count at %d, parent paused at %d", got, at)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	wait(t, "child", c, crep.first)
	// The child forks in turn: its chain depends on nothing gone.
	if err := c.Pause(); err != nil {
		t.Fatal(err)
	}
	if _, err := SaveFork(c, filepath.Join(shm, "fork2")); err != nil {
		t.Fatalf("fork of the child: %v", err)
	}
	if err := c.Resume(); err != nil {
		t.Fatal(err)
	}
	wait(t, "child", c, crep.done)
	res, progress := crep.snapshot()
	if res != n {
		t.Errorf("child counted to %d, want %d", res, n)
	}
	if want := (at | 0xfffff) + 1; len(progress) == 0 || progress[0] != want {
		t.Errorf("child's first progress %v, want %d (forked at %d)", progress[:min(1, len(progress))], want, at)
	}
}
