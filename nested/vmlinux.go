package nested

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/therootcompany/xz"
)

// Booting the bzImage makes L1's emulated CPU decompress the kernel (an XZ
// payload on Debian) before Linux starts: seconds of TCG time on every boot.
// QEMU can instead load the uncompressed ELF kernel directly through its PVH
// entry point, so the harness extracts it once and caches it.

// vmlinuxFormat names the extraction logic; bump it when that changes.
const vmlinuxFormat = "boxd-nested-vmlinux/1"

// maxVmlinux bounds the decompressed kernel (Debian's is ~66 MB).
const maxVmlinux = 512 << 20

// bzImage setup header offsets (Documentation/arch/x86/boot.rst).
const (
	hdrSetupSects    = 0x1f1
	hdrMagic         = 0x202 // "HdrS"
	hdrVersion       = 0x206
	hdrPayloadOffset = 0x248 // from protocol 2.08, relative to the protected-mode code
	hdrPayloadLength = 0x24c
	hdrEnd           = 0x250
)

// xenElfnotePhys32Entry is the ELF note (owner "Xen") holding a kernel's PVH
// entry point; QEMU boots an ELF kernel only through it.
const xenElfnotePhys32Entry = 18

// l1Kernel returns the kernel image to boot: a cached vmlinux extracted from
// k.Image when possible, else k.Image itself. Failing to extract is not an
// error, only slower, and is remembered so that it is tried once per image.
func l1Kernel(log io.Writer, cacheDir string, k Kernel) string {
	img, err := os.ReadFile(k.Image)
	if err != nil {
		return k.Image // QEMU will report it
	}
	sum := sha256.Sum256(append([]byte(vmlinuxFormat+"\n"), img...))
	base := filepath.Join(cacheDir, "nested", fmt.Sprintf("vmlinux-%s-%s", k.Version, hex.EncodeToString(sum[:10])))
	if st, err := os.Stat(base); err == nil && st.Mode().IsRegular() {
		return base
	}
	if _, err := os.Stat(base + ".none"); err == nil {
		return k.Image
	}
	t0 := time.Now()
	vmlinux, err := vmlinuxFromBzImage(img)
	if err == nil {
		fmt.Fprintf(log, "nested: extracted the uncompressed kernel from %s in %.2fs\n", k.Image, time.Since(t0).Seconds())
		if err = os.MkdirAll(filepath.Dir(base), 0o755); err == nil {
			err = writeFileAtomic(base, func(w io.Writer) error {
				_, err := w.Write(vmlinux)
				return err
			})
		}
		if err == nil {
			return base
		}
		fmt.Fprintf(log, "nested: cannot cache the uncompressed kernel: %v\n", err)
		return k.Image
	}
	fmt.Fprintf(log, "nested: booting the compressed kernel (slower): %v\n", err)
	os.MkdirAll(filepath.Dir(base), 0o755)
	writeFileAtomic(base+".none", func(w io.Writer) error {
		_, err := fmt.Fprintln(w, err)
		return err
	})
	return k.Image
}

// vmlinuxFromBzImage returns the ELF kernel compressed inside a bzImage. It
// fails unless the payload is gzip, xz or zstd and the ELF has a PVH entry.
func vmlinuxFromBzImage(img []byte) ([]byte, error) {
	if len(img) < hdrEnd || string(img[hdrMagic:hdrMagic+4]) != "HdrS" {
		return nil, errors.New("not a bzImage")
	}
	if v := binary.LittleEndian.Uint16(img[hdrVersion:]); v < 0x208 {
		return nil, fmt.Errorf("boot protocol %#x predates payload fields", v)
	}
	setup := int(img[hdrSetupSects])
	if setup == 0 {
		setup = 4
	}
	start := uint64(setup+1)*512 + uint64(binary.LittleEndian.Uint32(img[hdrPayloadOffset:]))
	end := start + uint64(binary.LittleEndian.Uint32(img[hdrPayloadLength:]))
	if end > uint64(len(img)) || end-start < 8 {
		return nil, fmt.Errorf("payload [%d, %d) outside the %d-byte image", start, end, len(img))
	}
	out, err := decompressKernel(img[start:end])
	if err != nil {
		return nil, err
	}
	if err := checkPVH(out); err != nil {
		return nil, err
	}
	return out, nil
}

// decompressKernel inflates a kernel payload. The build appends the
// uncompressed size as 4 bytes after the stream, so only the first stream is
// read and what follows it is ignored.
func decompressKernel(p []byte) ([]byte, error) {
	var r io.Reader
	switch {
	case bytes.HasPrefix(p, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(bytes.NewReader(p))
		if err != nil {
			return nil, fmt.Errorf("kernel payload: %w", err)
		}
		zr.Multistream(false)
		r = zr
	case bytes.HasPrefix(p, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		// The kernel's XZ uses the x86 BCJ filter, which this decoder has.
		zr, err := xz.NewReader(bytes.NewReader(p), 0)
		if err != nil {
			return nil, fmt.Errorf("kernel payload: %w", err)
		}
		zr.Multistream(false)
		r = zr
	case bytes.HasPrefix(p, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		// A zstd decoder reads frame after frame; drop the size trailer.
		zr, err := zstd.NewReader(bytes.NewReader(p[:len(p)-4]), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(maxVmlinux))
		if err != nil {
			return nil, fmt.Errorf("kernel payload: %w", err)
		}
		defer zr.Close()
		r = zr
	default:
		return nil, fmt.Errorf("kernel payload compression % x is not gzip, xz or zstd", p[:4])
	}
	out, err := io.ReadAll(io.LimitReader(r, maxVmlinux+1))
	if err != nil {
		return nil, fmt.Errorf("kernel payload: %w", err)
	}
	if len(out) > maxVmlinux {
		return nil, fmt.Errorf("kernel payload inflates past %d bytes", maxVmlinux)
	}
	return out, nil
}

// checkPVH verifies that b is an x86-64 ELF with a Xen PVH entry note.
func checkPVH(b []byte) error {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("kernel payload: %w", err)
	}
	if f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("kernel payload is for %v", f.Machine)
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		notes, err := io.ReadAll(io.LimitReader(p.Open(), 1<<20))
		if err != nil {
			return fmt.Errorf("kernel notes: %w", err)
		}
		if hasNote(notes, "Xen", xenElfnotePhys32Entry) {
			return nil
		}
	}
	return errors.New("kernel has no PVH entry note (CONFIG_PVH)")
}

// hasNote reports whether an ELF note segment holds a note of owner and typ.
// Each note is namesz, descsz, type (4 bytes each), then name and desc, each
// padded to 4 bytes.
func hasNote(b []byte, owner string, typ uint32) bool {
	pad := func(n uint64) uint64 { return (n + 3) &^ 3 }
	for len(b) >= 12 {
		namesz := uint64(binary.LittleEndian.Uint32(b[0:]))
		descsz := uint64(binary.LittleEndian.Uint32(b[4:]))
		t := binary.LittleEndian.Uint32(b[8:])
		size := 12 + pad(namesz) + pad(descsz)
		if size > uint64(len(b)) {
			return false
		}
		name := b[12 : 12+namesz]
		if t == typ && string(bytes.TrimRight(name, "\x00")) == owner {
			return true
		}
		b = b[size:]
	}
	return false
}
