package nested

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// EnvCache overrides where boxd keeps build products such as L1's initramfs.
const EnvCache = "BOXD_CACHE"

// initramfsFormat names the archive layout and the init protocol. Bump it
// whenever write or the host side of the protocol changes in a way the
// hashed inputs do not show, so stale cached archives are not booted.
const initramfsFormat = "boxd-nested-initramfs/1"

// CacheDir returns boxd's cache directory: $BOXD_CACHE, else
// $XDG_CACHE_HOME/boxd, else ~/.cache/boxd. It does not create it.
func CacheDir() (string, error) {
	if d := os.Getenv(EnvCache); d != "" {
		return filepath.Abs(d)
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "boxd"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("cache directory: %w (set %s)", err, EnvCache)
	}
	return filepath.Join(home, ".cache", "boxd"), nil
}

// key hashes every input of the archive: the format, the kernel version the
// modules belong to, the init script, and the bytes of busybox and of each
// module in order. Hashing contents (a few MB, milliseconds) rather than
// sizes and mtimes means a reinstalled package with new contents but an old
// mtime still invalidates the cache.
func (ir initramfs) key(kernelVersion string) (string, error) {
	h := sha256.New()
	field := func(s string) { fmt.Fprintf(h, "%d:%s\n", len(s), s) }
	file := func(path string) error {
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("initramfs input: %w", err)
		}
		defer f.Close()
		n, err := io.Copy(h, f)
		if err != nil {
			return fmt.Errorf("initramfs input %s: %w", path, err)
		}
		fmt.Fprintf(h, "\n%d\n", n)
		return nil
	}
	field(initramfsFormat)
	field(kernelVersion)
	field(string(ir.init))
	if err := file(ir.busybox); err != nil {
		return "", err
	}
	for _, m := range ir.modules {
		field(m.Name)
		field(filepath.Base(m.Path)) // the suffix says how it is compressed
		if err := file(m.Path); err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// ensureInitramfs returns the path of the cached archive for ir, building it
// first if it is not there. built reports whether it was built now.
func ensureInitramfs(cacheDir, kernelVersion string, ir initramfs) (path string, built bool, err error) {
	key, err := ir.key(kernelVersion)
	if err != nil {
		return "", false, err
	}
	dir := filepath.Join(cacheDir, "nested")
	path = filepath.Join(dir, fmt.Sprintf("initramfs-%s-%s.cpio", kernelVersion, key[:20]))
	if st, err := os.Stat(path); err == nil && st.Mode().IsRegular() {
		return path, false, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", false, fmt.Errorf("initramfs cache: %w", err)
	}
	if err := writeFileAtomic(path, ir.write); err != nil {
		return "", false, err
	}
	return path, true, nil
}

// writeFileAtomic writes path through fill into a temporary file in the same
// directory and renames it into place, so readers see the old file or the
// complete new one, never a partial write.
func writeFileAtomic(path string, fill func(io.Writer) error) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := fill(tmp); err != nil {
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
