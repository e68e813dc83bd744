package nested

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// fakeVmlinux is a minimal x86-64 ELF whose one PT_NOTE segment holds a
// single note of owner "Xen" and type noteType.
func fakeVmlinux(noteType uint32) []byte {
	le := binary.LittleEndian
	b := make([]byte, 64+56)
	copy(b, "\x7fELF\x02\x01\x01")
	le.PutUint16(b[16:], 2)  // ET_EXEC
	le.PutUint16(b[18:], 62) // EM_X86_64
	le.PutUint32(b[20:], 1)
	le.PutUint64(b[32:], 64) // e_phoff
	le.PutUint16(b[52:], 64) // e_ehsize
	le.PutUint16(b[54:], 56) // e_phentsize
	le.PutUint16(b[56:], 1)  // e_phnum
	le.PutUint16(b[58:], 64) // e_shentsize
	note := make([]byte, 12, 20)
	le.PutUint32(note[0:], 4)
	le.PutUint32(note[4:], 4)
	le.PutUint32(note[8:], noteType)
	note = append(note, "Xen\x00\x00\x00\x00\x01"...)
	ph := b[64:]
	le.PutUint32(ph[0:], 4) // PT_NOTE
	le.PutUint32(ph[4:], 4)
	le.PutUint64(ph[8:], uint64(len(b))) // p_offset
	le.PutUint64(ph[32:], uint64(len(note)))
	le.PutUint64(ph[40:], uint64(len(note)))
	le.PutUint64(ph[48:], 4)
	return append(b, note...)
}

// fakeBzImage wraps a compressed payload the way the kernel's build does:
// setup sectors, a setup header pointing at the payload, and the
// uncompressed size appended to the stream.
func fakeBzImage(compressed []byte, size int) []byte {
	le := binary.LittleEndian
	img := make([]byte, 1024+16)
	img[hdrSetupSects] = 1 // protected-mode code starts at (1+1)*512
	copy(img[hdrMagic:], "HdrS")
	le.PutUint16(img[hdrVersion:], 0x20f)
	payload := le.AppendUint32(append([]byte(nil), compressed...), uint32(size))
	le.PutUint32(img[hdrPayloadOffset:], 16)
	le.PutUint32(img[hdrPayloadLength:], uint32(len(payload)))
	return append(img, payload...)
}

func gzipped(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zstded(t *testing.T, b []byte) []byte {
	w, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	return w.EncodeAll(b, nil)
}

// xzBCJ returns testdata/fake-vmlinux.xz: fakeVmlinux(18) compressed as the
// kernel's build does (x86 BCJ filter, then LZMA2). -update regenerates it
// with xz(1).
func xzBCJ(t *testing.T) []byte {
	const fixture = "testdata/fake-vmlinux.xz"
	if *update {
		cmd := exec.Command("xz", "--format=xz", "--check=crc32", "--x86", "--lzma2=dict=1MiB", "-c")
		cmd.Stdin = bytes.NewReader(fakeVmlinux(xenElfnotePhys32Entry))
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("xz: %v", err)
		}
		if err := os.WriteFile(fixture, out, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(fixture)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestVmlinuxFromBzImage(t *testing.T) {
	pvh := fakeVmlinux(xenElfnotePhys32Entry)
	noPVH := fakeVmlinux(5)
	tests := []struct {
		name   string
		img    []byte
		errHas string
	}{
		{"gzip", fakeBzImage(gzipped(t, pvh), len(pvh)), ""},
		{"zstd", fakeBzImage(zstded(t, pvh), len(pvh)), ""},
		{"xz with BCJ", fakeBzImage(xzBCJ(t), len(pvh)), ""},
		{"no PVH note", fakeBzImage(gzipped(t, noPVH), len(noPVH)), "no PVH entry note"},
		{"lz4", fakeBzImage([]byte{0x02, 0x21, 0x4c, 0x18, 1, 2, 3, 4}, 8), "not gzip, xz or zstd"},
		{"not a bzImage", pvh, "not a bzImage"},
		{"truncated", fakeBzImage(gzipped(t, pvh), len(pvh))[:1100], "outside"},
		{"not an ELF", fakeBzImage(gzipped(t, []byte("plain text")), 10), "kernel payload"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := vmlinuxFromBzImage(tc.img)
			if tc.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("err = %v; want one containing %q", err, tc.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, pvh) {
				t.Errorf("extracted %d bytes that differ from the %d-byte ELF", len(got), len(pvh))
			}
		})
	}
}

func TestL1KernelCache(t *testing.T) {
	dir, cache := t.TempDir(), t.TempDir()
	pvh := fakeVmlinux(xenElfnotePhys32Entry)
	good := Kernel{Version: "6.1.0-1-amd64", Image: filepath.Join(dir, "vmlinuz-good")}
	bad := Kernel{Version: "6.1.0-2-amd64", Image: filepath.Join(dir, "vmlinuz-bad")}
	if err := os.WriteFile(good.Image, fakeBzImage(gzipped(t, pvh), len(pvh)), 0o644); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, bad.Image, "not a kernel")
	var log syncBuffer

	p := l1Kernel(&log, cache, good)
	if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, pvh) {
		t.Fatalf("l1Kernel = %s (%v); want the cached vmlinux", p, err)
	}
	if again := l1Kernel(&log, cache, good); again != p {
		t.Errorf("second l1Kernel = %s; want %s", again, p)
	}
	if got := l1Kernel(&log, cache, bad); got != bad.Image {
		t.Errorf("l1Kernel(unusable image) = %s; want the image itself", got)
	}
	if !strings.Contains(log.String(), "booting the compressed kernel") {
		t.Errorf("log does not explain the fallback:\n%s", log.String())
	}
	nones, _ := filepath.Glob(filepath.Join(cache, "nested", "vmlinux-6.1.0-2-amd64-*.none"))
	if len(nones) != 1 {
		t.Errorf("the failed extraction was not remembered: %v", nones)
	}
	before := log.String()
	l1Kernel(&log, cache, bad)
	if log.String() != before {
		t.Errorf("a remembered failure was retried: %s", strings.TrimPrefix(log.String(), before))
	}
}

// TestVmlinuxHost extracts the installed kernel (about a second of XZ).
func TestVmlinuxHost(t *testing.T) {
	if testing.Short() {
		t.Skip("decompresses the installed kernel; skipped with -short")
	}
	k, err := FindKernel("/boot", "/lib/modules")
	if err != nil {
		t.Skipf("no installed kernel here: %v", err)
	}
	img, err := os.ReadFile(k.Image)
	if err != nil {
		t.Skip(err)
	}
	if _, err := vmlinuxFromBzImage(img); err != nil {
		t.Errorf("%s: %v", k.Image, err)
	}
}

func TestHasNote(t *testing.T) {
	note := fakeVmlinux(18)[120:]
	if !hasNote(note, "Xen", 18) || hasNote(note, "Xen", 17) || hasNote(note, "Linux", 18) {
		t.Error("hasNote misreads a single note")
	}
	two := append(fakeVmlinux(3)[120:], note...)
	if !hasNote(two, "Xen", 18) {
		t.Error("hasNote misses the second note")
	}
	if hasNote(note[:len(note)-1], "Xen", 18) {
		t.Error("hasNote accepts a truncated note")
	}
}

func FuzzHasNote(f *testing.F) {
	f.Add(fakeVmlinux(18)[120:])
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 18, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) { hasNote(b, "Xen", 18) })
}

func FuzzVmlinuxFromBzImage(f *testing.F) {
	pvh := fakeVmlinux(xenElfnotePhys32Entry)
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write(pvh)
	w.Close()
	f.Add(fakeBzImage(gz.Bytes(), len(pvh)))
	if xzed, err := os.ReadFile("testdata/fake-vmlinux.xz"); err == nil {
		f.Add(fakeBzImage(xzed, len(pvh)))
	}
	f.Fuzz(func(t *testing.T, img []byte) { vmlinuxFromBzImage(img) })
}
