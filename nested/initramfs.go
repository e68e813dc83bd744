package nested

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/therootcompany/xz"
	"github.com/u-root/u-root/pkg/cpio"
)

// initModules are the modules L1 loads from its initramfs, before the host's
// root (and with it every other module) is reachable: the virtio transport
// and 9p that carry the host's root, the run directory and the command's
// output, overlay for the writable directories, an entropy source, and
// kvm-amd for /dev/kvm.
// Resolve adds their dependencies (kvm, ccp, irqbypass, netfs...) and skips
// any the kernel has built in.
var initModules = []string{
	"virtio_pci", "virtio_rng",
	"9pnet_virtio", "9p", "overlay", "kvm_amd",
}

// initramfs is everything that goes into L1's initramfs.
type initramfs struct {
	busybox string   // static busybox binary on the host
	init    []byte   // the /init script
	modules []Module // in load order
}

// write emits the initramfs as an uncompressed newc cpio archive. It stays
// uncompressed on purpose: under TCG the L1 kernel would spend far longer
// inflating it than QEMU spends copying the extra bytes into guest memory.
func (ir initramfs) write(w io.Writer) error {
	bw := bufio.NewWriter(w)
	cw := cpio.Newc.Writer(bw)
	var ino uint64
	add := func(r cpio.Record) error {
		ino++
		r.Ino, r.NLink = ino, 1
		if r.Mode&cpio.S_IFMT == cpio.S_IFDIR {
			r.NLink = 2
		}
		if err := cw.WriteRecord(r); err != nil {
			return fmt.Errorf("initramfs %s: %w", r.Name, err)
		}
		return nil
	}
	for _, d := range []string{"bin", "boxd", "dev", "host", "modules", "proc", "rw", "sys", "tmp"} {
		if err := add(cpio.Directory(d, 0o755)); err != nil {
			return err
		}
	}
	// The kernel opens /dev/console for init's stdio before init can mount
	// devtmpfs, so the node must be in the archive.
	if err := add(cpio.CharDev("dev/console", 0o600, 5, 1)); err != nil {
		return err
	}
	if err := add(cpio.StaticFile("init", string(ir.init), 0o755)); err != nil {
		return err
	}
	bb, err := os.ReadFile(ir.busybox)
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	if err := add(cpio.StaticRecord(bb, cpio.Info{Name: "bin/busybox", Mode: cpio.S_IFREG | 0o755})); err != nil {
		return err
	}
	for i, m := range ir.modules {
		ko, err := readModule(m.Path)
		if err != nil {
			return fmt.Errorf("initramfs: %w", err)
		}
		// The numeric prefix is the load order: init loads modules/*.ko,
		// which the shell's glob sorts.
		name := fmt.Sprintf("modules/%02d-%s.ko", i, m.Name)
		if err := add(cpio.StaticRecord(ko, cpio.Info{Name: name, Mode: cpio.S_IFREG | 0o644})); err != nil {
			return err
		}
	}
	if err := cpio.WriteTrailer(cw); err != nil {
		return fmt.Errorf("initramfs trailer: %w", err)
	}
	return bw.Flush()
}

// readModule returns a module's ELF object, decompressed if the distribution
// ships it compressed: busybox's insmod takes only plain ELF.
func readModule(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r io.Reader
	switch {
	case strings.HasSuffix(path, ".ko"):
		return raw, nil
	case strings.HasSuffix(path, ".ko.gz"):
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		r = zr
	case strings.HasSuffix(path, ".ko.xz"):
		zr, err := xz.NewReader(bytes.NewReader(raw), 0)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		r = zr
	case strings.HasSuffix(path, ".ko.zst"):
		zr, err := zstd.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		defer zr.Close()
		r = zr
	default:
		return nil, fmt.Errorf("%s: not a kernel module file", path)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("decompress %s: %w", path, err)
	}
	return out, nil
}

// isStaticELF reports whether path is an x86-64 ELF executable without a
// program interpreter (that is, statically linked).
func isStaticELF(path string) (bool, error) {
	f, err := elf.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 {
		return false, fmt.Errorf("not an x86-64 binary (%v)", f.Machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false, nil
		}
	}
	return true, nil
}
