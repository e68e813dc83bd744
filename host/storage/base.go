package storage

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// basesDir, under Config.Dir, holds one immutable base per image version
// and disk size: the image copied (reflinked where possible), grown to the
// size, its ext4 filesystem grown with it.
const basesDir = "bases"

// base returns the base for disks of size bytes, building it the first
// time: copy the image, extend it, resize2fs. Building once per size makes
// every later disk of that size O(1) whatever the mode, needs nothing of
// the guest, and lets the image be replaced without touching the disks
// already made from it.
//
// The caller holds m.mu.
func (m *Manager) base(ctx context.Context, size int64) (string, error) {
	img, err := os.Stat(m.cfg.Image)
	if err != nil {
		return "", fmt.Errorf("storage: base image: %w", err)
	}
	if size < img.Size() {
		return "", fmt.Errorf("storage: disk size %d is smaller than the base image (%d bytes)", size, img.Size())
	}
	abs, err := filepath.Abs(m.cfg.Image)
	if err != nil {
		return "", fmt.Errorf("storage: %w", err)
	}
	// The key names the image version: its path, size and mtime.
	sum := sha256.Sum256([]byte(abs + "\x00" + strconv.FormatInt(img.Size(), 10) + "\x00" + strconv.FormatInt(img.ModTime().UnixNano(), 10)))
	path := filepath.Join(m.cfg.Dir, basesDir, fmt.Sprintf("%s-%d.img", hex.EncodeToString(sum[:6]), size))
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return "", fmt.Errorf("storage: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if err := copyImage(ctx, m.cfg.Image, tmp); err != nil {
		return "", err
	}
	if err := tmp.Truncate(size); err != nil {
		return "", fmt.Errorf("storage: %w", err)
	}
	if size > img.Size() {
		ext, err := isExt(tmp)
		if err != nil {
			return "", err
		}
		if ext {
			if err := growExt(ctx, tmp.Name()); err != nil {
				return "", err
			}
		}
	}
	if err := tmp.Chmod(0o444); err != nil {
		return "", fmt.Errorf("storage: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return "", fmt.Errorf("storage: sync base: %w", err)
	}
	if err := unix.Renameat2(unix.AT_FDCWD, tmp.Name(), unix.AT_FDCWD, path, unix.RENAME_NOREPLACE); err != nil {
		return "", fmt.Errorf("storage: %w", err)
	}
	return path, syncDir(filepath.Dir(path))
}

// copyImage copies the image into dst: a reflink if the filesystems
// allow, else only its data extents, so holes stay holes.
func copyImage(ctx context.Context, image string, dst *os.File) error {
	src, err := os.Open(image)
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	defer src.Close()
	if unix.IoctlFileClone(int(dst.Fd()), int(src.Fd())) == nil {
		return nil
	}
	size, err := src.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	if err := dst.Truncate(size); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	for off := int64(0); off < size; {
		if err := ctx.Err(); err != nil {
			return err
		}
		data, err := unix.Seek(int(src.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if err != nil {
			return fmt.Errorf("storage: SEEK_DATA in %s: %w", image, err)
		}
		hole, err := unix.Seek(int(src.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("storage: SEEK_HOLE in %s: %w", image, err)
		}
		if err := copyRange(src, dst, data, hole-data); err != nil {
			return fmt.Errorf("storage: copy %s: %w", image, err)
		}
		off = hole
	}
	return nil
}

// copyRange copies [off, off+n) between the files at the same offset, in
// the kernel if it can.
func copyRange(src, dst *os.File, off, n int64) error {
	for n > 0 {
		in, out := off, off
		k, err := unix.CopyFileRange(int(src.Fd()), &in, int(dst.Fd()), &out, int(min(n, 1<<30)), 0)
		if err != nil || k == 0 {
			break
		}
		off += int64(k)
		n -= int64(k)
	}
	buf := make([]byte, 1<<20)
	for n > 0 {
		k, err := src.ReadAt(buf[:min(n, int64(len(buf)))], off)
		if k > 0 {
			if _, err := dst.WriteAt(buf[:k], off); err != nil {
				return err
			}
		}
		if err != nil && (k == 0 || !errors.Is(err, io.EOF)) {
			return err
		}
		off += int64(k)
		n -= int64(k)
	}
	return nil
}

// isExt reports whether f holds an ext2/3/4 filesystem: the superblock
// at 1024 has the magic 0xEF53 at offset 56.
func isExt(f *os.File) (bool, error) {
	var b [2]byte
	if _, err := f.ReadAt(b[:], 1024+56); err != nil {
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		return false, fmt.Errorf("storage: read superblock: %w", err)
	}
	return binary.LittleEndian.Uint16(b[:]) == 0xEF53, nil
}

// growExt grows the ext filesystem in the file at path to the file's
// size. Offline and before first boot, so the guest needs no resize logic
// and every disk made from the base starts full size.
func growExt(ctx context.Context, path string) error {
	bin, err := exec.LookPath("resize2fs")
	if err != nil {
		return fmt.Errorf("storage: growing the image's ext4 filesystem needs resize2fs (Debian package e2fsprogs): %w", err)
	}
	// -f: the image is not mounted and was not just checked by e2fsck;
	// resize2fs refuses otherwise.
	out, err := exec.CommandContext(ctx, bin, "-f", path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("storage: resize2fs %s: %w: %s", path, err, out)
	}
	return nil
}
