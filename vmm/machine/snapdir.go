package machine

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/boxd-dev/boxd/vmm/memory"
	"github.com/boxd-dev/boxd/vmm/snapshot"
)

// A snapshot directory holds everything a restore needs:
//
//	DIR/state    snapshot state file, format version 2, lz4 (docs/snapshot-format.md)
//	DIR/memory   memory manifest: the layer files below and where they map
//	DIR/mem.N    layer files (mem.0 is the base); hard links to files other
//	             snapshots and VMs share, never written after the save
//
// A layer on another filesystem than DIR (restored from a snapshot on
// disk) is not in DIR: the manifest names the saving VM's own link to it
// in its Config.LayerDir by absolute path, so DIR is only valid while that
// VM lives; a VM restored from DIR links the file into its own LayerDir at
// once, and from then on depends on neither.
//
// The state file is written last, so a directory with a state file is
// complete. Restores only read it, so any number of VMs restore from one
// directory, and it may be deleted once they run if they were restored with
// a memory folder and a layer folder (their layers are linked there).
const (
	StateFile    = "state"
	ManifestFile = "memory"
	// maxManifestFile bounds the manifest read (the encoding's own limits
	// keep a valid one well under it).
	maxManifestFile = 1 << 20
)

// SaveStats says what a save wrote and where its time went.
type SaveStats struct {
	Snapshot   time.Duration // vCPU, VM and device state read
	Memory     time.Duration // memory frozen or written
	Files      time.Duration // manifest and state written
	StateBytes int           // state file size (compressed)
	// MemoryBytes is the guest memory written: SaveFork the private pages
	// since the last freeze (0 for a first fork), SaveFull every non-zero page.
	MemoryBytes uint64
	Freeze      memory.FreezeStats // SaveFork only
}

// SaveFork writes into dir (created if missing, must not hold a snapshot) a
// snapshot of the paused machine m from which any number of children can be
// restored (RestoreDir), sharing m's memory copy-on-write. m's RAM must be
// in a memory folder (Config.MemDir) on the same filesystem as dir; a layer
// on another filesystem (m was restored from a snapshot on disk) is named
// by m's own link in Config.LayerDir, so children must restore from dir
// while m lives, and SaveFork fails if m has no layer folder. The cost
// follows what m wrote since its last fork, not its size: the first fork of a
// fresh machine links its memory file into dir and remaps m private in place;
// a later fork (or a fork of a restored child) writes only m's private pages
// to a new layer. m stays paused; the caller resumes it. On error, dir may
// hold some files: the caller removes it.
func SaveFork(m *Machine, dir string) (SaveStats, error) {
	return save(m, dir, func() (*memory.Manifest, SaveStats, error) {
		man, fs, err := m.ram.Freeze(dir)
		return man, SaveStats{Freeze: fs, MemoryBytes: fs.DirtyBytes}, err
	})
}

// SaveFull writes into dir a snapshot of the paused machine m that depends on
// no other file: its whole memory as one sparse file (zero pages are holes),
// synced to storage. It is for suspend to disk; m is left as it was, so the
// caller may resume it or close it to release its memory.
func SaveFull(m *Machine, dir string) (SaveStats, error) {
	return save(m, dir, func() (*memory.Manifest, SaveStats, error) {
		f, err := os.OpenFile(filepath.Join(dir, "mem.0"), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, SaveStats{}, fmt.Errorf("machine: save: %w", err)
		}
		defer f.Close()
		n, err := m.ram.WriteSparse(f)
		if err == nil {
			err = f.Sync()
		}
		if err != nil {
			return nil, SaveStats{}, fmt.Errorf("machine: save: memory: %w", err)
		}
		return &memory.Manifest{Size: m.ram.Size(), Base: "mem.0"}, SaveStats{MemoryBytes: n}, nil
	})
}

func save(m *Machine, dir string, mem func() (*memory.Manifest, SaveStats, error)) (SaveStats, error) {
	if st := m.State(); st != Paused {
		return SaveStats{}, fmt.Errorf("%w: save in state %v (pause first)", ErrState, st)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return SaveStats{}, fmt.Errorf("machine: save: %w", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, StateFile)); err == nil {
		return SaveStats{}, fmt.Errorf("machine: save: %s already holds a snapshot", dir)
	}
	t0 := time.Now()
	st, err := m.Snapshot()
	if err != nil {
		return SaveStats{}, err
	}
	t1 := time.Now()
	man, stats, err := mem()
	if err != nil {
		return stats, err
	}
	t2 := time.Now()
	stats.Snapshot, stats.Memory = t1.Sub(t0), t2.Sub(t1)
	mb, err := man.Encode()
	if err != nil {
		return stats, fmt.Errorf("machine: save: %w", err)
	}
	sb, err := snapshot.EncodeCompressed(st)
	if err != nil {
		return stats, err
	}
	if err := writeNew(filepath.Join(dir, ManifestFile), mb); err != nil {
		return stats, err
	}
	if err := writeNew(filepath.Join(dir, StateFile), sb); err != nil {
		return stats, err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	stats.Files, stats.StateBytes = time.Since(t2), len(sb)
	return stats, nil
}

// writeNew creates path (which must not exist) holding b, synced.
func writeNew(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("machine: save: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("machine: save %s: %w", path, err)
	}
	return nil
}

// RestoreDir builds a machine from a snapshot directory: the state and the
// manifest are read and validated, the memory layers mapped MAP_PRIVATE
// (pages load lazily and stay shared with every other VM restored from the
// same files), and the state restored (Restore). A corrupt, foreign or
// incomplete directory is refused before any VM is created. Each layer is
// also linked into cfg.MemDir or, on another filesystem (a snapshot on
// disk, or a layer a fork names by absolute path), into cfg.LayerDir, so
// the machine can be forked again after dir (or the VM a fork came from)
// is gone. The returned machine is Created: Start runs it.
func RestoreDir(cfg Config, dir string) (*Machine, error) {
	st, man, err := ReadDir(dir)
	if err != nil {
		return nil, err
	}
	ram, err := memory.MapManifest(dir, man, cfg.memOptions())
	if err != nil {
		return nil, fmt.Errorf("machine: restore %s: %w", dir, err)
	}
	return Restore(cfg, st, ram)
}

// memOptions says where the machine's RAM lives and keeps its layers.
func (c Config) memOptions() memory.Options {
	return memory.Options{Dir: c.MemDir, LayerDir: c.LayerDir}
}

// ReadDir reads and validates a snapshot directory's state and manifest,
// and checks they agree; it maps nothing.
func ReadDir(dir string) (*snapshot.State, *memory.Manifest, error) {
	sb, err := readBounded(filepath.Join(dir, StateFile), snapshot.HeaderSize+snapshot.MaxBodySize)
	if err != nil {
		return nil, nil, fmt.Errorf("machine: restore: %w", err)
	}
	st, err := snapshot.Decode(sb)
	if err != nil {
		return nil, nil, fmt.Errorf("machine: restore %s: %w", dir, err)
	}
	mb, err := readBounded(filepath.Join(dir, ManifestFile), maxManifestFile)
	if err != nil {
		return nil, nil, fmt.Errorf("machine: restore: %w", err)
	}
	man, err := memory.DecodeManifest(mb)
	if err != nil {
		return nil, nil, fmt.Errorf("machine: restore %s: %w", dir, err)
	}
	if man.Size != st.MemSize {
		return nil, nil, fmt.Errorf("machine: restore %s: %w: manifest maps %d bytes, state is for %d", dir, memory.ErrManifest, man.Size, st.MemSize)
	}
	return st, man, nil
}

// readBounded reads a whole file of at most limit bytes.
func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, errors.New(path + ": larger than any valid file")
	}
	return b, nil
}
