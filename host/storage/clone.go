package storage

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/boxd-dev/boxd/host/daemon"
	"github.com/boxd-dev/boxd/virtio/blk"
)

// Clone methods (daemon.DiskClone.Method).
const (
	MethodReflink  = "reflink"
	MethodCOWLayer = "cow-layer"
	MethodCopy     = "copy"
)

// layerPrefix names frozen overlays shared by forks: layer-SRCID-N.cow, in
// Config.Dir beside the overlays, so the relative base paths in their
// headers stay valid.
const layerPrefix = "layer-"

// CloneDisk makes dstID's disk a copy of srcID's, as cheaply as the
// filesystem allows:
//   - a raw disk is reflinked (FICLONE, O(1)); without reflink support its
//     data extents are copied;
//   - an overlay whose VM has no monitor (!live: a golden, a stopped VM) is
//     frozen into a shared layer under two new, empty overlays — the
//     source's (same path) and the copy's — O(1); an overlay that holds
//     nothing yet (the source was forked this way before and has not run
//     since) is not frozen again: the copy shares its base, so repeated
//     forks of a golden do not deepen the chain;
//   - a live overlay (its monitor has it open and locked, so it cannot be
//     frozen without the monitor's help) is copied: its written clusters
//     only (SEEK_DATA), O(data the guest wrote); its bitmap on file must be
//     current, which the monitor's pause ensures by flushing the disk.
func (m *Manager) CloneDisk(ctx context.Context, srcID, dstID string, live bool) (daemon.DiskClone, error) {
	if err := checkVMID(srcID); err != nil {
		return daemon.DiskClone{}, err
	}
	if err := checkVMID(dstID); err != nil {
		return daemon.DiskClone{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range []string{m.rawPath(dstID), m.cowPath(dstID)} {
		if _, err := os.Lstat(p); err == nil {
			return daemon.DiskClone{}, fmt.Errorf("storage: disk of %s: %s: %w", dstID, p, fs.ErrExist)
		}
	}
	if _, err := os.Stat(m.rawPath(srcID)); err == nil {
		err := cloneFile(m.rawPath(srcID), m.rawPath(dstID))
		if err == nil {
			return daemon.DiskClone{Path: m.rawPath(dstID), Method: MethodReflink}, nil
		}
		if !errors.Is(err, errNoReflink) {
			return daemon.DiskClone{}, err
		}
		n, err := copySparse(ctx, m.rawPath(srcID), m.rawPath(dstID))
		return daemon.DiskClone{Path: m.rawPath(dstID), Method: MethodCopy, CopiedBytes: n}, err
	}
	src := m.cowPath(srcID)
	if _, err := os.Stat(src); err != nil {
		return daemon.DiskClone{}, fmt.Errorf("storage: disk of %s: %w", srcID, err)
	}
	dst := m.cowPath(dstID)
	if live {
		n, err := copySparse(ctx, src, dst)
		return daemon.DiskClone{Path: blk.CowPrefix + dst, Method: MethodCopy, CopiedBytes: n}, err
	}
	return daemon.DiskClone{Path: blk.CowPrefix + dst, Method: MethodCOWLayer}, m.layer(srcID, dstID)
}

// layer freezes srcID's overlay into a shared layer with a new, empty
// overlay for srcID on top, unless it is empty already, and puts dstID's
// new overlay on the same base. The caller holds m.mu.
func (m *Manager) layer(srcID, dstID string) error {
	src, dst := m.cowPath(srcID), m.cowPath(dstID)
	info, err := readCOWInfo(src, true)
	if err != nil {
		return err
	}
	if info.empty {
		// Nothing of its own: the copy is the same overlay on the same base.
		if err := blk.CreateCOW(dst, info.base, info.size, info.clusterSize); err != nil {
			return fmt.Errorf("storage: %w", err)
		}
		return syncDir(m.cfg.Dir)
	}
	name := fmt.Sprintf("%s%s-%x.cow", layerPrefix, srcID, time.Now().UnixNano())
	layer := filepath.Join(m.cfg.Dir, name)
	if err := unix.Renameat2(unix.AT_FDCWD, src, unix.AT_FDCWD, layer, unix.RENAME_NOREPLACE); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	if err := blk.FreezeCOW(layer); err != nil {
		if rerr := os.Rename(layer, src); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return fmt.Errorf("storage: freeze the disk of %s: %w", srcID, err)
	}
	// The layer's relative base still resolves: it stayed in the same
	// folder. Its frozen header is final, so the new overlays record its
	// size and mtime as they will stay.
	if err := blk.CreateCOW(src, name, info.size, info.clusterSize); err != nil {
		return fmt.Errorf("storage: the disk of %s is frozen in %s but its new overlay failed (create %s over it by hand): %w", srcID, name, src, err)
	}
	if err := blk.CreateCOW(dst, name, info.size, info.clusterSize); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	return syncDir(m.cfg.Dir)
}

// gcLayers deletes the shared layers no overlay builds on any more, down
// every chain. The caller holds m.mu.
func (m *Manager) gcLayers() error {
	ents, err := os.ReadDir(m.cfg.Dir)
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	used := map[string]bool{}
	var layers, tops []string
	for _, e := range ents {
		n := e.Name()
		switch {
		case filepath.Ext(n) != ".cow" || strings.HasPrefix(n, "."):
		case strings.HasPrefix(n, layerPrefix):
			layers = append(layers, n)
		default:
			tops = append(tops, n)
		}
	}
	for len(tops) > 0 {
		n := tops[0]
		tops = tops[1:]
		info, err := readCOWInfo(filepath.Join(m.cfg.Dir, n), false)
		if err != nil {
			// Unreadable: keep every layer rather than guess.
			return err
		}
		if b := info.base; strings.HasPrefix(b, layerPrefix) && !used[b] {
			used[b] = true
			tops = append(tops, b)
		}
	}
	var errs []error
	for _, l := range layers {
		if !used[l] {
			if err := os.Remove(filepath.Join(m.cfg.Dir, l)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("storage: %w", err))
			}
		}
	}
	return errors.Join(errs...)
}

// cowInfo is what CloneDisk needs from an overlay's header (see
// docs/disk-format.md; blk validates the whole header on open).
type cowInfo struct {
	size        int64
	clusterSize int
	base        string
	empty       bool // every cluster is still BASE (read only with validate)
}

// readCOWInfo reads an overlay's header (and, with validate, has blk check
// all of it first: an overlay a monitor holds open cannot be opened so).
func readCOWInfo(path string, validate bool) (cowInfo, error) {
	if validate {
		c, err := blk.OpenCOW(path, true)
		if err != nil {
			return cowInfo{}, fmt.Errorf("storage: %w", err)
		}
		c.Close()
	}
	f, err := os.Open(path)
	if err != nil {
		return cowInfo{}, fmt.Errorf("storage: %w", err)
	}
	defer f.Close()
	h := make([]byte, 4096)
	if _, err := io.ReadFull(f, h); err != nil {
		return cowInfo{}, fmt.Errorf("storage: overlay header of %s: %w", path, err)
	}
	le := binary.LittleEndian
	info := cowInfo{size: int64(le.Uint64(h[24:])), clusterSize: 1 << le.Uint32(h[16:])}
	n := int(le.Uint16(h[72:]))
	if n < 1 || 74+n > 4092 {
		return cowInfo{}, fmt.Errorf("storage: overlay %s: base path length %d", path, n)
	}
	info.base = string(h[74 : 74+n])
	bmOff, bmLen := int64(le.Uint64(h[48:])), int64(le.Uint64(h[56:]))
	info.empty = validate
	buf := make([]byte, 64<<10)
	for off := int64(0); off < bmLen && info.empty; off += int64(len(buf)) {
		k, err := f.ReadAt(buf[:min(int64(len(buf)), bmLen-off)], bmOff+off)
		if err != nil && !errors.Is(err, io.EOF) {
			return cowInfo{}, fmt.Errorf("storage: overlay bitmap of %s: %w", path, err)
		}
		for _, b := range buf[:k] {
			if b != 0 {
				info.empty = false
				break
			}
		}
	}
	return info, nil
}

// copySparse copies src to a new file dst, only src's data extents (holes
// stay holes), and returns how many bytes it copied. dst appears complete
// or not at all.
func copySparse(ctx context.Context, src, dst string) (int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, fmt.Errorf("storage: %w", err)
	}
	defer in.Close()
	size, err := in.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, fmt.Errorf("storage: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".*")
	if err != nil {
		return 0, fmt.Errorf("storage: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if err := tmp.Truncate(size); err != nil {
		return 0, fmt.Errorf("storage: %w", err)
	}
	var copied int64
	for off := int64(0); off < size; {
		if err := ctx.Err(); err != nil {
			return copied, err
		}
		data, err := unix.Seek(int(in.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			return copied, fmt.Errorf("storage: SEEK_DATA in %s: %w", src, err)
		}
		hole, err := unix.Seek(int(in.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return copied, fmt.Errorf("storage: SEEK_HOLE in %s: %w", src, err)
		}
		if err := copyRange(in, tmp, data, hole-data); err != nil {
			return copied, fmt.Errorf("storage: copy %s: %w", src, err)
		}
		copied += hole - data
		off = hole
	}
	if err := tmp.Chmod(0o600); err != nil {
		return copied, fmt.Errorf("storage: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return copied, fmt.Errorf("storage: sync %s: %w", dst, err)
	}
	if err := unix.Renameat2(unix.AT_FDCWD, tmp.Name(), unix.AT_FDCWD, dst, unix.RENAME_NOREPLACE); err != nil {
		return copied, fmt.Errorf("storage: %w", err)
	}
	return copied, syncDir(filepath.Dir(dst))
}
