package initramfs

import (
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/u-root/u-root/pkg/cpio"
)

// format names the archive layout; bump it when Write changes in a way the
// hashed inputs do not show, so stale cached archives are not booted.
const format = "boxd-guest-initramfs/2"

// Compression of the archive.
type Compression string

// The compressions the guest kernel can unpack (kernel/guest.config has
// RD_GZIP; none needs no decompressor).
const (
	None Compression = "none"
	Gzip Compression = "gzip"
)

// Ext returns the file-name suffix of an archive so compressed.
func (c Compression) Ext() string {
	if c == Gzip {
		return ".cpio.gz"
	}
	return ".cpio"
}

// Spec is everything that goes into the initramfs.
type Spec struct {
	Init    string // boxd's init binary, installed as /bin/init with /init linking to it
	Boxd    string // the in-guest boxd CLI, installed as /bin/boxd ("" for none)
	Busybox string // a static busybox, installed as /bin/busybox ("" for none)
	// Applets are linked to busybox in /bin (see Applets).
	Applets  []string
	Compress Compression
}

// skipApplets are busybox applets never linked: boxd's init is the init,
// and the archive's own names win.
var skipApplets = []string{"init", "linuxrc", "busybox", "boxd"}

// Applets returns the applets of a busybox binary, from "busybox --list".
// The binary runs on the host to answer: it is the same static x86-64
// executable the guest will run.
func Applets(busybox string) ([]string, error) {
	out, err := exec.Command(busybox, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("busybox --list: %w", err)
	}
	var apps []string
	for _, a := range strings.Fields(string(out)) {
		if !strings.Contains(a, "/") && !slices.Contains(skipApplets, a) {
			apps = append(apps, a)
		}
	}
	slices.Sort(apps)
	return slices.Compact(apps), nil
}

// CheckStatic fails unless path is an ELF executable without an
// interpreter: a dynamically linked binary cannot run from the initramfs.
func CheckStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked (build it with CGO_ENABLED=0)", path)
		}
	}
	return nil
}

// files returns the archive path and host path of each input file, in
// archive order.
func (s Spec) files() [][2]string {
	out := [][2]string{{"bin/init", s.Init}}
	if s.Boxd != "" {
		out = append(out, [2]string{"bin/boxd", s.Boxd})
	}
	if s.Busybox != "" {
		out = append(out, [2]string{"bin/busybox", s.Busybox})
	}
	return out
}

func (s Spec) check() error {
	if s.Init == "" {
		return errors.New("initramfs: no init binary")
	}
	if s.Compress != None && s.Compress != Gzip {
		return fmt.Errorf("initramfs: unknown compression %q", s.Compress)
	}
	if len(s.Applets) > 0 && s.Busybox == "" {
		return errors.New("initramfs: applets without busybox")
	}
	for _, a := range s.Applets {
		if a == "" || strings.ContainsAny(a, "/\x00") || a == "." || a == ".." || slices.Contains(skipApplets, a) {
			return fmt.Errorf("initramfs: bad applet name %q", a)
		}
	}
	return nil
}

// Key returns the hex sha256 of everything that shapes the archive.
func (s Spec) Key() (string, error) {
	if err := s.check(); err != nil {
		return "", err
	}
	h := sha256.New()
	field := func(v string) { fmt.Fprintf(h, "%d:%s\n", len(v), v) }
	field(format)
	field(string(s.Compress))
	field(strings.Join(s.Applets, " "))
	for _, f := range s.files() {
		field(f[0])
		in, err := os.Open(f[1])
		if err != nil {
			return "", fmt.Errorf("initramfs input: %w", err)
		}
		n, err := io.Copy(h, in)
		in.Close()
		if err != nil {
			return "", fmt.Errorf("initramfs input %s: %w", f[1], err)
		}
		fmt.Fprintf(h, "\n%d\n", n)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Files written into every archive besides the binaries: enough of /etc for
// a root shell and for user lookups by the agent.
const (
	etcPasswd = "root:x:0:0:root:/root:/bin/sh\n"
	etcGroup  = "root:x:0:\ntty:x:5:\n"
)

// Write writes the archive (compressed as s.Compress says) to w.
func (s Spec) Write(w io.Writer) error {
	if err := s.check(); err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	var out io.Writer = bw
	var zw *gzip.Writer
	if s.Compress == Gzip {
		zw = gzip.NewWriter(bw)
		out = zw
	}
	cw := cpio.Newc.Writer(out)
	var ino uint64
	add := func(r cpio.Record) error {
		ino++
		r.Ino = ino
		r.NLink = 1
		if r.Mode&cpio.S_IFMT == cpio.S_IFDIR {
			r.NLink = 2
		}
		if err := cw.WriteRecord(r); err != nil {
			return fmt.Errorf("initramfs %s: %w", r.Name, err)
		}
		return nil
	}
	recs := []cpio.Record{
		cpio.Directory("bin", 0o755), cpio.Directory("dev", 0o755), cpio.Directory("etc", 0o755),
		cpio.Directory("newroot", 0o755), cpio.Directory("proc", 0o555), cpio.Directory("root", 0o700),
		cpio.Directory("run", 0o755), cpio.Directory("sys", 0o555), cpio.Directory("tmp", 0o1777),
		// The kernel opens /dev/console for init's stdio before init mounts
		// devtmpfs, so the node must be in the archive.
		cpio.CharDev("dev/console", 0o600, 5, 1),
		cpio.StaticFile("etc/passwd", etcPasswd, 0o644),
		cpio.StaticFile("etc/group", etcGroup, 0o644),
	}
	for _, r := range recs {
		if err := add(r); err != nil {
			return err
		}
	}
	for _, f := range s.files() {
		if err := addFile(add, f[0], f[1]); err != nil {
			return err
		}
	}
	// init lives in /bin with the tools, so that switch root can show that
	// one directory in the new root (see guest-init/switchroot).
	if err := add(cpio.Symlink("init", "bin/init")); err != nil {
		return err
	}
	for _, a := range s.Applets {
		if err := add(cpio.Symlink("bin/"+a, "busybox")); err != nil {
			return err
		}
	}
	if err := cpio.WriteTrailer(cw); err != nil {
		return fmt.Errorf("initramfs trailer: %w", err)
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			return err
		}
	}
	return bw.Flush()
}

func addFile(add func(cpio.Record) error, name, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("initramfs input: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("initramfs input %s: not a regular file", path)
	}
	return add(cpio.Record{ReaderAt: f, Info: cpio.Info{
		Name: name, Mode: cpio.S_IFREG | 0o755, FileSize: uint64(fi.Size()),
	}})
}

// Ensure returns the cached archive for s under cacheDir/initramfs, writing
// it first if it is not there; built reports whether it was written now.
func Ensure(cacheDir string, s Spec) (path string, built bool, err error) {
	key, err := s.Key()
	if err != nil {
		return "", false, err
	}
	dir := filepath.Join(cacheDir, "initramfs")
	path = filepath.Join(dir, key+s.Compress.Ext())
	if _, err := os.Stat(path); err == nil {
		return path, false, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", false, err
	}
	tmp, err := os.CreateTemp(dir, ".build-*")
	if err != nil {
		return "", false, err
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	werr := s.Write(tmp)
	if err := errors.Join(werr, tmp.Chmod(0o644), tmp.Close()); err != nil {
		return "", false, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", false, err
	}
	return path, true, nil
}

// CacheDir returns boxd's cache directory: $BOXD_CACHE, else
// $XDG_CACHE_HOME/boxd, else ~/.cache/boxd (the same rule as kernel/build.sh).
func CacheDir() (string, error) {
	if d := os.Getenv("BOXD_CACHE"); d != "" {
		return filepath.Abs(d)
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "boxd"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("cache directory: %w (set BOXD_CACHE)", err)
	}
	return filepath.Join(home, ".cache", "boxd"), nil
}
