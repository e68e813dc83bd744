package storage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/boxd-dev/boxd/host/daemon"
	"github.com/boxd-dev/boxd/virtio/blk"
	"golang.org/x/sys/unix"
)

// DefaultSize is a disk's size when CreateDisk is asked for 0 bytes.
const DefaultSize = 100 << 30

// Mode is how a VM's disk shares the base's blocks.
type Mode string

// Modes. Auto picks Reflink when the state directory's filesystem can
// clone extents, COW otherwise.
const (
	Auto    Mode = ""
	Reflink Mode = "reflink" // a raw file sharing extents (FICLONE)
	COW     Mode = "cow"     // a virtio/blk copy-on-write overlay
)

// Config says where disks live and what they start from.
type Config struct {
	// Dir holds the disks and their bases (normally STATE/disks). Required.
	Dir string
	// Image is the root filesystem image every disk starts from: a raw
	// image, normally ext4. Required. It may be replaced at any time: each
	// disk depends only on the copy of it under Dir/bases.
	Image string
	// Mode forces a mode; Auto (the default) probes.
	Mode Mode
	// ClusterSize is the COW overlays' cluster size (0: 64 KiB).
	ClusterSize int
}

// Manager creates and deletes the VMs' root disks. It implements
// daemon.Storage. Its methods are safe for concurrent use.
type Manager struct {
	cfg Config

	mu sync.Mutex // serialises creation: bases are built once
}

var _ daemon.Storage = (*Manager)(nil)

// New returns a Manager for cfg, creating its directories.
func New(cfg Config) (*Manager, error) {
	if cfg.Dir == "" || cfg.Image == "" {
		return nil, errors.New("storage: Dir and Image are required")
	}
	switch cfg.Mode {
	case Auto, Reflink, COW:
	default:
		return nil, fmt.Errorf("storage: unknown mode %q", cfg.Mode)
	}
	if _, err := os.Stat(cfg.Image); err != nil {
		return nil, fmt.Errorf("storage: base image: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(cfg.Dir, basesDir), 0o700); err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	return &Manager{cfg: cfg}, nil
}

// checkVMID accepts the daemon's VM IDs: 12 lowercase hex digits. They
// become file names, so nothing else may pass.
func checkVMID(id string) error {
	if len(id) != 12 {
		return fmt.Errorf("storage: VM ID %q: want 12 lowercase hex digits", id)
	}
	for _, c := range id {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return fmt.Errorf("storage: VM ID %q: want 12 lowercase hex digits", id)
		}
	}
	return nil
}

func (m *Manager) rawPath(vmID string) string { return filepath.Join(m.cfg.Dir, vmID+".img") }
func (m *Manager) cowPath(vmID string) string { return filepath.Join(m.cfg.Dir, vmID+".cow") }

// CreateDisk creates vmID's disk, sizeBytes long (0: DefaultSize; rounded
// up to a whole MiB), and returns its spec for blk.OpenDisk and boxd vmm
// --disk: a plain path for a reflinked raw file, "cow:PATH" for an
// overlay. The base's ext4 filesystem is grown to fill the disk. A disk
// that exists already is an error wrapping fs.ErrExist.
func (m *Manager) CreateDisk(ctx context.Context, vmID string, sizeBytes int64) (string, error) {
	if err := checkVMID(vmID); err != nil {
		return "", err
	}
	if sizeBytes < 0 {
		return "", fmt.Errorf("storage: disk size %d", sizeBytes)
	}
	if sizeBytes == 0 {
		sizeBytes = DefaultSize
	}
	size := (sizeBytes + 1<<20 - 1) &^ (1<<20 - 1)
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range []string{m.rawPath(vmID), m.cowPath(vmID)} {
		if _, err := os.Lstat(p); err == nil {
			return "", fmt.Errorf("storage: disk of %s: %s: %w", vmID, p, fs.ErrExist)
		}
	}
	base, err := m.base(ctx, size)
	if err != nil {
		return "", err
	}
	if m.cfg.Mode != COW {
		err := cloneFile(base, m.rawPath(vmID))
		if err == nil {
			return m.rawPath(vmID), nil
		}
		if m.cfg.Mode == Reflink || !errors.Is(err, errNoReflink) {
			return "", err
		}
	}
	rel, err := filepath.Rel(m.cfg.Dir, base)
	if err != nil {
		return "", fmt.Errorf("storage: %w", err)
	}
	if err := blk.CreateCOW(m.cowPath(vmID), rel, size, m.cfg.ClusterSize); err != nil {
		return "", fmt.Errorf("storage: disk of %s: %w", vmID, err)
	}
	return blk.CowPrefix + m.cowPath(vmID), nil
}

// DeleteDisk deletes vmID's disk, whichever kind it is. A disk that does
// not exist is not an error. The base stays for the other disks on it.
func (m *Manager) DeleteDisk(ctx context.Context, vmID string) error {
	if err := checkVMID(vmID); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for _, p := range []string{m.rawPath(vmID), m.cowPath(vmID)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("storage: %w", err))
		}
	}
	errs = append(errs, m.gcLayers(), syncDir(m.cfg.Dir))
	return errors.Join(errs...)
}

// errNoReflink is wrapped by cloneFile's error when the filesystem cannot
// clone extents between the two files.
var errNoReflink = errors.New("filesystem cannot reflink")

// cloneFile makes dst a reflink copy of src: new, sharing every extent.
// dst appears complete or not at all.
func cloneFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".*")
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	err = unix.IoctlFileClone(int(tmp.Fd()), int(in.Fd()))
	switch {
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EXDEV), errors.Is(err, unix.EINVAL),
		errors.Is(err, unix.ENOTTY), errors.Is(err, unix.ENOSYS):
		return fmt.Errorf("storage: clone %s: %w: %w", src, errNoReflink, err)
	case err != nil:
		return fmt.Errorf("storage: clone %s: %w", src, err)
	}
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("storage: sync %s: %w", dst, err)
	}
	if err := unix.Renameat2(unix.AT_FDCWD, tmp.Name(), unix.AT_FDCWD, dst, unix.RENAME_NOREPLACE); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	return syncDir(filepath.Dir(dst))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("storage: sync %s: %w", dir, err)
	}
	return nil
}
